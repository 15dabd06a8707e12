"""Message ids: sortable by creation time (ULID layout), safe in a Message-ID header."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_message_id() -> str:
    """``m-`` + 26 chars: 48 bits of milliseconds then 80 random bits."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "m-" + "".join(reversed(chars))


def new_worker_id(host: str, pid: int) -> str:
    return f"{host[:40]}-{pid}-{os.urandom(3).hex()}"
