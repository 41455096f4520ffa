"""Benchmark: N simulated phone calls against the Procfile's processes on PostgreSQL and Redis.

    python bench/calls.py --calls 200 --gateway-latency 2 --workers-pay 2

What it does, all on 127.0.0.1:
1. creates a fresh PostgreSQL database (dropped at the end) and flushes Redis DB 14 (at the start
   and the end); applies the migrations and creates a project, a test key, Stripe credentials
   pointing at the gateway stand-in and a webhook URL pointing at a local receiver, through the
   `paydial` command line;
2. starts a Stripe stand-in (threaded; PaymentIntent creation takes `--gateway-latency` seconds),
   the webhook receiver, gunicorn (the Procfile's `web:` command serving `api:create_app()`) and
   `--workers-pay` `paydial worker` processes;
3. creates N sessions (`POST /v1/sessions`), then places N calls with `ivr.phone.Phone` (the
   terminal phone: real signed Twilio webhooks, following <Gather>, <Pause>/<Redirect> hold polls
   and <Dial>, then the status callback), `--think` seconds before each keyed entry;
4. replays exactly the same requests, with the same timing, against a bare Flask endpoint that
   returns a static <Gather> under the same gunicorn settings (`bench/bare_app.py`);
5. prints latency per webhook type, throughput, CPU per webhook read from /proc (web workers,
   paydial workers, every postgres process, and the backends that exited meanwhile), the
   PostgreSQL connections opened, hold times (split at the stand-in: confirm key to the charge
   asked of it, its answer to the result heard), charges/s, Redis bytes per active call and a
   correctness summary.

Not part of the test suite (pytest collects tests/ only).
"""

# ruff: noqa: S310, S603

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.phone import HttpReply, Phone, PhoneError, http_transport  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
REDIS_URL = "redis://127.0.0.1:6379/14"  # DB 14 only: flushed at the start and at the end
SIP_DOMAIN = "paydial.sip.twilio.com"
SLUG = "bench"
CARD, EXPIRY, CVC, ZIP = "4242424242424242", "1230", "123", "94107"
CALLBACK = "sip:agent@agents.example.com"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAYDIAL = [sys.executable, "-c", "import sys; from paydial.cli import main; sys.exit(main())"]

# What a caller hears that ends the hold, and what each means.
APPROVED = "Your payment was approved."
DECLINED = "Sorry, the payment did not go through."
UNRESOLVED = "The merchant will be told the result"
APOLOGY = "something went wrong on our side"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


# --- local HTTP servers: the Stripe stand-in and the webhook receiver ---------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm holds the body
    # back for the client's delayed ACK (40 ms a request), which real gateways do not add.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, payload: Any) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class Gateway:
    """Stripe's wire format, as much as `gateways/stripe.py` uses for a charge and a reconcile."""

    latency: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)  # idempotency key -> intent
    charged_at: list[float] = field(default_factory=list)
    # by paydial_session_id: when its PaymentIntent create arrived, and when it was answered
    asked_at: dict[str, float] = field(default_factory=dict)
    answered_at: dict[str, float] = field(default_factory=dict)
    replays: int = 0
    requests: int = 0
    busy: int = 0

    def handler(self) -> type[Handler]:
        gateway = self

        class StripeHandler(Handler):
            def do_POST(self) -> None:
                form = urllib.parse.parse_qs(self.body().decode())
                with gateway.lock:
                    gateway.requests += 1
                if self.path.startswith("/v1/payment_methods"):
                    self.reply(
                        200,
                        {
                            "id": "pm_" + secrets.token_hex(8),
                            "object": "payment_method",
                            "type": "card",
                        },
                    )
                elif self.path.startswith("/v1/payment_intents"):
                    self.reply(200, gateway.intent(self.headers.get("Idempotency-Key", ""), form))
                else:
                    self.reply(
                        404,
                        {
                            "error": {
                                "type": "invalid_request_error",
                                "message": "not in the bench stand-in",
                            }
                        },
                    )

            def do_GET(self) -> None:
                with gateway.lock:
                    gateway.requests += 1
                    data = list(gateway.intents.values())
                if self.path.startswith("/v1/payment_intents"):
                    self.reply(
                        200,
                        {
                            "object": "list",
                            "data": data[-100:],
                            "has_more": False,
                            "url": "/v1/payment_intents",
                        },
                    )
                elif self.path.startswith(("/v1/customers", "/v1/payment_methods")):
                    self.reply(
                        200,
                        {
                            "object": "list",
                            "data": [],
                            "has_more": False,
                            "url": self.path.split("?")[0],
                        },
                    )
                else:
                    self.reply(
                        404,
                        {
                            "error": {
                                "type": "invalid_request_error",
                                "message": "not in the bench stand-in",
                            }
                        },
                    )

        return StripeHandler

    def intent(self, key: str, form: dict[str, list[str]]) -> dict[str, Any]:
        session_id = form.get("metadata[paydial_session_id]", ["?"])[0]
        with self.lock:
            self.asked_at.setdefault(session_id, time.monotonic())
            if key and key in self.intents:  # Stripe replays the first answer for a key
                self.replays += 1
                return self.intents[key]
            self.busy += 1
        try:
            time.sleep(self.latency)
        finally:
            with self.lock:
                self.busy -= 1
        pi = "pi_" + secrets.token_hex(8)
        intent = {
            "id": pi,
            "object": "payment_intent",
            "status": "succeeded",
            "amount": int(form.get("amount", ["0"])[0]),
            "currency": "usd",
            "payment_method": form.get("payment_method", [""])[0],
            "metadata": {
                name[len("metadata[") : -1]: values[0]
                for name, values in form.items()
                if name.startswith("metadata[")
            },
            "latest_charge": {"id": "ch_" + pi[3:], "object": "charge", "receipt_url": None},
        }
        with self.lock:
            if key in self.intents:
                self.replays += 1
                return self.intents[key]
            self.intents[key or pi] = intent
            self.charged_at.append(time.monotonic())
            self.answered_at[session_id] = self.charged_at[-1]
        return intent

    def charges_by_session(self) -> Counter[str]:
        with self.lock:
            return Counter(
                i["metadata"].get("paydial_session_id", "?") for i in self.intents.values()
            )


