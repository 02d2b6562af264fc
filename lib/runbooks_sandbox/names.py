"""Kubernetes' generated names: suffixes from apimachinery's ``rand.String`` alphabet.

The alphabet has no vowels and no easily confused digits, so generated names never spell
words; pods are ``<replicaset>-<5 chars>``, ReplicaSets ``<deployment>-<pod-template-hash>``.
"""

from __future__ import annotations

import hashlib
import random

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def encode(n: int, length: int) -> str:
    """`n` as `length` characters of the alphabet."""
    out = []
    for _ in range(length):
        n, r = divmod(n, len(ALPHABET))
        out.append(ALPHABET[r])
    return "".join(out)


def suffix(seed: str, length: int = 5) -> str:
    """A suffix derived from `seed`: the same seed gives the same name (reproducible scenarios)."""
    return encode(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"), length)


def random_suffix(length: int = 5) -> str:
    """What the API server appends to ``metadata.generateName``."""
    return "".join(random.choice(ALPHABET) for _ in range(length))
