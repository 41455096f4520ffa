"""The `paydial` command: serve, admin (projects, keys, gateways), migrations."""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from paydial.command import CommandError, parse_assignments, services_from_env
from paydial.integration_cli import add_integration_commands
from payments.local import (
    DEFAULT_PHONE_NUMBER,
    DEFAULT_PUBLIC_URL,
    DEFAULT_SIP_DOMAIN,
    HOME_VARIABLE,
    SECRET_VARIABLES,
    MissingSecrets,
    local_secrets_path,
    read_local_secrets,
)

if TYPE_CHECKING:
    from payments.store import Project

# Commands import what they use when they run (see paydial/command.py): `--help` stays fast.
ENVIRONMENTS = ("test", "live")  # payments.model.Environment
GATEWAYS = ("stripe", "authorizenet", "braintree", "shift4")  # payments.model.Gateway
MISSING_SECRETS_STATUS = 2

DEMO_SLUG = "demo"
DEMO_USER = "demo@example.com"


def cmd_serve(args: argparse.Namespace) -> None:
    from sqlalchemy import select
    from werkzeug.serving import run_simple

    from api import create_app, maintenance_tasks
    from paydial.migrate import upgrade
    from payments.accounts import create_project, issue_key
    from payments.model import Environment
    from payments.store import Project
    from payments.sweeps import Sweeper, run_once
    from payments.users import create_user

    services = services_from_env()
    upgrade(services.settings.database_url)
    with services.db.transaction() as tx:
        first_start = tx.scalar(select(Project.id).where(Project.slug == DEMO_SLUG)) is None
        if first_start:
            create_project(tx, DEMO_SLUG, now=services.clock(), account_name=DEMO_SLUG)
            key = issue_key(tx, DEMO_SLUG, Environment.TEST, now=services.clock())
            demo_user = create_user(tx, DEMO_USER, DEMO_SLUG, now=services.clock())
    port = args.port or int(os.environ.get("PORT", "8000"))
    base = f"http://{args.host}:{port}"
    if "PAYDIAL_PUBLIC_URL" not in os.environ:  # Twilio (or `paydial call`) reaches us right here
        services.settings = services.settings.model_copy(update={"public_url": base})
    if first_start:
        print(f"Created project '{DEMO_SLUG}' with a test key (shown once):\n  {key.plaintext}")
        print(f"Dashboard user {DEMO_USER}, password (shown once):\n  {demo_user.password}")
    else:
        print(
            f"Project '{DEMO_SLUG}' exists; its test key was shown on first start. "
            f"Make another with `paydial key create {DEMO_SLUG} --mode test`."
        )
    print(f"Paydial on {base}  (API {base}/v1, demo {base}/demo, contract {base}/openapi.json)")
    print(f"Dashboard: {base}/dashboard/")
    app = create_app(services=services)
    app.config["PAYDIAL_DEMO"] = True
    if not services.settings.redis_url:  # with Redis, `paydial worker` processes run the sweeps
        tasks = maintenance_tasks()
        Sweeper(
            lambda: run_once(services, tasks), interval=services.settings.sweep_interval_seconds
        ).start()
    run_simple(args.host, port, app, threaded=True, use_reloader=False)


def cmd_project_create(args: argparse.Namespace) -> None:
    from payments.accounts import create_project
    from payments.store import Account

    services = services_from_env()
    with services.db.transaction() as tx:
        project = create_project(tx, args.slug, now=services.clock(), account_name=args.account)
        account = tx.get_one(Account, project.account_id)
        print(f"Created project '{project.slug}' (id {project.id}) in account '{account.name}'.")
    print(f"Next: paydial key create {project.slug} --mode test")


CLI_ACTOR = "command line"


def _print_project(project: Project, webhook_secret: str | None = None) -> None:
    from api.projects import project_out

    print(json.dumps(project_out(project).model_dump(mode="json"), indent=2))
    if webhook_secret is not None:
        print(f"webhook signing secret (shown once):\n  {webhook_secret}")


def cmd_project_show(args: argparse.Namespace) -> None:
    from payments.accounts import get_project_by_slug

    services = services_from_env()
    with services.db.transaction() as tx:
        _print_project(get_project_by_slug(tx, args.slug))


