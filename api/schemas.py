"""Request and response bodies of the merchant API; seed request models match field for field."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ivr.transfer import MAX_SIP_CALLBACK_LENGTH
from payments.model import Environment, Gateway, PaymentMode, Status
from payments.project_settings import ProjectChanges as ProjectChanges  # the PATCH body
from payments.views import OperationOut as OperationOut  # re-exported: the API contract
from payments.views import RefundOut as RefundOut
from payments.views import SessionGetResponse as SessionGetResponse
from payments.views import SessionWebhook as SessionWebhook

AMOUNT_PATTERN = r"^(?!^[-+.]*$)[+-]?0*\d*\.?\d*$"
MAX_AMOUNT = Decimal("1000000.00")
MAX_AMOUNT_CENTS = int(MAX_AMOUNT * 100)
MAX_MEMORY_CHARS = 20_000
# sip:user@host[:port][;params][?headers] (RFC 3261 section 19.1.1), stricter where Twilio turns the
# URI into an INVITE: no "?" or "&" in the user part or the parameters, so nothing before the
# merchant's own headers can pass for a header (an unsigned X-Paydial-* look-alike).
_SIP_USER = r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9\-_.!~*'()+$,;=/])"
_SIP_HEADER = r"[A-Za-z0-9\-]+=(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9\-_.!~*'()+:/$\[\]])*"
SIP_URI = re.compile(
    rf"^sips?:{_SIP_USER}+@[A-Za-z0-9][A-Za-z0-9.\-]*(:\d{{1,5}})?(;[^\s<>\"?&]*)?"
    rf"(\?{_SIP_HEADER}(&{_SIP_HEADER})*)?$"
)
# Headers Twilio passes on from a <Sip> URI: X-* and these (https://www.twilio.com/docs/voice/twiml/sip).
SIP_PLAIN_HEADERS = frozenset(
    {"user-to-user", "remote-party-id", "p-preferred-identity", "p-called-party-id"}
)
MAX_DESCRIPTION_CHARS = 500
E164_PATTERN = r"^\+[1-9]\d{1,14}$"
E164_EXAMPLE = "+14155550100"
CALLBACK_PATTERN = f"(?:{E164_PATTERN})|(?:{SIP_URI.pattern})"
MAX_CALLBACK_CHARS = 256
SESSION_STATUS_SCHEMA = {"type": "string", "enum": [status.value for status in Status]}
# Numbers that bill the dialler extra: a transfer to one would be toll fraud on our account.
TOLL_FRAUD_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.UAN,
    }
)


def _parse_amount(value: Any) -> Decimal:
    """A number or the seed's decimal string, at most 2 places, never negative, never huge."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PydanticCustomError("amount_type", "Amount must be a number or a decimal string")
    if isinstance(value, str) and not re.match(AMOUNT_PATTERN, value):
        raise PydanticCustomError(
            "string_pattern_mismatch",
            "String should match pattern '{pattern}'",
            {"pattern": AMOUNT_PATTERN},
        )
    amount = Decimal(str(value))  # the pattern above admits only plain decimals
    if not amount.is_finite():
        raise PydanticCustomError("finite_number", "Amount must be a finite number")
    if amount < 0:
        raise PydanticCustomError(
            "greater_than_equal", "Input should be greater than or equal to 0", {"ge": 0}
        )
    if amount > MAX_AMOUNT:
        raise PydanticCustomError(
            "less_than_equal", "Amount must be at most {le}", {"le": str(MAX_AMOUNT)}
        )
    cents = amount.quantize(Decimal("0.01"))
    if amount != cents:
        raise PydanticCustomError("decimal_max_places", "Amount must have at most 2 decimal places")
    return cents


def e164(value: str) -> str:
    invalid = PydanticCustomError(
        "phone_number",
        "Value is not a valid E.164 phone number, e.g. {example}",
        {"example": E164_EXAMPLE},
    )
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise invalid from None
    if not phonenumbers.is_valid_number(number):
        raise invalid
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if formatted != value:
        raise PydanticCustomError(
            "phone_number",
            "Phone number must be in E.164 format, e.g. {example}",
            {"example": formatted},
        )
    return formatted


