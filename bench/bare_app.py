"""The bare endpoints the benches compare Paydial with: a static <Gather> for the webhooks
(`bench/calls.py`), a static 201 for the session creates (`bench/creates.py`).

Served by gunicorn with the same settings as Paydial's web process (`bench.bare_app:app`).
"""

from flask import Flask, Response

GATHER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n'
    '<Gather input="dtmf" method="POST" action="http://127.0.0.1/twilio/gather" '
    'actionOnEmptyResult="true" finishOnKey="#" timeout="6">\n'
    '<Say voice="Polly.Joanna" language="en-US">Please enter your card number, followed by the '
    "pound key.</Say>\n</Gather>\n</Response>\n"
)

SESSION = (
    '{"session_id": "00000000-0000-0000-0000-000000000000", "status": "pending", '
    '"phone_number": "+14155550100", "sip_uri": "sip:00000000-0000-0000-0000-000000000000@'
    'bench.sip.twilio.com", "created_at": "2026-01-01T00:00:00Z", "access_code": "123456", '
    '"expires_at": "2026-01-01T00:30:00Z"}'
)

app = Flask(__name__)


@app.post("/twilio/<path:_step>")
def twiml(_step: str) -> Response:
    return Response(GATHER, mimetype="text/xml")


@app.get("/health")
def health() -> Response:
    return Response('{"status": "ok"}', mimetype="application/json")


@app.post("/v1/sessions")
def session() -> Response:
    return Response(SESSION, status=201, mimetype="application/json")
