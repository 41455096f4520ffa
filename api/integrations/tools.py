"""The payment tools an AI agent calls, shared by the MCP server, Retell and Vapi.

Each tool takes a pydantic model of its arguments (the REST API's own models plus `call_id`),
calls the core functions the REST views call, and returns a JSON-ready dict. Failures are
`ToolError`s carrying the API's 422 `detail` (or its 404/409 message), for the transport to
render as a tool result the model can read.

Retry-safe creation: an agent platform retries tool calls (and models repeat themselves), so
the session a create tool opens is remembered under a key derived here, never by the caller:
(account, mode, kind, `call_id`). The same arguments again return the same session; other
arguments with that `call_id` are an error naming `call_id`. The remembered row is written in
the transaction that opens the session, so two concurrent calls cannot both open one: the
loser's insert fails on the unique key, its session rolls back, and it answers from the row
the winner committed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Tx

from api.errors import wire_errors
from api.schemas import CreateWidgetSession, SessionCreate, e164
from api.sessions import chat_created, chat_session, voice_created, voice_session
from payments.accounts import Caller
from payments.errors import Conflict, InvalidInput, NotFound
from payments.integrations import IntegrationAccess
from payments.services import Services
from payments.sessions import (
    NewSession,
    cancel_session,
    create_session,
    find_session_for_caller,
    load_session,
)
from payments.store import IdempotencyRecord, PaymentSession, Project
from payments.views import session_out

CALL_ID = Field(
    min_length=1,
    max_length=128,
    description="Your platform's id of the live call or chat (e.g. Retell call_id, Vapi call.id, "
    "Twilio CallSid). Send the same call_id when you retry: the same call never gets a "
    "second session.",
)


class CreatePaymentSessionArgs(SessionCreate):
    call_id: str = CALL_ID


class CreateChatPaymentSessionArgs(CreateWidgetSession):
    call_id: str = CALL_ID


class SessionIdArgs(BaseModel):
    session_id: str = Field(min_length=1, max_length=64, description="The session_id to act on")


class CallerArgs(BaseModel):
    caller: Annotated[str, AfterValidator(e164)] = Field(
        description="The caller's phone number in E.164 format, e.g. +14155550100"
    )


class ToolError(Exception):
    """A tool failed in a way the model should read: `detail` as the REST API would answer."""

    def __init__(self, detail: list[dict[str, Any]] | str) -> None:
        super().__init__("tool failed")
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}


Run = Callable[[Services, Caller, Any], dict[str, Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: type[BaseModel]
    run: Run

    def input_schema(self) -> dict[str, Any]:
        return self.arguments.model_json_schema()

    def call(self, services: Services, caller: Caller, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validate `arguments` and run the tool; every failure is a ToolError."""
        try:
            parsed = self.arguments.model_validate(arguments)
            return self.run(services, caller, parsed)
        except ValidationError as error:
            raise ToolError(wire_errors(error.errors(), ())) from None
        except InvalidInput as error:
            loc = [part for part in error.loc if part != "body"]
            raise ToolError([{"loc": loc, "msg": error.message, "type": error.kind}]) from None
        except (NotFound, Conflict) as error:
            raise ToolError(str(error)) from None


def _remembered_key(caller: Caller, kind: str, call_id: str) -> str:
    return f"{caller.environment.value}:agent-{kind}:{call_id}"


def _arguments_digest(arguments: BaseModel) -> str:
    canonical = json.dumps(arguments.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _remembered_session(tx: Tx, caller: Caller, key: str, digest: str) -> str | None:
    record = tx.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.account_id == caller.account_id, IdempotencyRecord.key == key
        )
    )
    if record is None or record.body is None:
        return None
    if record.request_hash != digest:
        raise InvalidInput(
            ("call_id",),
            "This call_id already has a payment session made with different arguments. "
            "Repeat the original arguments to get that session, or cancel it and use a new "
            "call_id for a different payment.",
            "call_id_reused",
        )
    session_id: str = json.loads(record.body)["session_id"]
    return session_id


def open_for_call(
    services: Services,
    caller: Caller,
    kind: str,
    call_id: str,
    arguments: BaseModel,
    new: NewSession,
) -> PaymentSession:
    """The session for this call: opened once, then the same one for every retry."""
    key = _remembered_key(caller, kind, call_id)
    digest = _arguments_digest(arguments)
    for _ in range(2):  # the second pass reads the row a concurrent winner committed
        try:
            with services.db.transaction() as tx:
                now = services.clock()
                known = _remembered_session(tx, caller, key, digest)
                if known is not None:
                    return load_session(
                        tx,
                        known,
                        now=now,
                        account_id=caller.account_id,
                        environment=caller.environment,
                    )
                session = create_session(
                    tx,
                    account_id=caller.account_id,
                    environment=caller.environment,
                    new=new,
                    now=now,
                )
                tx.add(
                    IdempotencyRecord(
                        account_id=caller.account_id,
                        key=key,
                        request_hash=digest,
                        status_code=201,
                        body=json.dumps({"session_id": session.id}),
                        created_at=now,
                    )
                )
                tx.flush()
                return session
        except IntegrityError:
            continue
    raise Conflict("Another request for this call_id is still being processed; retry shortly")


def _session_view(session: PaymentSession, tx: Tx) -> dict[str, Any]:
    return session_out(session, tx.get_one(Project, session.project_id)).model_dump(mode="json")