def _callback(value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith(("sip:", "sips:")):
        return _sip_callback(value)
    if value.startswith("+"):
        number = e164(value)
        if phonenumbers.number_type(phonenumbers.parse(number)) in TOLL_FRAUD_TYPES:
            raise PydanticCustomError(
                "callback_number_type",
                "Callback must not be a premium-rate, shared-cost or universal access number",
            )
        return number
    raise PydanticCustomError(
        "callback", "Callback must be an E.164 phone number or a sip:/sips: URI"
    )


def _sip_callback(value: str) -> str:
    """A SIP callback that Twilio can dial with Paydial's signed headers after its own."""
    if not SIP_URI.match(value):
        raise PydanticCustomError(
            "sip_uri", "Value is not a valid SIP URI (sip:user@host[;params][?X-Name=value])"
        )
    if len(value) > MAX_SIP_CALLBACK_LENGTH:
        raise PydanticCustomError(
            "sip_uri_too_long",
            "A SIP callback may have at most {max_length} characters, so that the transfer URI "
            "with Paydial's headers stays under Twilio's 255-character limit",
            {"max_length": MAX_SIP_CALLBACK_LENGTH},
        )
    _, _, headers = value.partition("?")
    for header in filter(None, headers.split("&")):
        name = header.partition("=")[0].lower()
        if name.startswith("x-paydial-"):
            raise PydanticCustomError(
                "sip_header_reserved", "A SIP callback must not carry X-Paydial-* headers"
            )
        if not name.startswith("x-") and name not in SIP_PLAIN_HEADERS:
            raise PydanticCustomError(
                "sip_header_name",
                "SIP callback headers must start with X- (or be User-to-User, Remote-Party-ID, "
                "P-Preferred-Identity or P-Called-Party-ID)",
            )
    return value


def _known_gateway(value: str) -> str:
    """The widget seed types gateway as a free string; only the four gateways are accepted."""
    if value not in {g.value for g in Gateway}:
        raise PydanticCustomError(
            "enum", "Input should be 'stripe', 'authorizenet', 'braintree' or 'shift4'"
        )
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": int(MAX_AMOUNT)},
                {"type": "string", "pattern": AMOUNT_PATTERN},
            ],
            "title": "Amount",
            "description": "Amount in dollars (e.g. 150.00; must be > 0 for charge mode)",
        }
    ),
]


class BillingAddress(BaseModel):
    """Cardholder billing address for AVS, sent to the session's gateway. Always pass the
    cardholder's billing address (the one on file with the card issuer), not shipping: AVS only
    matches against billing."""

    street: str = Field(
        min_length=1, max_length=60, title="Street", description="Street address line 1"
    )
    city: str = Field(min_length=1, max_length=40, title="City", description="City")
    state: str = Field(
        min_length=2,
        max_length=40,
        title="State",
        description="State / region (2-letter code for US)",
    )
    zip: str = Field(
        min_length=3, max_length=20, title="Zip", description="Postal code (5 or 9 digits for US)"
    )
    country: str | None = Field(
        "US",
        min_length=2,
        max_length=60,
        title="Country",
        description="ISO-3166-1 alpha-2 country code; defaults to US",
    )
    first_name: str | None = Field(
        None,
        max_length=50,
        title="First Name",
        description="Cardholder first name; falls back to value collected during card capture",
    )
    last_name: str | None = Field(
        None,
        max_length=50,
        title="Last Name",
        description="Cardholder last name; falls back to value collected during card capture",
    )


