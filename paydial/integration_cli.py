"""`paydial integration …` (agent-platform tokens, Retell key) and `paydial mcp` (stdio MCP).

Like paydial/cli.py, each command imports the core only when it runs.
"""

from __future__ import annotations

import argparse

from paydial.command import CommandError, services_from_env

MODES = ("test", "live")  # payments.model.Environment


def cmd_integration_token(args: argparse.Namespace) -> None:
    from payments.integrations import issue_integration_token
    from payments.model import Environment

    services = services_from_env()
    with services.db.transaction() as tx:
        token = issue_integration_token(tx, args.slug, Environment(args.mode), now=services.clock())
    print(token)


def cmd_retell_key(args: argparse.Namespace) -> None:
    from payments.integrations import RETELL_KEY_PURPOSE, set_retell_key
    from payments.model import Environment

    services = services_from_env()
    with services.db.transaction() as tx:
        set_retell_key(
            tx,
            args.slug,
            Environment(args.mode),
            args.api_key,
            sealer=services.sealer(RETELL_KEY_PURPOSE),
            now=services.clock(),
        )
    print(f"Retell requests to {args.slug} ({args.mode}) must now carry X-Retell-Signature")


def cmd_mcp(args: argparse.Namespace) -> None:
    from api.integrations.mcp_server import serve_stdio
    from payments.accounts import authenticate

    services = services_from_env()
    with services.db.transaction() as tx:
        caller = authenticate(tx, args.key)
        if caller is None:
            raise CommandError("invalid or revoked API key")
    serve_stdio(services, caller)


def add_integration_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    integration = sub.add_parser(
        "integration", help="AI voice agent platforms (Retell, Vapi)"
    ).add_subparsers(required=True)
    token = integration.add_parser(
        "token", help="print a new integration token (whk_…) for SLUG; the old one stops working"
    )
    token.add_argument("slug")
    token.add_argument("--mode", choices=MODES, required=True)
    token.set_defaults(func=cmd_integration_token)
    retell = integration.add_parser(
        "retell-key", help="store the Retell API key that signs X-Retell-Signature (sealed)"
    )
    retell.add_argument("slug")
    retell.add_argument("api_key")
    retell.add_argument("--mode", choices=MODES, required=True)
    retell.set_defaults(func=cmd_retell_key)

    mcp = sub.add_parser("mcp", help="serve the MCP payment tools on stdin/stdout")
    mcp.add_argument("--key", required=True, help="the API key (mvn_test_… or mvn_live_…)")
    mcp.set_defaults(func=cmd_mcp)