def create_payment_session(
    services: Services, caller: Caller, args: CreatePaymentSessionArgs
) -> dict[str, Any]:
    settings = services.settings
    session = open_for_call(
        services, caller, "voice", args.call_id, args, voice_session(args, settings)
    )
    created = voice_created(session, settings).model_dump(mode="json")
    return {
        **created,
        "transfer_number": created["phone_number"],
        "transfer_headers": {"X-Paydial-Session": session.id},
        "next_step": (
            "Tell the caller you are transferring them to a secure line to pay by keypad, "
            f"then transfer the call to {created['sip_uri']} with the SIP header "
            f"X-Paydial-Session: {session.id} (or to {created['phone_number']}; the caller is "
            f"matched by their number, or keys access code {created['access_code']}). "
            "Never ask for or repeat card details yourself."
        ),
    }


def create_chat_payment_session(
    services: Services, caller: Caller, args: CreateChatPaymentSessionArgs
) -> dict[str, Any]:
    settings = services.settings
    session = open_for_call(
        services, caller, "chat", args.call_id, args, chat_session(args, settings)
    )
    created = chat_created(session, settings).model_dump(mode="json")
    return {
        **created,
        "next_step": (
            f"Show the user the secure card form at {created['widget_url']} (or mount the "
            "widget with this session_id). Never ask for card details in the chat."
        ),
    }


def get_payment_session(services: Services, caller: Caller, args: SessionIdArgs) -> dict[str, Any]:
    with services.db.transaction() as tx:
        session = load_session(
            tx,
            args.session_id,
            now=services.clock(),
            account_id=caller.account_id,
            environment=caller.environment,
        )
        return _session_view(session, tx)


def find_payment_session_by_caller(
    services: Services, caller: Caller, args: CallerArgs
) -> dict[str, Any]:
    with services.db.transaction() as tx:
        session = find_session_for_caller(
            tx,
            account_id=caller.account_id,
            environment=caller.environment,
            caller=args.caller,
            now=services.clock(),
        )
        return _session_view(session, tx)


def cancel_payment_session(
    services: Services, caller: Caller, args: SessionIdArgs
) -> dict[str, Any]:
    with services.db.transaction() as tx:
        session = cancel_session(
            tx,
            args.session_id,
            account_id=caller.account_id,
            environment=caller.environment,
            now=services.clock(),
        )
        return _session_view(session, tx)


_RESULT = (
    " The result's `status` is one of pending, collecting, payment-success, "
    "payment-authorized, payment-failed, expired, cancelled, abandoned; `is_terminal` tells "
    "whether it can still change. Card brand and last 4 digits are the only card data returned."
)

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "create_payment_session",
            "Start a card payment by phone for the caller on this call. Use it when the caller "
            "agrees to pay. Then tell the caller they are being transferred to a secure keypad "
            "line, and transfer the call to the returned `sip_uri` with the SIP header "
            "X-Paydial-Session set to `session_id` (or dial `phone_number`). Never ask the "
            "caller to say card digits, and never repeat them. When the call comes back "
            "(to `callback`) or later, read the outcome with get_payment_session. Calling this "
            "again with the same call_id and arguments returns the same session, so retrying "
            'is safe; amounts are in dollars, e.g. "150.00".' + _RESULT,
            CreatePaymentSessionArgs,
            create_payment_session,
        ),
        Tool(
            "get_payment_session",
            "Read a payment session: its status, the amount, the card brand and last 4 digits "
            "once paid, the error when it failed, and the memory you left." + _RESULT,
            SessionIdArgs,
            get_payment_session,
        ),
        Tool(
            "find_payment_session_by_caller",
            "Find the caller's payment session by phone number: the most recent one still "
            "open, else the latest finished one. Use it when the call came back without a "
            "session id." + _RESULT,
            CallerArgs,
            find_payment_session_by_caller,
        ),
        Tool(
            "cancel_payment_session",
            "Cancel a payment session that has not finished (status pending or collecting), "
            "for example when the caller changes their mind. A finished session cannot be "
            "cancelled." + _RESULT,
            SessionIdArgs,
            cancel_payment_session,
        ),
        Tool(
            "create_chat_payment_session",
            "Start a card payment in a chat or on the web: returns a `widget_url` with a "
            "secure card form to show the user. Never ask for card details in the "
            "conversation. Retrying with the same call_id (the conversation id) and arguments "
            "returns the same session; amounts are in cents." + _RESULT,
            CreateChatPaymentSessionArgs,
            create_chat_payment_session,
        ),
    )
}


def integration_caller(access: IntegrationAccess) -> Caller:
    """A platform authenticated by the project's integration token acts for its account."""
    return Caller(
        access.project.account_id, access.environment, f"integration token of {access.project.slug}"
    )


# Maven's Retell integration names its custom function `collect_payment`.
ALIASES = {"collect_payment": "create_payment_session"}


def platform_call(
    services: Services,
    caller: Caller,
    name: str,
    arguments: dict[str, Any],
    *,
    project: str,
    call_id: str,
    from_number: str | None,
) -> dict[str, Any]:
    """Run a tool for a voice platform's function call: the project comes from the URL and the
    call id from the platform, never from the model; the caller defaults to the call's number."""
    tool = TOOLS.get(ALIASES.get(name, name))
    if tool is None:
        raise ToolError(
            [{"loc": ["name"], "msg": f"Unknown function {name!r}", "type": "unknown_tool"}]
        )
    merged = {**arguments, "project": project, "call_id": call_id}
    if from_number and "caller" not in arguments:
        merged["caller"] = from_number
    return tool.call(services, caller, merged)