class SessionCreate(BaseModel):
    """Request to create a payment session."""

    project: str = Field(title="Project", description="Project identifier (UUID or slug)")
    caller: Annotated[str, AfterValidator(e164)] = Field(
        title="Caller",
        description="Phone number in E.164 format",
        json_schema_extra={"pattern": E164_PATTERN},
    )
    amount: Amount
    mode: PaymentMode = Field(description="Payment mode: 'charge' or 'tokenize'")
    gateway: Gateway = Field(
        description="Payment gateway: 'stripe', 'authorizenet', 'braintree', or 'shift4'"
    )
    description: str | None = Field(
        None,
        max_length=MAX_DESCRIPTION_CHARS,
        title="Description",
        description="Charge description",
    )
    callback: Annotated[
        str | None,
        AfterValidator(_callback),
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "string",
                        "maxLength": MAX_CALLBACK_CHARS,
                        "pattern": CALLBACK_PATTERN,
                    },
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(
        None,
        max_length=MAX_CALLBACK_CHARS,
        title="Callback",
        description="Callback phone number or SIP URI for transfer-back",
    )
    memory: str | None = Field(
        None,
        max_length=MAX_MEMORY_CHARS,
        title="Memory",
        description="Call context passed back on transfer",
    )
    billing_address: BillingAddress | None = Field(
        None,
        title="Billing Address",
        description=(
            "Cardholder billing address, sent with the payment to whichever gateway the session "
            "uses (Stripe billing_details, Authorize.net billTo, Braintree billing address, Shift4 "
            "card address) so AVS can return a real match code; a ZIP the caller enters replaces "
            "`zip`. Without an address or an entered ZIP, AVS answers 'U' (unavailable)."
        ),
    )
    language: Literal["en-US", "es-US"] | None = Field(
        None,
        title="Language",
        description="Prompt language for this call; defaults to the project's (Paydial addition)",
    )

    @model_validator(mode="after")
    def _business_rules(self) -> SessionCreate:
        if self.mode is PaymentMode.CHARGE and self.amount <= 0:
            raise PydanticCustomError(
                "greater_than", "Amount must be greater than 0 for charge mode", {"gt": 0}
            )
        return self


class SessionCreateResponse(BaseModel):
    """Minimal response after creating a session."""

    session_id: str = Field(
        title="Session Id", description="Session UUID", json_schema_extra={"format": "uuid"}
    )
    status: Annotated[Status, WithJsonSchema(SESSION_STATUS_SCHEMA)] = Field(
        title="Status", description="Session status"
    )
    phone_number: str | None = Field(
        None, title="Phone Number", description="IVR phone number to call"
    )
    sip_uri: str | None = Field(
        None, title="Sip Uri", description="Twilio SIP domain for SIP calls"
    )
    created_at: datetime = Field(title="Created At", description="Creation timestamp")
    access_code: str = Field(
        title="Access Code", description="Six digits the caller can key to reach this session"
    )
    expires_at: datetime = Field(title="Expires At", description="When an unused session expires")


class CreateWidgetSession(BaseModel):
    project: str = Field(title="Project", description="Project UUID or slug")
    amount_cents: StrictInt = Field(  # `true` is not 1 cent, nor "1250" or 12.0 an amount
        ge=0,
        le=MAX_AMOUNT_CENTS,
        title="Amount Cents",
        description="Charge amount in cents. For mode='tokenize' may be 0.",
    )
    gateway: Annotated[str, AfterValidator(_known_gateway)] = Field(
        title="Gateway",
        description="stripe | authorizenet | braintree | shift4",
        json_schema_extra={"enum": [gateway.value for gateway in Gateway]},
    )
    mode: str = Field("charge", pattern=r"^(charge|tokenize)$", title="Mode")
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS, title="Description")

    @model_validator(mode="after")
    def _business_rules(self) -> CreateWidgetSession:
        if self.mode == PaymentMode.CHARGE and self.amount_cents <= 0:
            raise PydanticCustomError(
                "greater_than", "amount_cents must be greater than 0 for charge mode", {"gt": 0}
            )
        return self


def _positive(amount: Decimal | None) -> Decimal | None:
    if amount is not None and amount <= 0:
        raise PydanticCustomError("greater_than", "Amount must be greater than 0", {"gt": 0})
    return amount


PositiveAmount = Annotated[Amount, AfterValidator(_positive)]


class RefundCreate(BaseModel):
    """Refund all or part of a session's captured payment (Paydial addition)."""

    model_config = ConfigDict(extra="forbid")

    amount: PositiveAmount | None = Field(
        None, description="Dollars to refund; without it, all that is left to refund"
    )
    reason: str | None = Field(None, max_length=500, description="Kept with the refund")


class CaptureCreate(BaseModel):
    """Capture all or part of an authorized payment (Paydial addition)."""

    model_config = ConfigDict(extra="forbid")

    amount: PositiveAmount | None = Field(
        None, description="Dollars to capture, at most what was authorized; without it, all"
    )


class RefundList(BaseModel):
    data: list[RefundOut]