@dataclass
class Receiver:
    """The merchant's webhook endpoint: counts deliveries per event id."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    deliveries: Counter[str] = field(default_factory=Counter)
    events: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (session, status)

    def handler(self) -> type[Handler]:
        receiver = self

        class HookHandler(Handler):
            def do_POST(self) -> None:
                body = json.loads(self.body() or b"{}")
                event = str(body.get("event_id"))
                with receiver.lock:
                    receiver.deliveries[event] += 1
                    receiver.events[event] = (str(body.get("session_id")), str(body.get("status")))
                self.reply(204, None)

        return HookHandler

    def total(self) -> int:
        with self.lock:
            return sum(self.deliveries.values())


def serve(handler: type[Handler]) -> Server:
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- processes and /proc -----------------------------------------------------------------------


class Processes:
    """Every process the bench starts; all stopped (process group, TERM then KILL) at exit."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{name}.log", "ab") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(comm, ppid, utime+stime ticks, cutime+cstime ticks) of a live process; the last are its
    exited children's, once it has reaped them."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return (
        comm,
        int(fields[1]),
        int(fields[11]) + int(fields[12]),
        int(fields[13]) + int(fields[14]),
    )


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children(pid: int) -> list[int]:
    return [p for p in all_pids() if (s := proc_stat(p)) is not None and s[1] == pid]


def postgres_pids() -> list[int]:
    return [p for p in all_pids() if (s := proc_stat(p)) is not None and s[0] == "postgres"]


def reaped_ticks(pids: list[int]) -> int:
    """CPU ticks of the exited children these processes have reaped: the PostgreSQL backends of
    connections that closed between two snapshots count there."""
    return sum(s[3] for p in pids if (s := proc_stat(p)) is not None)


