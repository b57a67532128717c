#!/usr/bin/env python3
"""A celeriac producer in Python, written from ``broker-schema/SPEC.md`` alone.

It builds task envelopes (a MessagePack map with named fields, section 2 of
the contract), gives them the AMQP properties and headers of sections 4 and
5, and publishes them with publisher confirms and the mandatory flag
(section 8), immediately or through the delay cascade (section 9). With
``--declare`` it first declares the namespace's topology (section 7), the
same declarations a celeriac worker makes at start-up.

It uses only ``pika`` and ``msgpack``; nothing here is generated from, or
shares code with, the Rust crates. A Rust worker running what this module
sends is the proof that the contract is complete.

As a module::

    import celeriac_producer as cp

    with cp.Producer("amqp://guest:guest@127.0.0.1:5672/%2f", namespace="celeriac") as p:
        p.declare(["default"])
        task_id = p.send("celeriac.echo", {"hello": "world"})

As a command (prints the id of every task it sent, one per line, or JSON
Lines with ``--json``)::

    python3 celeriac_producer.py --amqp-addr URL --namespace NS \\
        --task celeriac.echo --input '{"n": 1}' [--input JSON ...] \\
        [--queue Q] [--count N] [--key K] [--declare] [--signing-keys PATH]

Exit codes: 0 when every task was confirmed by the broker, 1 when the
broker refused or returned one (the ones before it were sent, and printed),
2 for invalid arguments or a broker that cannot be reached.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import msgpack
import pika
import pika.exceptions

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
# Section 7.2.
DEFAULT_DELIVERY_LIMIT = 5
# Section 9.
DELAY_UNIT_MS = 100
DELAY_LEVELS = 25
# Section 2.1: the fields a reader requires; anything else may be left out.
REQUIRED_FIELDS = ("v", "id", "task", "input", "created_at")
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


def route(namespace: str, queue: str, delay_ms: int) -> tuple[str, str]:
    """(exchange, routing key) for a task that must wait ``delay_ms`` (section 9).

    A delay that rounds to zero units is an immediate publish to
    ``{ns}.work``; raises ``ProducerError`` for a delay the cascade cannot
    hold.
    """
    units = -(-max(int(delay_ms), 0) // DELAY_UNIT_MS)
    if units == 0:
        return f"{namespace}.work", queue
    if units >= 1 << DELAY_LEVELS:
        longest = ((1 << DELAY_LEVELS) - 1) * DELAY_UNIT_MS
        raise ProducerError(f"a delay of {delay_ms} ms is longer than the longest, {longest} ms")
    top = units.bit_length() - 1
    bits = ".".join("1" if units >> level & 1 else "0" for level in reversed(range(DELAY_LEVELS)))
    return f"{namespace}.delay.{top:02d}", f"{bits}.{queue}"


@dataclass(frozen=True)
class Declaration:
    """One step of the topology (section 7), in declaration order."""

    kind: str  # "exchange", "queue", "bind" (queue) or "exchange-bind"
    name: str  # the exchange or queue; for bindings, the destination
    exchange_type: str | None = None
    arguments: Mapping[str, Any] | None = None
    source: str | None = None
    routing_key: str | None = None


def _any_words(n: int) -> str:
    return "*." * n


def topology(
    namespace: str,
    queues: Sequence[str],
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> list[Declaration]:
    """Every declaration of section 7 for ``namespace`` and its logical ``queues``.

    Order: the exchanges (7.1); each delay level from 24 down to 0 with its
    queue, queue binding and exchange binding (7.3); then per logical queue
    its dead-letter queue and binding, its work queue and its two bindings
    (7.2).
    """
    ns = check_name("namespace", namespace)
    if delivery_limit < 1:
        raise ValueError("the delivery limit is at least 1")
    steps = [
        Declaration("exchange", f"{ns}.work", "direct"),
        Declaration("exchange", f"{ns}.dlx", "direct"),
        Declaration("exchange", f"{ns}.delay.deliver", "topic"),
        Declaration("exchange", f"{ns}.events", "topic"),
        Declaration("exchange", f"{ns}.control", "fanout"),
    ]
    steps += [Declaration("exchange", f"{ns}.delay.{k:02d}", "topic") for k in range(DELAY_LEVELS)]
    for k in reversed(range(DELAY_LEVELS)):
        level = f"{ns}.delay.{k:02d}"
        below = f"{ns}.delay.{k - 1:02d}" if k > 0 else f"{ns}.delay.deliver"
        prefix = _any_words(DELAY_LEVELS - 1 - k)
        steps.append(
            Declaration(
                "queue",
                level,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": (1 << k) * DELAY_UNIT_MS,
                    "x-dead-letter-exchange": below,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        )
        steps.append(Declaration("bind", level, source=level, routing_key=f"{prefix}1.#"))
        steps.append(Declaration("exchange-bind", below, source=level, routing_key=f"{prefix}0.#"))
    for queue in queues:
        check_name("queue", queue)
        dlq = f"{ns}.dlq.{queue}"
        work = f"{ns}.q.{queue}"
        steps.append(
            Declaration(
                "queue",
                dlq,
                arguments={"x-queue-type": "quorum", "x-delivery-limit": 2147483647},
            )
        )
        steps.append(Declaration("bind", dlq, source=f"{ns}.dlx", routing_key=queue))
        steps.append(
            Declaration(
                "queue",
                work,
                arguments={
                    "x-queue-type": "quorum",
                    "x-delivery-limit": delivery_limit,
                    "x-dead-letter-exchange": f"{ns}.dlx",
                    "x-dead-letter-routing-key": queue,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        )
        steps.append(Declaration("bind", work, source=f"{ns}.work", routing_key=queue))
        steps.append(
            Declaration(
                "bind",
                work,
                source=f"{ns}.delay.deliver",
                routing_key=_any_words(DELAY_LEVELS) + queue,
            )
        )
    return steps


class Producer:
    """A connection and a confirm-mode channel to publish tasks on.

    Every publish sets the mandatory flag and waits for the broker's confirm
    (section 8): ``send`` returns only once the task is durable in its
    queue, and raises ``NotPublished`` when the broker nacked or returned
    it. With ``signing_key`` (a key id and its secret, the first of
    ``read_keys``) every task is signed (section 15).
    """

    def __init__(
        self,
        amqp_addr: str,
        namespace: str = DEFAULT_NAMESPACE,
        queue: str = DEFAULT_QUEUE,
        signing_key: tuple[str, bytes] | None = None,
    ) -> None:
        self.namespace = check_name("namespace", namespace)
        self.queue = check_name("queue", queue)
        self.signing_key = signing_key
        self._connection = pika.BlockingConnection(pika.URLParameters(amqp_addr))
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel and the connection."""
        if self._connection.is_open:
            self._connection.close()

    def declare(self, queues: Sequence[str], delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
        """Declares the namespace's topology for ``queues`` (section 7).

        Idempotent, and the same as a worker's declarations: every exchange
        and queue durable, not auto-delete, not exclusive.
        """
        ch = self._channel
        for step in topology(self.namespace, queues, delivery_limit):
            if step.kind == "exchange":
                ch.exchange_declare(step.name, exchange_type=step.exchange_type, durable=True)
            elif step.kind == "queue":
                ch.queue_declare(step.name, durable=True, arguments=dict(step.arguments or {}))
            elif step.kind == "bind":
                ch.queue_bind(step.name, step.source, routing_key=step.routing_key)
            else:
                ch.exchange_bind(step.name, step.source, routing_key=step.routing_key)

    def publish(self, envelope: Mapping[str, Any], queue: str | None = None) -> str:
        """Publishes a built envelope to logical ``queue`` and waits for its confirm.

        A future ``eta`` goes through the delay cascade for the time left.
        Returns the task id.
        """
        queue = check_name("queue", queue or self.queue)
        body = encode(envelope)
        eta = envelope.get("eta")
        delay = eta - now_ms() if isinstance(eta, int) else 0
        exchange, routing_key = route(self.namespace, queue, delay)
        try:
            self._channel.basic_publish(
                exchange,
                routing_key,
                body,
                properties(envelope, queue, body, self.signing_key),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError as e:
            raise NotPublished(
                f"task {envelope.get('id')} was returned: no queue is bound for "
                f"{exchange!r} / {routing_key!r} (declare the topology first) ({e})"
            ) from e
        except pika.exceptions.NackError as e:
            raise NotPublished(f"the broker refused task {envelope.get('id')} ({e})") from e
        return str(envelope.get("id"))

    def send(
        self,
        task: str,
        task_input: Any,
        *,
        queue: str | None = None,
        countdown_ms: int | None = None,
        **fields: Any,
    ) -> str:
        """Builds (``build_envelope``) and publishes one task; returns its id.

        ``countdown_ms`` sets ``eta`` that far in the future.
        """
        created = fields.pop("created_at", None) or now_ms()
        if countdown_ms:
            fields["eta"] = created + countdown_ms
        envelope = build_envelope(task, task_input, created_at=created, **fields)
        return self.publish(envelope, queue)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="celeriac_producer.py",
        description="Enqueue celeriac tasks on RabbitMQ, per broker-schema/SPEC.md.",
        epilog="Exit codes: 0 all confirmed, 1 a task was not published, 2 usage or connection error.",
    )
    parser.add_argument(
        "--amqp-addr",
        default=os.environ.get("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        help="broker URL (default: $AMQP_ADDR, else the local guest account)",
    )
    parser.add_argument("--namespace", default=os.environ.get("CELERIAC_NAMESPACE", DEFAULT_NAMESPACE))
    parser.add_argument("--task", required=True, help="the task name, e.g. celeriac.echo")
    parser.add_argument(
        "--input",
        action="append",
        dest="inputs",
        metavar="JSON",
        help="a task input as JSON; repeat for several tasks (default: null)",
    )
    parser.add_argument(
        "--input-file",
        metavar="PATH",
        help="JSON Lines, one task input per line ('-' for stdin); after any --input",
    )
    parser.add_argument("--queue", default=DEFAULT_QUEUE, help="logical queue (default: default)")
    parser.add_argument("--count", type=int, default=1, help="send every input N times, each as its own task")
    parser.add_argument("--key", help="idempotency key of every task sent")
    parser.add_argument("--priority", type=int, default=0, help="0 to 9")
    parser.add_argument("--countdown-ms", type=int, default=0, help="run no sooner than this many ms from now")
    parser.add_argument("--expires-in-ms", type=int, help="discard the task if not started within this many ms")
    parser.add_argument("--max-retries", type=int, help="retries after the first run (default: the worker's policy, 3)")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="user metadata")
    parser.add_argument(
        "--omit",
        action="append",
        default=[],
        metavar="FIELD",
        help="leave a field out of the envelope, to test that workers dead-letter it (conformance only)",
    )
    parser.add_argument("--declare", action="store_true", help="declare the namespace's topology first")
    parser.add_argument(
        "--delivery-limit",
        type=int,
        default=DEFAULT_DELIVERY_LIMIT,
        help="x-delivery-limit of the work queue when declaring (must match the workers')",
    )
    parser.add_argument(
        "--signing-keys",
        default=os.environ.get("CELERIAC_SIGNING_KEYS") or None,
        metavar="PATH",
        help="sign every task with the first key of this file: `<key-id> <base64 secret>` per line "
        "(default: $CELERIAC_SIGNING_KEYS; unsigned without)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON Lines instead of bare ids")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must not be negative")
    return args


def _inputs(args: argparse.Namespace) -> list[Any]:
    values = [json.loads(text) for text in (args.inputs or [])]
    if args.input_file:
        stream = sys.stdin if args.input_file == "-" else open(args.input_file, encoding="utf-8")
        with stream:
            values += [json.loads(line) for line in stream if line.strip()]
    if not args.inputs and not args.input_file:
        values = [None]
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    args = _parse_args(argv)
    try:
        inputs = _inputs(args)
        meta = dict(item.split("=", 1) for item in args.meta)
        check_name("namespace", args.namespace)
        check_name("queue", args.queue)
        signing_key = None
        if args.signing_keys:
            with open(args.signing_keys, encoding="utf-8") as keys:
                try:
                    signing_key = read_keys(keys.read())[0]
                except ValueError as e:
                    raise ValueError(f"{args.signing_keys}: {e}") from e
    except (ValueError, OSError) as e:
        print(f"celeriac_producer: {e}", file=sys.stderr)
        return 2
    try:
        producer = Producer(args.amqp_addr, args.namespace, args.queue, signing_key)
    except pika.exceptions.AMQPError as e:
        print(f"celeriac_producer: cannot connect to the broker: {e!r}", file=sys.stderr)
        return 2
    with producer:
        try:
            if args.declare:
                producer.declare([args.queue], args.delivery_limit)
            for _ in range(args.count):
                for value in inputs:
                    created = now_ms()
                    envelope = build_envelope(
                        args.task,
                        value,
                        created_at=created,
                        idempotency_key=args.key,
                        priority=args.priority,
                        eta=created + args.countdown_ms if args.countdown_ms > 0 else None,
                        expires=created + args.expires_in_ms if args.expires_in_ms is not None else None,
                        max_retries=args.max_retries,
                        meta=meta,
                        omit=args.omit,
                    )
                    task_id = producer.publish(envelope, args.queue)
                    if args.json:
                        print(
                            json.dumps(
                                {
                                    "id": task_id,
                                    "task": args.task,
                                    "queue": args.queue,
                                    "idempotency_key": args.key,
                                }
                            ),
                            flush=True,
                        )
                    else:
                        print(task_id, flush=True)
        except NotPublished as e:
            print(f"celeriac_producer: {e}", file=sys.stderr)
            return 1
        except (ProducerError, ValueError) as e:
            print(f"celeriac_producer: {e}", file=sys.stderr)
            return 2
        except pika.exceptions.AMQPError as e:
            print(f"celeriac_producer: the broker closed the channel: {e!r}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        # A reader that stopped early (`| head`) is not a failure.
        sys.stderr.close()
        sys.exit(0)