def _change(slug: str, patch: dict[str, object]) -> tuple[Project, str | None]:
    """Apply a settings patch as the command line; a bad value names its setting and path."""
    from pydantic import ValidationError

    from payments.accounts import get_project_by_slug
    from payments.outbox import WEBHOOK_SECRET_PURPOSE
    from payments.projects import change_project

    services = services_from_env()
    try:
        with services.db.transaction() as tx:
            project = get_project_by_slug(tx, slug)
            changed = change_project(
                tx,
                project,
                patch,
                actor=CLI_ACTOR,
                now=services.clock(),
                sealer=services.sealer(WEBHOOK_SECRET_PURPOSE),
            )
    except ValidationError as error:
        raise CommandError(
            "; ".join(
                f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
            )
        ) from None
    return project, changed.webhook_secret


def cmd_project_set(args: argparse.Namespace) -> None:
    from payments.project_settings import patch_from_assignments

    try:
        patch = patch_from_assignments(parse_assignments(args.values))
    except ValueError as error:
        raise CommandError(str(error)) from None
    project, secret = _change(args.slug, patch)
    _print_project(project, secret)


def cmd_key_create(args: argparse.Namespace) -> None:
    from payments.accounts import issue_key
    from payments.model import Environment

    services = services_from_env()
    with services.db.transaction() as tx:
        key = issue_key(tx, args.slug, Environment(args.mode), now=services.clock())
    print(key.plaintext)


def cmd_key_revoke(args: argparse.Namespace) -> None:
    from payments.accounts import revoke_key

    services = services_from_env()
    with services.db.transaction() as tx:
        key = revoke_key(tx, args.prefix, now=services.clock())
        print(f"revoked {key.prefix}… ({key.environment})")


def cmd_velocity_reset(args: argparse.Namespace) -> None:
    from payments import velocity

    services = services_from_env()
    with services.db.transaction() as tx:
        forgotten = velocity.reset(tx, "test")
    print(f"forgot {forgotten} failed test-mode payment attempts; live counters are unchanged")


def cmd_user_create(args: argparse.Namespace) -> None:
    from payments.users import create_user

    services = services_from_env()
    password = (getpass.getpass("Password (empty: make one): ") if args.ask else "") or None
    with services.db.transaction() as tx:
        made = create_user(tx, args.email, args.account, now=services.clock(), password=password)
    print(f"created dashboard user {made.user.email} in account {args.account!r}")
    if made.password is not None:
        print(f"one-time password (shown once):\n  {made.password}")


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from paydial.migrate import upgrade
    from payments.settings import Settings

    upgrade(Settings().database_url)


def cmd_gateway_set(args: argparse.Namespace) -> None:
    from gateways import required_credentials
    from payments.accounts import get_project_by_slug
    from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
    from payments.model import Environment, Gateway

    values = parse_assignments(args.values)
    missing = [name for name in required_credentials(args.gateway) if name not in values]
    if missing:
        raise CommandError(f"{args.gateway} needs {', '.join(missing)}")
    services = services_from_env()
    with services.db.transaction() as tx:
        project = get_project_by_slug(tx, args.slug)
        set_credentials(
            tx,
            project,
            Gateway(args.gateway),
            Environment(args.mode),
            values,
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )
    print(f"{args.gateway} {args.mode} credentials set for {args.slug} ({len(values)} values)")


Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _core_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run everything on embedded defaults")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: $PORT or 8000")
    serve.set_defaults(func=cmd_serve)

    project = sub.add_parser("project", help="manage projects").add_subparsers(required=True)
    create = project.add_parser("create", help="create a project")
    create.add_argument("slug")
    create.add_argument("--account", help="account name (default: a new account of its own)")
    create.set_defaults(func=cmd_project_create)
    show = project.add_parser("show", help="print a project's settings as JSON")
    show.add_argument("slug")
    show.set_defaults(func=cmd_project_show)
    project_set = project.add_parser(
        "set", help="change settings: KEY=VALUE, as PATCH /v1/projects/SLUG"
    )
    assert isinstance(project_set, LazyHelpParser)
    project_set.describe = _settings_keys_help
    project_set.add_argument("slug")
    project_set.add_argument("values", nargs="+", metavar="KEY=VALUE")
    project_set.set_defaults(func=cmd_project_set)

    key = sub.add_parser("key", help="manage API keys").add_subparsers(required=True)
    key_create = key.add_parser("create", help="print a new key for the account owning SLUG")
    key_create.add_argument("slug")
    key_create.add_argument("--mode", choices=ENVIRONMENTS, required=True)
    key_create.set_defaults(func=cmd_key_create)
    key_revoke = key.add_parser(
        "revoke", help="revoke the one key starting with PREFIX (12 characters or more)"
    )
    key_revoke.add_argument("prefix")
    key_revoke.set_defaults(func=cmd_key_revoke)

    velocity = sub.add_parser("velocity", help="failed-payment counters").add_subparsers(
        required=True
    )
    reset = velocity.add_parser("reset", help="forget counted failures (only test mode's)")
    reset.add_argument(
        "--test", action="store_true", required=True, help="reset the test-mode counters"
    )
    reset.set_defaults(func=cmd_velocity_reset)

    gateway = sub.add_parser("gateway", help="gateway credentials").add_subparsers(required=True)
    gateway_set = gateway.add_parser("set", help="store credentials (sealed) for a project")
    gateway_set.add_argument("slug")
    gateway_set.add_argument("gateway", choices=GATEWAYS)
    gateway_set.add_argument("--mode", choices=ENVIRONMENTS, required=True)
    gateway_set.add_argument("values", nargs="+", metavar="KEY=VALUE")
    gateway_set.set_defaults(func=cmd_gateway_set)

    user = sub.add_parser("user", help="dashboard users").add_subparsers(required=True)
    user_create = user.add_parser("create", help="a dashboard user of an account")
    user_create.add_argument("email")
    user_create.add_argument("--account", required=True, help="the account's name")
    user_create.add_argument(
        "--ask", action="store_true", help="ask for the password instead of printing a new one"
    )
    user_create.set_defaults(func=cmd_user_create)

    db = sub.add_parser("db", help="database").add_subparsers(required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)