def postmasters() -> list[int]:
    """The postgres processes whose parent is not one (each cluster's postmaster)."""
    pids = set(postgres_pids())
    return [p for p in pids if (s := proc_stat(p)) is not None and s[1] not in pids]


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    return {p: s[2] for p in pids if (s := proc_stat(p)) is not None}


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_ms(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU used between two snapshots; a process new in `after` counts from zero."""
    return sum(t - before.get(p, 0) for p, t in after.items()) * 1000 / CLK_TCK


# --- HTTP helpers ------------------------------------------------------------------------------


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "Content-Type": "application/json",
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()[:300]


def wait_healthy(base: str, process: subprocess.Popen[bytes], workers: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({process.returncode}); see the logs")
        with contextlib.suppress(OSError):
            status, _ = http("GET", base + "/health", timeout=2)
            if status == 200 and len(children(process.pid)) >= workers:
                return
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not become healthy within 60 s")


def webhook_type(path: str) -> str:
    return path.split("?")[0].rsplit("/", 1)[-1]


def procfile_web(env: dict[str, str], app: str, port: int) -> list[str]:
    """The Procfile's `web:` command with its ${VAR:-default}s expanded from `env`, serving `app`
    on 127.0.0.1:`port`."""
    line = next(
        line.removeprefix("web:")
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    line = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), line)
    words = shlex.split(line)
    words[words.index("--bind") + 1] = f"127.0.0.1:{port}"
    words[-1] = app
    return words


# --- one simulated call ------------------------------------------------------------------------


@dataclass
class Sent:
    offset: float  # seconds after the call started
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    kind: str
    latency: float
    status: int


class Call:
    def __init__(
        self,
        session: dict[str, Any],
        caller: str,
        args: argparse.Namespace,
        transport: Any,
        deadline: float,
    ) -> None:
        self.session_id = str(session["session_id"])
        self.sip_uri = str(session["sip_uri"])
        self.caller = caller
        self.args = args
        self._transport = transport
        self.deadline = deadline
        self.sent: list[Sent] = []
        self.heard: list[str] = []
        self.prompts: list[str] = []
        self.confirm_at: float | None = None
        self.result_at: float | None = None
        self.start = 0.0
        self.end = 0.0
        self.error: str | None = None
        self.unexpected: str | None = None
        self.rng = random.Random(self.session_id)

    def send(self, path: str, form: Any, headers: Any) -> HttpReply:
        t0 = time.monotonic()
        reply = self._transport(path, form, headers)
        elapsed = time.monotonic() - t0
        self.sent.append(
            Sent(
                t0 - self.start,
                path,
                dict(form),
                dict(headers),
                webhook_type(path),
                elapsed,
                reply.status,
            )
        )
        return reply

    def hear(self, line: str) -> None:
        if line.startswith("["):
            return
        text = line[2:] if line.startswith("< ") else line
        self.heard.append(text)
        if (
            self.confirm_at is not None
            and self.result_at is None
            and (text in (APPROVED, DECLINED) or UNRESOLVED in text or APOLOGY in text)
        ):
            self.result_at = time.monotonic()

    def press(self, prompt: list[str]) -> str | None:
        text = " ".join(prompt)
        self.prompts.append(text)
        think = self.args.think * self.rng.uniform(0.75, 1.25)
        if time.monotonic() + think > self.deadline:
            return None  # --duration is over: hang up
        if "card number" in text:
            keys = CARD + "#"
        elif "expiration date" in text:
            keys = EXPIRY
        elif "security code" in text:
            keys = CVC
        elif "ZIP code" in text:
            keys = ZIP + "#"
        elif "Press 1 to pay" in text or "Press 1 to save" in text:
            keys = "1"
        elif "Press 1 to try another card" in text:
            keys = "2"
        else:
            self.unexpected = text[:120]
            return None
        time.sleep(think)
        if keys == "1" and self.confirm_at is None:
            self.confirm_at = time.monotonic()
        return keys

    def run(self, public_url: str, token: str) -> None:
        self.start = time.monotonic()
        phone = Phone(
            self.send,
            auth_token=token,
            public_url=public_url,
            from_=self.caller,
            to=self.sip_uri,
            extra={"SipDomain": SIP_DOMAIN},
            out=self.hear,
            max_requests=200,
        )
        try:
            phone.call(self)
        except (PhoneError, OSError) as error:
            self.error = f"{type(error).__name__}: {error}"[:200]
        self.end = time.monotonic()


def replay(
    call: Call,
    transport: Any,
    start: float,
    out: list[tuple[str, float, int]],
    lock: threading.Lock,
) -> None:
    """The same requests as `call`, at the same offsets from its start, to the bare endpoint."""
    for sent in call.sent:
        delay = start + sent.offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.monotonic()
        try:
            status = transport(sent.path, sent.form, sent.headers).status
        except OSError:
            status = 0
        with lock:
            out.append((sent.kind, time.monotonic() - t0, status))


# --- the run -----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.db = f"paydial_bench_{secrets.token_hex(4)}"
        self.logdir = Path(tempfile.mkdtemp(prefix="paydial-bench-"))
        self.procs = Processes(self.logdir)
        self.gateway = Gateway(args.gateway_latency)
        self.receiver = Receiver()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = "bench-twilio-" + secrets.token_hex(8)
        self.env = os.environ | {
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": PG_URL.format(db=self.db),
            "REDIS_URL": REDIS_URL,
            "PAYDIAL_SECRET_KEY": secrets.token_urlsafe(32),
            "TWILIO_AUTH_TOKEN": self.token,
            "PAYDIAL_PUBLIC_URL": self.base,
            "PAYDIAL_SIP_DOMAIN": SIP_DOMAIN,
            "PAYDIAL_RATE_LIMIT_TEST": "1000000/minute",
            "WEB_CONCURRENCY": str(args.workers_web),
        }
        self.db_created = False
        self.connections_opened = 0
        self.out: list[str] = []

    def say(self, line: str = "") -> None:
        self.out.append(line)
        print(line, flush=True)

    # setup / teardown

    def redis(self) -> Any:
        from redis import Redis

        return Redis.from_url(REDIS_URL)

    def cli(self, *argv: str) -> str:
        result = subprocess.run(
            [*PAYDIAL, *argv],
            cwd=self.logdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"paydial {' '.join(argv[:2])} failed: {result.stderr[-800:]}")
        return result.stdout

    def setup(self) -> str:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.db_created = True
        self.redis().flushdb()
        gateway = serve(self.gateway.handler())
        receiver = serve(self.receiver.handler())
        self.cli("db", "upgrade")
        self.cli("project", "create", SLUG)
        key = self.cli("key", "create", SLUG, "--mode", "test").strip().splitlines()[-1].strip()
        self.cli(
            "gateway",
            "set",
            SLUG,
            "stripe",
            "--mode",
            "test",
            "secret_key=sk_test_bench",
            f"api_base=http://127.0.0.1:{gateway.server_port}",
        )
        self.cli("webhook", "set", SLUG, f"http://127.0.0.1:{receiver.server_port}/hooks")
        return key

    def teardown(self) -> None:
        self.procs.stop_all()
        with contextlib.suppress(Exception):
            self.redis().flushdb()
        if self.db_created:
            import psycopg

            with contextlib.suppress(Exception), psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def gunicorn(self, name: str, app: str, port: int) -> subprocess.Popen[bytes]:
        """The Procfile's `web:` command, serving `app` on `port` (the same settings for both)."""
        command = [sys.executable, "-m", *procfile_web(self.env, app, port)]
        process = self.procs.start(name, command, self.env)
        wait_healthy(f"http://127.0.0.1:{port}", process, self.args.workers_web)
        return process

    # phases

    def create_sessions(
        self, key: str, count: int, first: int
    ) -> list[tuple[dict[str, Any], str, float]]:
        def create(i: int) -> tuple[dict[str, Any], str, float]:
            caller = f"+1415555{(first + i) % 10000:04d}"
            t0 = time.monotonic()
            status, body = http(
                "POST",
                self.base + "/v1/sessions",
                {
                    "project": SLUG,
                    "caller": caller,
                    "amount": "150.00",
                    "mode": "charge",
                    "gateway": "stripe",
                    "description": "Bench order",
                    "callback": CALLBACK,
                    "memory": f"bench call {i}",
                },
                {"Authorization": f"Bearer {key}"},
            )
            if status != 201:
                raise RuntimeError(f"POST /v1/sessions answered {status}: {body}")
            return body, caller, time.monotonic() - t0

        with ThreadPoolExecutor(self.args.create_concurrency) as pool:
            return list(pool.map(create, range(count)))

    def place_calls(
        self,
        sessions: list[tuple[dict[str, Any], str, float]],
        ramp: float,
        deadline: float,
        sample: bool,
    ) -> tuple[list[Call], dict[str, Any]]:
        transport = http_transport(self.base, timeout=30)
        calls = [Call(s, caller, self.args, transport, deadline) for s, caller, _ in sessions]
        threads = [
            threading.Thread(target=c.run, args=(self.base, self.token), daemon=True) for c in calls
        ]
        redis_info: dict[str, Any] = {}
        stop = threading.Event()
        sampler = threading.Thread(
            target=self.sample_redis, args=(calls, stop, redis_info), daemon=True
        )
        if sample:
            sampler.start()
        start = time.monotonic()
        for i, thread in enumerate(threads):
            delay = start + ramp * i / max(1, len(threads)) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline + 60 - time.monotonic()))
        stop.set()
        if sample:
            sampler.join(10)
        return calls, redis_info

    def sample_redis(self, calls: list[Call], stop: threading.Event, info: dict[str, Any]) -> None:
        redis = self.redis()
        baseline = int(redis.info("memory")["used_memory"])
        info.update(
            baseline=baseline, peak_active=0, peak_delta=0, keys_bytes=0, keys_active=0, keys=0
        )
        scanned_at = 0
        while not stop.wait(0.5):
            active = sum(1 for c in calls if c.start and not c.end)
            used = int(redis.info("memory")["used_memory"])
            if active > info["peak_active"]:
                info.update(peak_active=active, peak_delta=used - baseline)
            if active >= max(1, scanned_at * 1.1):  # MEMORY USAGE of the call-state keys
                scanned_at = active
                total = count = 0
                for key in redis.scan_iter(match="paydial:call:*", count=500):
                    total += int(redis.memory_usage(key, samples=0) or 0)
                    count += 1
                info.update(keys_bytes=total, keys_active=active, keys=count)

    def settle(self, limit: float) -> float:
        """Wait until the queue is empty and the gateway and the receiver have gone quiet."""
        redis = self.redis()
        t0 = time.monotonic()
        last, quiet = None, 0
        while time.monotonic() - t0 < limit:
            now = (
                redis.llen("rq:queue:paydial"),
                len(self.gateway.intents),
                self.receiver.total(),
                self.gateway.busy,
            )
            quiet = quiet + 1 if now == last and now[0] == 0 and now[3] == 0 else 0
            if quiet >= 6:
                break
            last = now
            time.sleep(0.5)
        return time.monotonic() - t0

    def run(self) -> None:
        a = self.args
        log(f"logs in {self.logdir}; database {self.db}")
        key = self.setup()
        web = self.gunicorn("web", "api:create_app()", self.port)
        pay = [
            self.procs.start(f"worker{i}", [*PAYDIAL, "worker"], self.env)
            for i in range(a.workers_pay)
        ]
        time.sleep(2)
        for p in pay:
            if p.poll() is not None:
                raise RuntimeError("a paydial worker exited; see the logs")
        web_pids = children(web.pid)
        pay_pids = [p.pid for p in pay]

        log(f"warm-up: {2 * a.workers_web} calls")
        warm = self.create_sessions(key, 2 * a.workers_web, 9000)
        saved_think, a.think = a.think, 0.0
        self.place_calls(warm, 0.0, time.monotonic() + 120, sample=False)
        a.think = saved_think
        self.settle(30)

        log(f"creating {a.calls} sessions")
        before = cpu_ticks(web_pids)
        t0 = time.monotonic()
        sessions = self.create_sessions(key, a.calls, 0)
        create_wall = time.monotonic() - t0
        create_cpu = cpu_ms(before, cpu_ticks(web_pids))

        log(f"placing {a.calls} calls (think {a.think} s, ramp {a.ramp} s)")
        own_before = self.db_backends()
        sessions_before = self.db_sessions()
        pg_before = cpu_ticks(postgres_pids())
        reaped_before = reaped_ticks(postmasters())
        web_before, pay_before = cpu_ticks(web_pids), cpu_ticks(pay_pids)
        machine_before, self_before = machine_ticks(), cpu_ticks([os.getpid()])
        self.load_before = loadavg()
        charges_before = len(self.gateway.charged_at)
        t0 = time.monotonic()
        calls, redis_info = self.place_calls(sessions, a.ramp, t0 + a.duration, sample=True)
        calls_wall = time.monotonic() - t0
        web_cpu = cpu_ms(web_before, cpu_ticks(web_pids))
        machine_after = machine_ticks()
        self.machine_busy = (machine_after[0] - machine_before[0]) / max(
            1, machine_after[1] - machine_before[1]
        )
        self.driver_cpu = cpu_ms(self_before, cpu_ticks([os.getpid()]))
        self.load_after = loadavg()
        log("calls done; waiting for queued jobs and webhooks")
        settle_wall = self.settle(a.settle)
        pay_cpu = cpu_ms(pay_before, cpu_ticks(pay_pids))
        pg_after = cpu_ticks(postgres_pids())
        pg_cpu = cpu_ms(pg_before, pg_after) + (
            (reaped_ticks(postmasters()) - reaped_before) * 1000 / CLK_TCK
        )
        own = own_before | self.db_backends()
        self.connections_opened = self.db_sessions() - sessions_before
        own_pg_cpu = cpu_ms(
            {p: t for p, t in pg_before.items() if p in own},
            {p: t for p, t in pg_after.items() if p in own},
        )
        charged_at = self.gateway.charged_at[charges_before:]
        rows = self.read_database([c.session_id for c in calls])
        self.procs.stop(web)

        log("bare endpoint: the same requests, same timing")
        bare_port = free_port()
        bare = self.gunicorn("bare", "bench.bare_app:app", bare_port)
        bare_pids = children(bare.pid)
        bare_transport = http_transport(f"http://127.0.0.1:{bare_port}", timeout=30)
        for _ in range(4 * a.workers_web):
            bare_transport("/twilio/gather", {"Digits": "1"}, {})
        bare_before = cpu_ticks(bare_pids)
        bare_out: list[tuple[str, float, int]] = []
        lock = threading.Lock()
        t0 = time.monotonic()
        starts = [c.start for c in calls]
        first = min(starts)
        threads = [
            threading.Thread(
                target=replay,
                daemon=True,
                args=(c, bare_transport, t0 + (c.start - first), bare_out, lock),
            )
            for c in calls
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(a.duration + 120)
        bare_wall = time.monotonic() - t0
        bare_cpu = cpu_ms(bare_before, cpu_ticks(bare_pids))
        self.procs.stop(bare)

        self.report(
            calls,
            sessions,
            create_wall,
            create_cpu,
            calls_wall,
            settle_wall,
            web_cpu,
            pay_cpu,
            (pg_cpu, own_pg_cpu),
            charged_at,
            redis_info,
            rows,
            bare_out,
            bare_wall,
            bare_cpu,
        )

    def db_backends(self) -> set[int]:
        """PostgreSQL backends connected to the bench database (other than this query's)."""
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.db,),
            ).fetchall()
        return {int(r[0]) for r in rows}

    def db_sessions(self) -> int:
        """Connections ever opened to the bench database (pg_stat_database.sessions)."""
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            row = conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.db,)
            ).fetchone()
        return int(row[0]) if row else 0

    def read_database(self, ids: list[str]) -> dict[str, Any]:
        import psycopg

        with psycopg.connect(PG_URL.format(db=self.db).replace("+psycopg", "")) as conn:
            statuses: dict[str, str] = dict(
                conn.execute(
                    "SELECT id, status FROM sessions WHERE id = ANY(%s)", (ids,)
                ).fetchall()
            )
            attempts: dict[str, int] = dict(
                conn.execute(
                    "SELECT session_id, count(*) FROM payment_attempts WHERE session_id = ANY(%s) "
                    "GROUP BY session_id",
                    (ids,),
                ).fetchall()
            )
            events = conn.execute(
                "SELECT id, session_id, type, delivered FROM webhook_events "
                "WHERE session_id = ANY(%s)",
                (ids,),
            ).fetchall()
        return {"statuses": statuses, "attempts": attempts, "events": events}

    # the report

    def report(
        self,
        calls: list[Call],
        sessions: list[tuple[dict[str, Any], str, float]],
        create_wall: float,
        create_cpu: float,
        calls_wall: float,
        settle_wall: float,
        web_cpu: float,
        pay_cpu: float,
        pg_cpu: tuple[float, float],
        charged_at: list[float],
        redis_info: dict[str, Any],
        rows: dict[str, Any],
        bare_out: list[tuple[str, float, int]],
        bare_wall: float,
        bare_cpu: float,
    ) -> None:
        a = self.args
        sent = [s for c in calls for s in c.sent]
        n = len(sent)
        say = self.say
        say(
            f"== paydial bench: {a.calls} calls, gateway latency {a.gateway_latency} s, "
            f"{a.workers_web} web workers, {a.workers_pay} paydial workers, "
            f"think {a.think} s, ramp {a.ramp} s, {os.cpu_count()} CPUs"
        )
        say(
            f"web: {shlex.join(procfile_web(self.env, 'api:create_app()', self.port))} "
            f"(bare: 'bench.bare_app:app'); stand-in Stripe: PaymentMethod at once, "
            f"PaymentIntent after {a.gateway_latency} s"
        )
        say(
            f"machine during the calls phase: {self.machine_busy:.0%} of all CPUs busy; this "
            f"driver used {self.driver_cpu / 1000 / calls_wall:.2f} CPUs; load average "
            f"{self.load_before} -> {self.load_after} (other work on the machine skews latency)"
        )
        say(
            f"calls phase {calls_wall:.1f} s (+{settle_wall:.1f} s for queued jobs/webhooks); "
            f"calls with a client error: {sum(1 for c in calls if c.error)}; "
            f"non-200 webhooks: {sum(1 for s in sent if s.status != 200)}"
        )
        for c in calls:
            if c.error:
                say(f"  first client error: {c.error}")
                break
        say()
        say("latency ms             count     p50     p99     max")
        creates = [lat for _, _, lat in sessions]
        groups = {"session create": creates}
        for kind in ("voice", "gather", "result", "dial", "status"):
            groups[kind] = [s.latency for s in sent if s.kind == kind]
        groups["all webhooks"] = [s.latency for s in sent]
        # A hold poll waits up to PAYDIAL_HOLD_WAIT for its payment's news by design.
        groups["all but hold polls"] = [s.latency for s in sent if s.kind != "result"]
        for name, values in groups.items():
            ms = [v * 1000 for v in values]
            say(
                f"  {name:<18} {len(ms):7d} {pct(ms, 50):7.1f} {pct(ms, 99):7.1f} "
                f"{max(ms, default=float('nan')):7.1f}"
            )
        bare = [lat * 1000 for _, lat, _ in bare_out]
        say(
            f"  {'bare endpoint':<18} {len(bare):7d} {pct(bare, 50):7.1f} {pct(bare, 99):7.1f} "
            f"{max(bare, default=float('nan')):7.1f}"
        )
        say()
        say(
            f"throughput: {n / calls_wall:.1f} webhooks/s over the calls phase "
            f"(bare replay: {len(bare_out) / bare_wall:.1f} req/s, same offered load); "
            f"session creates {len(creates) / create_wall:.1f}/s "
            f"({a.create_concurrency} at a time)"
        )
        web_ms, bare_ms = web_cpu / max(1, n), bare_cpu / max(1, len(bare_out))
        say("CPU ms per webhook (from /proc utime+stime):")
        say(
            f"  web workers       {web_ms:7.2f}   (capacity ~{1000 / max(web_ms, 1e-9):.0f} "
            f"webhooks/s per core)"
        )
        say(
            f"  paydial workers   {pay_cpu / max(1, n):7.2f}   "
            f"({pay_cpu / max(1, len(charged_at)):.1f} ms per charge)"
        )
        say(
            f"  postgres (all)    {pg_cpu[0] / max(1, n):7.2f}   "
            f"(live backends of the bench database: {pg_cpu[1] / max(1, n):.2f}; "
            f"{self.connections_opened} connections opened during the calls)"
        )
        create_ms = create_cpu / max(1, len(creates))
        times_bare = create_ms / max(bare_ms, 1e-9)
        say(
            f"  session create    {create_ms:7.2f}   (web workers; {times_bare:.1f} times the bare "
            f"endpoint's, a figure that moves less with the machine's speed)"
        )
        say(f"  bare endpoint     {bare_ms:7.2f}   ratio bare/webhook {bare_ms / web_ms:.3f}")
        holds = [
            c.result_at - c.confirm_at
            for c in calls
            if c.confirm_at is not None and c.result_at is not None
        ]
        held_open = sum(1 for c in calls if c.confirm_at is not None and c.result_at is None)
        say(
            f"hold (confirm key -> result heard): p50 {pct(holds, 50):.2f} s, "
            f"p99 {pct(holds, 99):.2f} s, max {max(holds, default=float('nan')):.2f} s "
            f"({len(holds)} results heard, {held_open} confirmed but heard none)"
        )
        gw = self.gateway
        heard = [
            (c.session_id, c.confirm_at, c.result_at)
            for c in calls
            if c.confirm_at is not None and c.result_at is not None
        ]
        to_gateway = [gw.asked_at[sid] - confirm for sid, confirm, _ in heard if sid in gw.asked_at]
        to_caller = [
            result - gw.answered_at[sid] for sid, _, result in heard if sid in gw.answered_at
        ]
        say(
            f"  confirm key -> charge asked of the gateway: p50 {pct(to_gateway, 50):.2f} s, "
            f"p99 {pct(to_gateway, 99):.2f} s; gateway answer -> result heard: "
            f"p50 {pct(to_caller, 50):.2f} s, p99 {pct(to_caller, 99):.2f} s"
        )
        span = (charged_at[-1] - charged_at[0]) if len(charged_at) > 1 else float("nan")
        say(
            f"charges: {len(charged_at)}; {len(charged_at) / calls_wall:.2f}/s over the calls "
            f"phase, {len(charged_at) / span if span == span and span else float('nan'):.2f}/s "
            f"first to last charge"
        )
        peak = redis_info.get("peak_active", 0)
        say(
            f"redis: MEMORY USAGE of paydial:call:* "
            f"{redis_info.get('keys_bytes', 0) / max(1, redis_info.get('keys_active', 0)):.0f} "
            f"bytes per active call ({redis_info.get('keys', 0)} keys, "
            f"{redis_info.get('keys_active', 0)} active); INFO used_memory delta "
            f"{redis_info.get('peak_delta', 0) / max(1, peak):.0f} bytes per active call at the "
            f"peak ({peak} active; noisy: RQ job keys and the allocator move it too)"
        )
        say()
        self.correctness(calls, rows)
        say(f"(logs: {self.logdir})")

    def correctness(self, calls: list[Call], rows: dict[str, Any]) -> None:
        say = self.say
        statuses: dict[str, str] = rows["statuses"]
        charges = self.gateway.charges_by_session()
        by_status = Counter(statuses.values())
        say("correctness:")
        say("  sessions by status: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())))
        open_ = sum(v for k, v in by_status.items() if k in ("pending", "collecting"))
        say(f"  sessions without a terminal status: {open_}")
        attempts = Counter(rows["attempts"].get(c.session_id, 0) for c in calls)
        say(
            "  attempts per session: " + ", ".join(f"{k}: {v}" for k, v in sorted(attempts.items()))
        )
        per = Counter(charges.get(c.session_id, 0) for c in calls)
        say(
            "  charges per session (PaymentIntents at the stand-in): "
            + ", ".join(f"{k}: {v}" for k, v in sorted(per.items()))
            + f"; idempotent replays {self.gateway.replays}"
        )
        success = [c for c in calls if statuses.get(c.session_id) == "payment-success"]
        say(
            f"  payment-success sessions with exactly one charge: "
            f"{sum(1 for c in success if charges.get(c.session_id) == 1)} of {len(success)}; "
            f"charged sessions not payment-success: "
            f"{sum(1 for c in calls if charges.get(c.session_id) and c not in success)}"
        )
        events = rows["events"]
        delivered = self.receiver.deliveries
        once = sum(1 for e in events if delivered.get(e[0]) == 1)
        dupes = sum(1 for e in events if delivered.get(e[0], 0) > 1)
        missing = sum(1 for e in events if not delivered.get(e[0]))
        terminal = {
            c.session_id
            for c in calls
            if statuses.get(c.session_id)
            in ("payment-success", "payment-failed", "payment-authorized")
        }
        with_event = {e[1] for e in events}
        say(
            f"  webhook events: {len(events)} recorded "
            f"({', '.join(f'{k} {v}' for k, v in sorted(Counter(e[2] for e in events).items()))}); "
            f"delivered once {once}, more than once {dupes}, not delivered {missing}; "
            f"payment-success/failed sessions without an event "
            f"{len(terminal - with_event)}"
        )
        approved_false = [
            c
            for c in calls
            if APPROVED in c.heard
            and (statuses.get(c.session_id) != "payment-success" or charges.get(c.session_id) != 1)
        ]
        declined_false = [c for c in calls if DECLINED in c.heard and charges.get(c.session_id)]
        unresolved = [c for c in calls if any(UNRESOLVED in h for h in c.heard)]
        unresolved_lost = [
            c
            for c in unresolved
            if statuses.get(c.session_id) not in ("payment-success", "payment-failed")
        ]
        apology = [c for c in calls if any(APOLOGY in h for h in c.heard)]
        say(
            f"  callers told 'the merchant will be told' (hold limit): {len(unresolved)}, of "
            f"which the payment never reached a result: {len(unresolved_lost)} "
            f"(statuses {dict(Counter(statuses.get(c.session_id) for c in unresolved))})"
        )
        say(
            f"  callers told 'approved' without exactly one charge and payment-success: "
            f"{len(approved_false)}; told 'declined' but charged: {len(declined_false)}; "
            f"heard the apology (error): {len(apology)}"
        )
        heard_result = sum(1 for c in calls if APPROVED in c.heard)
        say(
            f"  callers who heard 'approved': {heard_result} of {len(calls)}; "
            f"hung up at --duration or on an unexpected prompt: "
            f"{sum(1 for c in calls if c.unexpected)} unexpected"
        )
        told_false = len(unresolved_lost) + len(approved_false) + len(declined_false)
        say(f"  TOTAL callers told something that did not happen: {told_false}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=50, help="simulated concurrent calls")
    parser.add_argument(
        "--gateway-latency",
        type=float,
        default=0.2,
        help="seconds the stand-in takes to answer a PaymentIntent create",
    )
    parser.add_argument(
        "--workers-web", type=int, default=4, help="gunicorn processes (WEB_CONCURRENCY)"
    )
    parser.add_argument("--workers-pay", type=int, default=2, help="`paydial worker` processes")
    parser.add_argument(
        "--think", type=float, default=2.0, help="seconds before each keyed entry (±25%% jitter)"
    )
    parser.add_argument(
        "--ramp", type=float, default=5.0, help="seconds over which the calls start"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=300.0,
        help="callers hang up at the next entry after this many seconds",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=90.0,
        help="at most this long to wait for queued jobs and webhooks after calls",
    )
    parser.add_argument(
        "--create-concurrency", type=int, default=8, help="session creates in flight at once"
    )
    parser.add_argument("--out", type=Path, help="also append the report to this file")
    args = parser.parse_args()
    if not 1 <= args.calls <= 2000:
        parser.error("--calls must be between 1 and 2000")

    bench = Bench(args)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        bench.teardown()
        if args.out and bench.out:
            with args.out.open("a") as f:
                f.write(f"$ python bench/calls.py {' '.join(sys.argv[1:])}\n")
                f.write("\n".join(bench.out) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
