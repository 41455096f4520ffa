"""How views reach the process's services (set up once by create_app); the key lives in the core,
whose Twilio blueprint reads it too."""

from __future__ import annotations

from ivr.extension import EXTENSION as EXTENSION  # re-exported: create_app and limits use it
from ivr.extension import current_services as current_services  # re-exported: the views use it