def cmd_worker(args: argparse.Namespace) -> None:
    from api import maintenance_tasks
    from ivr.charge import run_payment_job
    from payments import logs
    from payments.jobs import RQJobs, run_worker
    from payments.sweeps import Sweeper

    services = services_from_env()
    redis_url = services.settings.redis_url
    if not redis_url:
        raise CommandError("the worker takes jobs from Redis: set REDIS_URL")
    logs.configure(json_logs=services.settings.json_logs, level=services.settings.log_level)
    tasks = maintenance_tasks()
    queue = RQJobs(redis_url)
    every = services.settings.sweep_interval_seconds
    scheduler = Sweeper(lambda: queue.schedule(tasks, every=every), interval=every)
    scheduler.start()
    stop = threading.Event()  # SIGTERM or Ctrl-C: take no new jobs, finish the running ones
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    services.db.warm()  # as each web worker does, and why: api/gunicorn_conf.py
    gc.freeze()
    try:
        run_worker(services, tasks, pay=run_payment_job, burst=args.burst, stop=stop)
    finally:
        scheduler.stop(timeout=every)


def cmd_webhook_set(args: argparse.Namespace) -> None:
    _, secret = _change(args.slug, {"webhook_url": args.url})
    print(f"webhooks for {args.slug} go to {args.url}")
    if args.url.startswith("http://"):  # accepted only on a loopback host
        print("  (http on a loopback host: only test-mode events are sent there)")
    if secret is not None:
        print(f"signing secret (shown once):\n  {secret}")


def cmd_webhook_rotate(args: argparse.Namespace) -> None:
    from payments.accounts import get_project_by_slug
    from payments.outbox import WEBHOOK_SECRET_PURPOSE
    from payments.projects import rotate_webhook_secret

    services = services_from_env()
    with services.db.transaction() as tx:
        secret = rotate_webhook_secret(
            tx,
            get_project_by_slug(tx, args.slug),
            actor=CLI_ACTOR,
            now=services.clock(),
            sealer=services.sealer(WEBHOOK_SECRET_PURPOSE),
        )
    print(f"new signing secret for {args.slug} (shown once; the old one stops working now):")
    print(f"  {secret}")


def _webhook_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    webhook = sub.add_parser("webhook", help="merchant webhooks").add_subparsers(required=True)
    webhook_set = webhook.add_parser(
        "set",
        help="set the URL (prints a secret the first time)",
        description="https:// only; http:// only on a loopback host, for test-mode events.",
    )
    webhook_set.add_argument("slug")
    webhook_set.add_argument("url")
    webhook_set.set_defaults(func=cmd_webhook_set)
    rotate = webhook.add_parser("rotate-secret", help="replace the signing secret (printed once)")
    rotate.add_argument("slug")
    rotate.set_defaults(func=cmd_webhook_rotate)


def _worker_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run gateway calls queued in Redis (needs REDIS_URL)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.set_defaults(func=cmd_worker)


