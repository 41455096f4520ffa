"""Payment gateway adapters: one dict picks the adapter, `build_gateway` is the only way in.

Its error tree is drawn in base.py, beside the errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from gateways.authorizenet import AuthorizeNetGateway
from gateways.base import GatewayAdapter, GatewayConfigurationError, PaymentGateway
from gateways.braintree import BraintreeGateway
from gateways.shift4 import Shift4Gateway
from gateways.simulator import SimulatorGateway
from gateways.stripe import StripeGateway

GATEWAYS: dict[str, type[GatewayAdapter]] = {
    "stripe": StripeGateway,
    "authorizenet": AuthorizeNetGateway,
    "braintree": BraintreeGateway,
    "shift4": Shift4Gateway,
}


def required_credentials(name: str) -> tuple[str, ...]:
    """The keys `paydial gateway set` must receive before it stores credentials."""
    try:
        return tuple(GATEWAYS[name].required_credentials)
    except KeyError:
        raise GatewayConfigurationError(f"unknown gateway {name!r}") from None


def build_gateway(
    name: str,
    credentials: Mapping[str, str] | None,
    *,
    environment: Literal["test", "live"],
    timeout: float = 10.0,
) -> PaymentGateway:
    """The adapter for a project's gateway; test mode without credentials gets the simulator."""
    if name not in GATEWAYS:
        raise GatewayConfigurationError(f"unknown gateway {name!r}")
    if credentials is None:
        if environment == "test":
            return SimulatorGateway(name)
        raise GatewayConfigurationError(f"no live credentials configured for {name}")
    gateway: PaymentGateway = GATEWAYS[name].from_credentials(
        credentials, timeout=timeout, environment=environment
    )
    return gateway
