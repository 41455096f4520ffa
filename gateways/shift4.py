"""Shift4 through its official SDK: charges with an Idempotency-Key, customers to tokenize.

The SDK reads its key and URL from module globals and posts without a timeout, so every call here
sets both under one module lock and goes through a `requests` shim that adds our timeout. The SDK
reads both into the request before sending, so the shim lets go of the lock while the request is
on the wire (the key is passed by value): many threads' calls wait on the network together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import requests
import shift4
import shift4.resource

from gateways._http import TimeoutRequests, scrub, status_error, transport_error
from gateways.base import (
    CardDeclined,
    DeclineReason,
    GatewayConfigurationError,
    GatewayError,
    GatewayOutcomeUnknown,
    LookUp,
    NotVoidable,
    PaymentRequest,
    PaymentResult,
    ReversalKind,
    ReversalResult,
    processor_fields,
    require,
)

DEFAULT_API_BASE = "https://api.shift4.com"
METADATA_KEY = "paydial_idempotency_key"
RECONCILE_PAGE = 100
_SDK_LOCK = threading.Lock()
_TRANSPORT = TimeoutRequests()
_installed = False

_REASONS: dict[str, DeclineReason] = {
    "insufficient_funds": "insufficient_funds",
    "limit_exceeded": "insufficient_funds",
    "expired_card": "expired_card",
    "invalid_expiry_month": "expired_card",
    "invalid_expiry_year": "expired_card",
    "incorrect_cvc": "incorrect_cvc",
    "invalid_cvc": "incorrect_cvc",
    "incorrect_zip": "incorrect_zip",
    "invalid_number": "invalid_number",
    "processing_error": "processing_error",
}


def _install_transport() -> None:
    global _installed
    if not _installed:
        shift4.resource.requests = _TRANSPORT
        _installed = True


def _decline(code: str | None, message: str | None) -> CardDeclined:
    return CardDeclined(
        _REASONS.get(code or "", "card_declined"),
        scrub(message) or "The card was declined.",
        processor_code=code,
    )


class Shift4Gateway:
    """One credential set; thread-safe because the SDK's globals are only touched under the lock."""

    name = "shift4"
    required_credentials: ClassVar[tuple[str, ...]] = ("secret_key",)

    def __init__(self, *, secret_key: str, api_base: str = DEFAULT_API_BASE, timeout: float = 10.0):
        self._secret_key = secret_key
        self.api_base = api_base
        self._timeout = timeout
        with _SDK_LOCK:
            _install_transport()

    def __repr__(self) -> str:
        return f"Shift4Gateway(api_base={self.api_base!r})"

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, str], *, timeout: float, environment: str = "test"
    ) -> Shift4Gateway:
        (secret_key,) = require(credentials, *cls.required_credentials)
        return cls(
            secret_key=secret_key,
            api_base=credentials.get("api_base") or DEFAULT_API_BASE,
            timeout=timeout,
        )

    def charge(self, request: PaymentRequest) -> PaymentResult:
        return self._charge(request, captured=True)

    def authorize(self, request: PaymentRequest) -> PaymentResult:
        """A charge with `captured: false`: `capture` captures it, `void` releases it."""
        return self._charge(request, captured=False)

    def _charge(self, request: PaymentRequest, *, captured: bool) -> PaymentResult:
        params: dict[str, Any] = {
            "amount": request.amount_cents,
            "currency": request.currency.upper(),
            "card": self._card(request),
            "captured": captured,
            "metadata": self._metadata(request),
        }
        if request.description:
            params["description"] = request.description
        charge = self._call(
            lambda: shift4.charges.create(
                params, request_options={"idempotency_key": request.idempotency_key}
            )
        )
        return self._charge_result(request.as_look_up(), charge)

    def tokenize(self, request: PaymentRequest) -> PaymentResult:
        params: dict[str, Any] = {"card": self._card(request), "metadata": self._metadata(request)}
        if request.description:
            params["description"] = request.description
        customer = self._call(
            lambda: shift4.customers.create(
                params, request_options={"idempotency_key": request.idempotency_key}
            )
        )
        return self._tokenized(request.as_look_up(), customer)

    def reconcile(self, look_up: LookUp) -> PaymentResult | None:
        """Find our charge or customer by the key in its metadata, paging through all of them."""
        charge = self._find_tagged(shift4.charges.list, look_up.idempotency_key)
        if charge is not None:
            return self._charge_result(look_up, charge)
        customer = self._find_tagged(shift4.customers.list, look_up.idempotency_key)
        return None if customer is None else self._tokenized(look_up, customer)

    def _find_tagged(
        self, listing: Callable[[dict[str, Any]], Any], key: str
    ) -> dict[str, Any] | None:
        """Newest first, a page at a time (https://dev.shift4.com/docs/api#pagination)."""
        params: dict[str, Any] = {"limit": RECONCILE_PAGE}
        while True:
            page = self._call(lambda: listing(dict(params)))
            items = page.get("list") or []
            for item in items:
                if (item.get("metadata") or {}).get(METADATA_KEY) == key:
                    return dict(item)
            if not page.get("hasMore") or not items:
                return None
            params["startingAfterId"] = items[-1]["id"]

    def void(self, reference: str, *, idempotency_key: str) -> ReversalResult:
        """Shift4 has no void: refunding an uncaptured charge releases it, a captured one not."""
        charge = self._call(lambda: shift4.charges.get(reference))
        if charge.get("captured", True):
            raise NotVoidable("shift4 cannot void a captured charge; refund it")
        self._refund(reference, None, idempotency_key)
        return ReversalResult("void", reference, None)

    def check_refundable(self, reference: str) -> None:
        """Shift4 refunds a charge as soon as it is captured: nothing to ask."""

    def refund(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        refund_id = self._refund(reference, amount_cents, idempotency_key)
        return ReversalResult("refund", reference, refund_id, amount_cents)

    def capture(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        """POST /charges/{id}/capture captures the whole authorization (the API takes no amount:
        https://dev.shift4.com/docs/api#charge-capture), so the core asks for all of it."""
        charge = self._call(
            lambda: shift4.charges.capture(
                reference, request_options={"idempotency_key": idempotency_key}
            )
        )
        if not charge.get("captured"):
            raise GatewayOutcomeUnknown("shift4 answered the capture with an uncaptured charge")
        return ReversalResult("capture", reference, reference, int(charge["amount"]))

    def find_reversal(
        self, kind: ReversalKind, reference: str, *, idempotency_key: str
    ) -> ReversalResult | None:
        """The charge tells all: its refunds (ours carry the key in metadata) and `captured`."""
        charge = self._call(lambda: shift4.charges.get(reference))
        if kind == "refund":
            for refund in charge.get("refunds") or []:
                if (refund.get("metadata") or {}).get(METADATA_KEY) == idempotency_key:
                    return ReversalResult("refund", reference, refund.get("id"), refund["amount"])
            return None
        if kind == "capture" and charge.get("captured"):
            return ReversalResult("capture", reference, reference, int(charge["amount"]))
        if kind == "void" and not charge.get("captured") and charge.get("refunded"):
            return ReversalResult("void", reference, None)
        return None

    def _refund(self, reference: str, amount_cents: int | None, idempotency_key: str) -> str | None:
        """POST /charges/{id}/refund; the answer is the charge with its refunds, newest last."""
        params: dict[str, Any] = {"metadata": {METADATA_KEY: idempotency_key}}
        if amount_cents is not None:
            params["amount"] = amount_cents
        charge = self._call(
            lambda: shift4.charges.refund(
                reference, params, request_options={"idempotency_key": idempotency_key}
            )
        )
        refunds = charge.get("refunds") or []
        return str(refunds[-1]["id"]) if refunds and refunds[-1].get("id") else None

    def _card(self, request: PaymentRequest) -> dict[str, Any]:
        card = request.card
        params: dict[str, Any] = {
            "number": card.number,
            "expMonth": f"{card.exp_month:02d}",
            "expYear": f"{card.exp_year:04d}",
            "cvc": card.cvc,
        }
        if request.billing_address is not None:
            a = request.billing_address
            params |= {
                "addressLine1": a.street,
                "addressCity": a.city,
                "addressState": a.state,
                "addressCountry": a.country,
            }
            name = a.full_name
            if name:
                params["cardholderName"] = name
        if request.zip_code:
            params["addressZip"] = request.zip_code
        return params

    def _metadata(self, request: PaymentRequest) -> dict[str, str]:
        metadata = {METADATA_KEY: request.idempotency_key}
        if request.session_id:
            metadata["paydial_session_id"] = request.session_id
        return metadata

    def _charge_result(self, look_up: LookUp, charge: Mapping[str, Any]) -> PaymentResult:
        status = charge.get("status")
        if status == "failed":
            raise _decline(charge.get("failureCode"), charge.get("failureMessage"))
        if status != "successful" or not charge.get("id"):
            raise GatewayOutcomeUnknown(f"shift4 charge is {status!r}", processor_code=str(status))
        return PaymentResult(
            "captured" if charge.get("captured", True) else "authorized",
            charge["id"],
            look_up.card_brand,
            look_up.card_last4,
            processor_fields("shift4", shift4_charge_id=charge["id"]),
        )

    def _tokenized(self, look_up: LookUp, customer: Mapping[str, Any]) -> PaymentResult:
        if not customer.get("id"):
            raise GatewayOutcomeUnknown("shift4 answered without a customer id")
        return PaymentResult(
            "tokenized",
            None,
            look_up.card_brand,
            look_up.card_last4,
            processor_fields(
                "shift4",
                shift4_customer_id=customer["id"],
                shift4_card_id=customer.get("defaultCardId"),
            ),
        )

    def _call(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """One SDK call with our key, URL and timeout in its globals; errors become the tree."""
        with _SDK_LOCK, _TRANSPORT.call(self._timeout, unlocked=_SDK_LOCK):
            shift4.secret_key = self._secret_key
            shift4.api_url = self.api_base
            try:
                answer = fn()
            except Exception as exc:
                error = _translate(exc, _TRANSPORT.last_status)
            else:
                if isinstance(answer, dict):
                    return answer
                error = GatewayOutcomeUnknown("shift4 sent an unexpected answer")
            finally:
                shift4.secret_key = None
        raise error


def _translate(exc: Exception, status: int | None) -> GatewayError:
    if isinstance(exc, shift4.Shift4Exception):
        if exc.type == "card_error":
            return _decline(exc.code, exc.message)
        if status is not None and (status in (401, 403) or status >= 429):
            return status_error(status, "shift4", processor_code=exc.code)
        return GatewayConfigurationError(
            f"shift4 rejected the request: {scrub(exc.message)}", processor_code=exc.code
        )
    if isinstance(exc, requests.JSONDecodeError) and status is not None and status >= 400:
        return status_error(status, "shift4")
    if isinstance(exc, requests.RequestException) and not isinstance(exc, requests.JSONDecodeError):
        return transport_error(exc, "shift4")
    return GatewayOutcomeUnknown(f"shift4 sent an unreadable answer ({type(exc).__name__})")