def cmd_call(args: argparse.Namespace) -> None:
    """Reads the environment itself, not Settings: pydantic would double its start-up time."""
    from ivr.phone import (
        Keypad,
        Phone,
        PhoneError,
        ScriptedKeypad,
        TerminalKeypad,
        dial_target,
        http_transport,
    )

    env = os.environ
    token_variable = SECRET_VARIABLES["twilio_auth_token"]
    token, token_from = env.get(token_variable), token_variable
    if not token:
        path = local_secrets_path(env.get(HOME_VARIABLE))
        token, token_from = read_local_secrets(path).get("twilio_auth_token"), str(path)
    if not token:
        raise CommandError(
            f"no {token_variable} and no {token_from} yet: `paydial serve` creates that file on "
            f"first start; or set {token_variable} (and {HOME_VARIABLE}) as the server has them"
        )
    from_, to, extra = dial_target(
        args.target,
        env.get("PAYDIAL_SIP_DOMAIN", DEFAULT_SIP_DOMAIN),
        env.get("PAYDIAL_PHONE_NUMBER", DEFAULT_PHONE_NUMBER),
    )
    public_url = args.public_url or env.get("PAYDIAL_PUBLIC_URL", args.server)
    phone = Phone(
        http_transport(args.server),
        auth_token=token,
        public_url=public_url,
        from_=from_,
        to=to,
        extra=extra,
    )
    keypad: Keypad = (
        ScriptedKeypad.from_digits(args.digits, print)
        if args.digits is not None
        else TerminalKeypad()
    )
    try:
        result = phone.call(keypad)
    except PhoneError as error:
        if error.status == 403:
            raise CommandError(
                "the server refused the call's Twilio signature (403): it uses different secrets. "
                f"This call signed {public_url} with the token from {token_from}; run it with the "
                f"server's {token_variable}, or the same {HOME_VARIABLE} as `paydial serve` "
                "(unset: both use the per-user data directory), and --public-url when the server "
                "sets PAYDIAL_PUBLIC_URL"
            ) from None
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(
            f"{args.server} cannot be reached ({error}); is the server running?"
        ) from None
    print(f"[call ended; session status: {result.status or 'unknown'}]")
    if not result.succeeded:
        raise CommandError(f"no successful payment (status: {result.status or 'unknown'})")


def _call_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    call = sub.add_parser(
        "call", help="a phone in the terminal: play Twilio's part against a running server"
    )
    call.add_argument(
        "target",
        metavar="SESSION_ID_OR_PHONE",
        help="a session id (calls its SIP URI) or an E.164 caller ID",
    )
    call.add_argument(
        "--server",
        default=DEFAULT_PUBLIC_URL,
        help=f"where the server listens (default: {DEFAULT_PUBLIC_URL})",
    )
    call.add_argument(
        "--public-url",
        default=None,
        help="the server's PAYDIAL_PUBLIC_URL, signed like Twilio (default: "
        "$PAYDIAL_PUBLIC_URL, else the --server URL)",
    )
    call.add_argument(
        "--digits",
        default=None,
        help='run unattended, e.g. "4242424242424242#1230#123#1"; exit 0 on success',
    )
    call.set_defaults(func=cmd_call)


REGISTRARS: list[Registrar] = [
    _core_commands,
    _call_command,
    _worker_command,
    _webhook_commands,
    add_integration_commands,
]


class LazyHelpParser(argparse.ArgumentParser):
    """A parser whose `describe` writes its description only when help is shown, so building the
    parser imports nothing heavy (subparsers are made of the same class)."""

    describe: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.describe is not None:
            self.description = self.describe()
        return super().format_help()


def _settings_keys_help() -> str:
    from payments.project_settings import KEYS_HELP

    return KEYS_HELP


def build_parser() -> argparse.ArgumentParser:
    parser = LazyHelpParser(prog="paydial", description=__doc__)
    # Registrars take any ArgumentParser's subcommands; these make LazyHelpParsers all the way down.
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(required=True, metavar="COMMAND"),
    )
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as error:
        return _operator_error(error)
    finally:
        if services_from_env.cache_info().currsize:
            services_from_env().db.dispose()
            services_from_env.cache_clear()
    return 0


def _operator_error(error: Exception) -> int:
    """One line on stderr for what the operator can fix; anything else is a bug: re-raise."""
    from payments.errors import PaydialError

    if isinstance(error, MissingSecrets):
        print(f"paydial: {error}", file=sys.stderr)
        return MISSING_SECRETS_STATUS
    # A pydantic ValidationError (a bad setting or value) can only come from a loaded pydantic;
    # importing it just to test would double the start-up time of `paydial call`.
    pydantic = sys.modules.get("pydantic")
    invalid = (pydantic.ValidationError,) if pydantic is not None else ()
    if isinstance(error, (CommandError, PaydialError, *invalid)):
        print(f"paydial: {error}", file=sys.stderr)
        return 1
    raise error


if __name__ == "__main__":
    sys.exit(main())
