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

The pieces are modules of their own, and every name is re-exported here:
``celeriac_envelope`` (names, ids, the envelope, its body, properties and
headers), ``celeriac_signing`` (section 15) and ``celeriac_amqp`` (routes,
topology and ``Producer``). This module adds the command line.

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
import json
import os
import sys
from typing import Any, Sequence

import pika.exceptions

# Re-exported: the modules the producer is made of (see above).
from celeriac_amqp import (DEFAULT_DELIVERY_LIMIT, DELAY_LEVELS, DELAY_UNIT_MS, Declaration, Producer, route,
                           topology)
from celeriac_envelope import (CONTENT_TYPE, DEFAULT_NAMESPACE, DEFAULT_QUEUE, MAX_BODY_BYTES, PERSISTENT,
                               REQUIRED_FIELDS, SCHEMA_VERSION, NotPublished, ProducerError, build_envelope,
                               check_name, encode, headers, now_ms, properties, uuid7)
from celeriac_signing import (CANONICAL_TAG, MIN_SECRET_BYTES, SIGNATURE_ALGORITHM, SIGNATURE_HEADER,
                              SIGNED_TASK_HEADERS, canonical, read_keys, signature, task_fields)

__all__ = [
    "CANONICAL_TAG", "CONTENT_TYPE", "DEFAULT_DELIVERY_LIMIT", "DEFAULT_NAMESPACE", "DEFAULT_QUEUE", "DELAY_LEVELS",
    "DELAY_UNIT_MS", "Declaration", "MAX_BODY_BYTES", "MIN_SECRET_BYTES", "NotPublished", "PERSISTENT", "Producer",
    "ProducerError", "REQUIRED_FIELDS", "SCHEMA_VERSION", "SIGNATURE_ALGORITHM", "SIGNATURE_HEADER",
    "SIGNED_TASK_HEADERS", "build_envelope", "canonical", "check_name", "encode", "headers", "main", "now_ms",
    "properties", "read_keys", "route", "signature", "task_fields", "topology", "uuid7",
]


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
