"""Task envelopes and their AMQP message (sections 1 to 5 of
``broker-schema/SPEC.md``): names, ids, the envelope's fields, its
MessagePack body, and the properties and headers it is published with
(signed, section 15, through ``celeriac_signing``).

Part of the Python producer (``celeriac_producer``, which re-exports these
names), written from SPEC.md alone. Needs only ``msgpack`` and ``pika``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import Any, Iterable, Mapping

import msgpack
import pika

from celeriac_signing import SIGNATURE_HEADER, signature, task_fields

# Section 2.1: the schema version this producer writes.
SCHEMA_VERSION = 1
# Section 4.
CONTENT_TYPE = "application/x-msgpack"
PERSISTENT = 2
# Section 1.
DEFAULT_NAMESPACE = "celeriac"
DEFAULT_QUEUE = "default"
# Section 3: writers keep bodies under the decoder's limit.
MAX_BODY_BYTES = 1 << 20
# Section 2.1: the fields a reader requires; anything else may be left out.
REQUIRED_FIELDS = ("v", "id", "task", "input", "created_at")

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class ProducerError(Exception):
    """A task could not be built or was not published."""


class NotPublished(ProducerError):
    """The broker did not confirm a publish (a nack, or returned unroutable)."""


def check_name(kind: str, name: str) -> str:
    """Checks a namespace or logical queue name against section 1.

    Returns the name; raises ``ValueError`` naming ``kind`` otherwise.
    """
    if not _NAME.match(name) or name.startswith(".") or name.endswith(".") or ".." in name:
        raise ValueError(
            f"invalid {kind} {name!r}: 1 to 100 ASCII letters, digits, '-', '_' "
            "and '.', without a leading, trailing or doubled '.'"
        )
    return name


def now_ms() -> int:
    """Unix time in milliseconds (section 1)."""
    return time.time_ns() // 1_000_000


def uuid7(unix_ms: int | None = None) -> str:
    """A UUID version 7 (RFC 9562) in the canonical form of section 1.

    48 bits of Unix milliseconds, the version ``7``, 12 random bits, the
    variant ``10`` and 62 random bits.
    """
    ms = now_ms() if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        ((ms & ((1 << 48) - 1)) << 80)
        | (0x7 << 76)
        | (((rand >> 62) & 0xFFF) << 64)
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    return str(uuid.UUID(int=value))


def build_envelope(
    task: str,
    task_input: Any,
    *,
    task_id: str | None = None,
    created_at: int | None = None,
    idempotency_key: str | None = None,
    priority: int = 0,
    eta: int | None = None,
    expires: int | None = None,
    max_retries: int | None = None,
    meta: Mapping[str, str] | None = None,
    omit: Iterable[str] = (),
) -> dict[str, Any]:
    """The envelope of one task as a dict with the field names of section 2.1.

    Required fields are always set; optional ones only when given, and
    fields with a default only when they differ from it (writers SHOULD
    leave absent fields out). ``omit`` drops fields after the fact: it
    exists to build envelopes a worker must refuse (for conformance tests),
    never for real tasks.
    """
    if not task:
        raise ValueError("the task name must not be empty")
    if not 0 <= priority <= 9:
        raise ValueError(f"priority {priority} is outside 0 to 9")
    created = now_ms() if created_at is None else created_at
    envelope: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": task_id if task_id is not None else uuid7(created),
        "task": task,
        "input": task_input,
    }
    if max_retries is not None:
        # A partial RetryPolicy map: the backoff keeps its defaults (2.2).
        envelope["retry"] = {"max_retries": max_retries}
    if eta is not None:
        envelope["eta"] = eta
    if expires is not None:
        envelope["expires"] = expires
    if priority:
        envelope["priority"] = priority
    if idempotency_key is not None:
        envelope["idempotency_key"] = idempotency_key
    if meta:
        for key, value in meta.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"meta {key!r}: keys and values must be strings")
        envelope["meta"] = dict(meta)
    envelope["created_at"] = created
    for field in omit:
        envelope.pop(field, None)
    return envelope


def encode(envelope: Mapping[str, Any]) -> bytes:
    """The message body: the envelope as one MessagePack map (section 2).

    Text is ``str``, bytes are ``bin``, floats float64. Raises
    ``ProducerError`` for a body over the 1 MiB limit of section 3.
    """
    body = msgpack.packb(dict(envelope), use_bin_type=True, use_single_float=False)
    if len(body) > MAX_BODY_BYTES:
        raise ProducerError(f"the body is {len(body)} bytes, over the limit of {MAX_BODY_BYTES}")
    return body


def headers(envelope: Mapping[str, Any], queue: str) -> dict[str, Any]:
    """The headers of section 5.1 for a task sent to logical queue ``queue``.

    pika writes integers that fit in 32 bits as AMQP ``I``; section 5 has
    readers accept any integer type.
    """
    task_id = envelope.get("id")
    key = envelope.get("idempotency_key")
    out: dict[str, Any] = {
        "celeriac-task": envelope.get("task"),
        "celeriac-attempt": envelope.get("attempt", 0),
        "celeriac-idempotency-key": key if key is not None else task_id,
        "celeriac-queue": queue,
    }
    workflow = envelope.get("workflow")
    if isinstance(workflow, Mapping) and workflow.get("workflow_id"):
        out["celeriac-workflow-id"] = workflow["workflow_id"]
    continuation = envelope.get("continuation")
    if isinstance(continuation, Mapping):
        group = continuation.get("group")
        if isinstance(group, Mapping) and group.get("group_id"):
            out["celeriac-group-id"] = group["group_id"]
        chord = continuation.get("chord")
        if isinstance(chord, Mapping) and chord.get("chord_id"):
            out["celeriac-chord-id"] = chord["chord_id"]
    return {k: v for k, v in out.items() if v is not None}


def properties(
    envelope: Mapping[str, Any],
    queue: str,
    body: bytes | None = None,
    signing_key: tuple[str, bytes] | None = None,
) -> pika.BasicProperties:
    """The AMQP basic properties of section 4, headers included.

    With ``signing_key`` (a key id and its secret) and the encoded ``body``,
    the headers carry the signature of section 15.
    """
    created_at = envelope.get("created_at")
    priority = envelope.get("priority", 0)
    task_headers = headers(envelope, queue)
    if signing_key is not None:
        if body is None:
            raise ValueError("signing needs the encoded body")
        key_id, secret = signing_key
        task_headers[SIGNATURE_HEADER] = signature(
            key_id, secret, task_fields(envelope.get("id"), task_headers), body
        )
    return pika.BasicProperties(
        message_id=envelope.get("id"),
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        timestamp=created_at // 1000 if isinstance(created_at, int) else None,
        type=envelope.get("task"),
        priority=priority if priority else None,
        headers=task_headers,
    )
