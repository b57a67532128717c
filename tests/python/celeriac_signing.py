"""Signed tasks (section 15 of ``broker-schema/SPEC.md``): key files, the
canonical string of a message's signed fields, and the HMAC signature.

Part of the Python producer (``celeriac_producer``, which re-exports these
names), written from SPEC.md alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from typing import Any, Mapping, Sequence

# Section 15.
SIGNATURE_HEADER = "celeriac-signature"
SIGNATURE_ALGORITHM = "hmac-sha256-v1"
CANONICAL_TAG = b"celeriac-signature-v1\n"
SIGNED_TASK_HEADERS = (
    "celeriac-task",
    "celeriac-attempt",
    "celeriac-idempotency-key",
    "celeriac-workflow-id",
    "celeriac-group-id",
    "celeriac-chord-id",
)
MIN_SECRET_BYTES = 16
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def read_keys(text: str) -> list[tuple[str, bytes]]:
    """The keys of a key file (section 15.1), in order: the first signs.

    One ``<key-id> <base64 secret>`` per line; ``#`` starts a comment,
    blank lines are ignored. Raises ``ValueError`` naming the line.
    """
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise ValueError(f"line {number}: expected `<key-id> <base64 secret>`, found {len(words)} words")
        key_id, encoded = words
        if not _KEY_ID.match(key_id):
            raise ValueError(f"line {number}: invalid key id {key_id!r}")
        if any(key_id == seen for seen, _ in keys):
            raise ValueError(f"line {number}: key id {key_id!r} appears twice")
        try:
            secret = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"line {number}: the secret of key {key_id!r} is not base64 ({e})") from e
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"line {number}: the secret of key {key_id!r} is {len(secret)} bytes, "
                f"at least {MIN_SECRET_BYTES} are needed"
            )
        keys.append((key_id, secret))
    if not keys:
        raise ValueError("no key: expected lines of `<key-id> <base64 secret>`")
    return keys


def canonical(fields: Sequence[tuple[str, Any]], body: bytes) -> bytes:
    """The canonical string of section 15.2 for ``fields`` (in order) and ``body``.

    A value is text (its UTF-8 bytes), bytes, or an integer (its decimal
    digits); every length is an unsigned 64-bit big-endian integer.
    """
    out = bytearray(CANONICAL_TAG)
    out += struct.pack(">Q", len(fields))
    for name, value in fields:
        if isinstance(value, bool) or not isinstance(value, (str, bytes, int)):
            raise ValueError(f"field {name!r} is neither text nor an integer: {value!r}")
        if isinstance(value, int):
            value = str(value)
        if isinstance(value, str):
            value = value.encode("utf-8")
        encoded_name = name.encode("utf-8")
        out += struct.pack(">Q", len(encoded_name)) + encoded_name
        out += struct.pack(">Q", len(value)) + value
    out += struct.pack(">Q", len(body)) + body
    return bytes(out)


def task_fields(message_id: str | None, task_headers: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The signed fields of a task message (section 15.2), absent ones left out."""
    fields: list[tuple[str, Any]] = []
    if message_id is not None:
        fields.append(("message_id", message_id))
    fields += [(name, task_headers[name]) for name in SIGNED_TASK_HEADERS if name in task_headers]
    return fields


def signature(key_id: str, secret: bytes, fields: Sequence[tuple[str, Any]], body: bytes) -> str:
    """The ``celeriac-signature`` header value of section 15.3."""
    mac = hmac.new(secret, canonical(fields, body), hashlib.sha256).hexdigest()
    return f"{SIGNATURE_ALGORITHM}:{key_id}:{mac}"
