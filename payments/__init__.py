"""The core: sessions, payment attempts, accounts, settings, store, crypto, velocity,
reconciliation, the merchant-webhook outbox and its delivery, jobs and sweeps. No Flask.

Errors (api/errors.py and the TwiML error template are the only renderers):

    PaydialError (errors.py)              raised on purpose by the core
    ├── NotFound                          absent, or outside the caller's reach
    ├── Conflict                          present, but its state forbids the change
    ├── InvalidInput                      allowed by the schema, refused by the rules
    └── VelocityLimited (velocity.py)     too many failures: nothing goes to the gateway
        ├── CardLocked                    ... for this card, whoever tries it
        └── CallerLockedOut               ... for this phone number, before any card entry
    gateways.GatewayError
    └── GatewayUnavailableAfterCheck (attempts.py)  timed out; the gateway has no such payment
    DecryptionError (crypto.py)           sealed data that is not ours, or was tampered with
"""
