"""The core: sessions, payment attempts, accounts, settings, store, crypto, velocity,
reconciliation, the merchant-webhook outbox and its delivery, jobs and sweeps. No Flask.

Its error tree is drawn in errors.py.
"""
