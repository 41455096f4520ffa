"""Benchmark: `POST /v1/sessions` alone, its web CPU against a bare endpoint's.

    python bench/creates.py --creates 1000 --rounds 4

Sets up as `bench/calls.py` does (a scratch PostgreSQL database, Redis DB 14, a project and a test
key through the `paydial` command line) and starts the Procfile's `web:` command twice: serving
Paydial, and serving `bench/bare_app.py`, whose `POST /v1/sessions` returns a constant 201. Each
round sends `--creates` creates, `--concurrency` at a time, to Paydial and then the same requests
to the bare endpoint, reading each one's gunicorn workers' CPU from /proc before and after.

`bench/calls.py` reports the create too, but its 200 creates take under a second, so there the
figure moves with whatever else the machine does; this one runs long enough to settle.
Not part of the test suite (pytest collects tests/ only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calls import Bench, children, cpu_ms, cpu_ticks, free_port, http, log


def drive(bench: Bench, base: str, key: str, count: int, concurrency: int) -> None:
    """`count` creates against `base`, as `bench/calls.py` sends them."""

    def create(i: int) -> None:
        status, body = http(
            "POST",
            base + "/v1/sessions",
            {
                "project": "bench",
                "caller": f"+1415555{i % 10000:04d}",
                "amount": "150.00",
                "mode": "charge",
                "gateway": "stripe",
                "description": "Bench order",
                "callback": "sip:agent@agents.example.com",
                "memory": f"bench call {i}",
            },
            {"Authorization": f"Bearer {key}"},
        )
        if status != 201:
            raise RuntimeError(f"POST /v1/sessions answered {status}: {body}")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, range(count)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creates", type=int, default=1000, help="creates per round and side")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8, help="creates in flight at once")
    parser.add_argument(
        "--workers-web", type=int, default=4, help="gunicorn processes (WEB_CONCURRENCY)"
    )
    args = parser.parse_args()
    bench = Bench(argparse.Namespace(gateway_latency=0.0, workers_web=args.workers_web))
    try:
        log(f"logs in {bench.logdir}; database {bench.db}")
        key = bench.setup()
        web = bench.gunicorn("web", "api:create_app()", bench.port)
        bare_port = free_port()
        bare = bench.gunicorn("bare", "bench.bare_app:app", bare_port)
        sides = {
            "paydial": (bench.base, children(web.pid)),
            "bare": (f"http://127.0.0.1:{bare_port}", children(bare.pid)),
        }
        figures: dict[str, list[float]] = {side: [] for side in sides}
        for base, _ in sides.values():  # warm up: every worker has served some
            drive(bench, base, key, 10 * args.workers_web, args.concurrency)
        for number in range(1, args.rounds + 1):
            for side, (base, pids) in sides.items():
                before = cpu_ticks(pids)
                drive(bench, base, key, args.creates, args.concurrency)
                figures[side].append(cpu_ms(before, cpu_ticks(pids)) / args.creates)
            log(
                f"round {number}: create {figures['paydial'][-1]:.2f} ms, "
                f"bare {figures['bare'][-1]:.2f} ms of web CPU per request"
            )
        create, plain = statistics.median(figures["paydial"]), statistics.median(figures["bare"])
        print(
            f"POST /v1/sessions, {args.creates} per round, {args.concurrency} at a time, "
            f"{args.rounds} rounds, {args.workers_web} web workers: web CPU per request, median "
            f"(each round): create {create:.2f} ms "
            f"({' '.join(f'{x:.2f}' for x in figures['paydial'])}), bare endpoint {plain:.2f} ms "
            f"({' '.join(f'{x:.2f}' for x in figures['bare'])}); create / bare {create / plain:.1f}"
        )
    finally:
        bench.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
