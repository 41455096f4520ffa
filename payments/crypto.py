"""Authenticated encryption for secrets at rest (gateway credentials) and in transit (call state).

One master secret, one derived key per purpose, so a leak of one ciphertext class says nothing
about another.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12


class DecryptionError(Exception):
    """The ciphertext was tampered with, truncated, or sealed with another key."""


class Sealer:
    """AES-256-GCM with a key derived (HKDF-SHA256) from the master secret and a purpose label."""

    def __init__(self, master_secret: str, purpose: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
            master_secret.encode()
        )
        self._aead = AESGCM(key)
        self._aad = purpose.encode()

    def __repr__(self) -> str:
        return "Sealer(<redacted>)"

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, self._aad)

    def open(self, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], self._aad)
        except (InvalidTag, ValueError):
            raise DecryptionError("sealed value could not be opened") from None