class WidgetSessionCreated(BaseModel):
    """The chat session: hand `session_id` to the page, or open `widget_url`."""

    session_id: str = Field(json_schema_extra={"format": "uuid"})
    status: Annotated[Status, WithJsonSchema(SESSION_STATUS_SCHEMA)]
    widget_url: str
    expires_at: datetime = Field(description="When the unused session expires (5 minutes)")


class WebhookDeliveryOut(BaseModel):
    """One attempt to deliver a webhook event (Paydial addition)."""

    id: str
    event_id: str
    event_type: str = Field(
        description="The session status the event announces, or what an event about the "
        "project itself reports (`widget-charges-paused`)"
    )
    session_id: str | None = Field(description="Null for an event about the project itself")
    attempt: int = Field(description="1 for the first send of the event, then 2, 3, ...")
    url: str
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came")
    latency_ms: int | None
    error: str | None
    created_at: datetime
    event_delivered: bool = Field(description="Whether any attempt for this event succeeded")
    next_attempt_at: datetime | None = Field(
        description="When the event is retried next; null once delivered or given up"
    )


class WebhookDeliveryList(BaseModel):
    data: list[WebhookDeliveryOut]


class AccountOut(BaseModel):
    id: str
    name: str


class AuthCheck(BaseModel):
    """The presented key is valid: its mode and its account (GET /v1/auth/check)."""

    authenticated: Literal[True] = True
    mode: Environment = Field(description="The key's mode: the `environment` of its sessions")
    key_prefix: str = Field(description="The key's public first characters")
    account: AccountOut


class ProjectSummary(BaseModel):
    id: str
    slug: str
    name: str
    display_name: str | None
    created_at: datetime


class ProjectList(BaseModel):
    data: list[ProjectSummary]


class ProjectOut(ProjectChanges):
    """A project and every setting `PATCH /v1/projects/{slug}` can change (Paydial addition)."""

    id: str
    slug: str
    name: str
    created_at: datetime
    webhook_secret_set: bool = Field(description="Whether a `whsec_` signing secret exists")
    webhook_secret: str | None = Field(
        None, description="Only in the response of the change that created the secret: shown once"
    )
    widget_charges_paused_until: datetime | None = Field(
        None,
        description="While the decline-rate breaker pauses the project's widget charges in the "
        "key's mode: when they resume",
    )


class ValidationError(BaseModel):
    loc: list[str | int] = Field(title="Location")
    msg: str = Field(title="Message")
    type: str = Field(title="Error Type")


class HTTPValidationError(BaseModel):
    detail: list[ValidationError] = Field(default_factory=list, title="Detail")


class Detail(BaseModel):
    detail: str


class ChargeRefused(Detail):
    """A widget charge refused before the gateway: by a rate limit, or by the project's decline
    breaker (`error_code: "charges_paused"` until `resume_at`)."""

    error_code: str | None = None
    resume_at: datetime | None = None


# --- the widget frame (api/widget.py) ---------------------------------------------------------


class ChargeRequest(BaseModel):
    """The frame's charge body: shapes here, card rules (which need the project) after."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, str_strip_whitespace=True)

    card_number: str = Field(pattern=r"^\d{12,19}$", repr=False)
    exp_month: int = Field(ge=1, le=12, repr=False)
    exp_year: int = Field(ge=2000, le=2099, repr=False)
    cvc: str = Field(pattern=r"^\d{3,4}$", repr=False)
    postal_code: str | None = Field(None, max_length=10, repr=False)
    cardholder_name: str | None = Field(None, max_length=100, repr=False)


class WidgetSessionOut(BaseModel):
    """What the frame (or the merchant's page) needs to render a session, and nothing more."""

    session_id: str
    status: str
    is_terminal: bool
    environment: str
    mode: str
    amount_cents: int
    currency: str
    description: str | None
    merchant_name: str
    theme: dict[str, str]
    labels: dict[str, str]
    fields: dict[str, bool]
    expires_at: datetime


class ChargeApproved(BaseModel):
    """What onSuccess hands the merchant's page."""

    transaction_id: str | None
    confirmation_code: str | None
    card_brand: str | None
    card_last4: str | None
    amount_cents: int
    currency: str
    status: str


class ChargeDeclined(BaseModel):
    """What onFailure hands the merchant's page; `attempts_remaining` > 0 offers "Try again"."""

    error_code: str | None
    error_message: str | None
    attempts_remaining: int
    status: str


class Health(BaseModel):
    status: Literal["ok"]
