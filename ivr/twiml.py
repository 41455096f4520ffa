"""The only way TwiML is made: Jinja2 templates from ``twiml_templates/``, autoescaped.

``render_twiml(name, **ctx)`` renders ``twiml_templates/<name>.xml``. A gathering step's template
is named after its ``flow.Step`` value; the others are ``hold``, ``goodbye``, ``dial_number``,
``dial_sip`` and ``error``. Variables (a missing one is an error, never an empty attribute):

- every template: ``say`` (sentences), ``language``, ``voice`` (``flow.CallReply.context()``);
- gathering steps: ``action_url``;
- ``hold``: ``redirect_url``, ``pause`` seconds before it (0: none);
- ``dial_number``: ``number``, ``dial_action_url``; ``dial_sip``: ``sip_uri``, ``dial_action_url``;
- ``error``: optional ``number`` or ``sip_uri`` (with ``dial_action_url``), else it hangs up.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "twiml_templates"


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # merchant names, descriptions and SIP URIs carry &, < and quotes
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates ship with the code: no stat() of them per render
    )


def render_twiml(step_or_template: str, **ctx: object) -> str:
    """Render ``twiml_templates/<step_or_template>.xml`` with ``ctx``."""
    if step_or_template.startswith("_"):
        raise ValueError(f"{step_or_template!r} is a partial, not a TwiML document")
    return _environment().get_template(f"{step_or_template}.xml").render(**ctx)
