"""The bare endpoint `bench/calls.py` compares Paydial's webhooks with: a static <Gather>.

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

app = Flask(__name__)


@app.post("/twilio/<path:_step>")
def twiml(_step: str) -> Response:
    return Response(GATHER, mimetype="text/xml")


@app.get("/health")
def health() -> Response:
    return Response('{"status": "ok"}', mimetype="application/json")
