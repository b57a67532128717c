#!/usr/bin/env python3
"""Counts task completions on the celeriac event stream, written from
section 17 of ``broker-schema/SPEC.md`` alone.

It binds a queue of its own (exclusive, auto-delete) to the events
exchange ``{ns}.events`` with the routing key ``task.succeeded.#`` (section
17.2), sends N tasks with the Python producer of this folder, and counts
the ``succeeded`` events of those tasks, checking every field the spec
gives a ``succeeded`` event. Events are at most once (section 17.4): a
completion whose event does not arrive within the deadline is reported as
missing, for the caller to look up in the store.

    python3 celeriac_events.py --amqp-addr URL --namespace NS \\
        --task celeriac.echo --count 20 [--timeout-s 30]

Prints one JSON object: ``sent`` (the task ids), ``succeeded`` (the ids
whose event arrived) and ``missing``. Exit codes: 0 when every task's
``succeeded`` event arrived, 1 when some did not or an event broke the
spec, 2 for bad arguments or an unreachable broker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import msgpack
import pika
import pika.exceptions

import celeriac_producer as cp

# Section 17.1.
CONTENT_TYPE = "application/x-msgpack"
# Section 17.2: the fields every task event carries, and their types.
COMMON_FIELDS = {
    "kind": str,
    "id": str,
    "task": str,
    "queue": str,
    "at": int,
    "attempt": int,
    "key": str,
}
TASK_KINDS = (
    "sent", "received", "started", "succeeded", "failed",
    "retried", "revoked", "expired", "dead-lettered",
)


class EventError(Exception):
    """An event that breaks the spec."""


def check_succeeded(event: Any, routing_key: str) -> dict[str, Any]:
    """Checks a ``succeeded`` task event against section 17.2."""
    if not isinstance(event, dict):
        raise EventError(f"the body is not a map: {event!r}")
    for name, kind in COMMON_FIELDS.items():
        if not isinstance(event.get(name), kind) or isinstance(event.get(name), bool):
            raise EventError(f"field {name!r} is missing or not a {kind.__name__}: {event!r}")
    if event["kind"] not in TASK_KINDS:
        raise EventError(f"unknown kind {event['kind']!r}")
    if routing_key != f"task.{event['kind']}.{event['task']}":
        raise EventError(f"routing key {routing_key!r} does not match {event!r}")
    if event["kind"] != "succeeded":
        raise EventError(f"bound to task.succeeded.# but got {event['kind']!r}")
    if not isinstance(event.get("worker"), str):
        raise EventError(f"a worker's event names its worker: {event!r}")
    if not isinstance(event.get("succeeded_as"), str):
        raise EventError(f"a succeeded event has succeeded_as: {event!r}")
    for absent in ("error", "error_type", "delay_ms", "reason", "eta", "workflow_id"):
        if absent in event:
            raise EventError(f"field {absent!r} does not belong to a succeeded event: {event!r}")
    return event


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-addr", default=os.environ.get("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--namespace", default=cp.DEFAULT_NAMESPACE)
    parser.add_argument("--task", default="celeriac.echo")
    parser.add_argument("--queue", default=cp.DEFAULT_QUEUE)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")

    exchange = f"{args.namespace}.events"
    try:
        connection = pika.BlockingConnection(pika.URLParameters(args.amqp_addr))
    except pika.exceptions.AMQPError as e:
        print(f"error: cannot reach the broker: {e!r}", file=sys.stderr)
        return 2
    channel = connection.channel()
    # Section 17.1: a topic exchange, durable; declared the same way.
    channel.exchange_declare(exchange, "topic", durable=True)
    queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    # Bound before sending: only what is published afterwards arrives.
    channel.queue_bind(queue, exchange, routing_key="task.succeeded.#")

    with cp.Producer(args.amqp_addr, namespace=args.namespace) as producer:
        producer.declare([args.queue])
        sent = [producer.send(args.task, {"n": i}, queue=args.queue) for i in range(args.count)]
    wanted = set(sent)
    done: set[str] = set()
    errors: list[str] = []
    deadline = time.monotonic() + args.timeout_s
    while done != wanted and time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        if props.content_type != CONTENT_TYPE:
            errors.append(f"content type {props.content_type!r}")
            continue
        try:
            event = check_succeeded(msgpack.unpackb(body, raw=False), method.routing_key)
        except (EventError, ValueError, msgpack.UnpackException) as e:
            errors.append(str(e))
            continue
        if event["id"] in wanted:
            if event["succeeded_as"] != event["id"] or event["key"] != event["id"]:
                errors.append(f"a task sent without a key succeeded as itself: {event!r}")
            if event["task"] != args.task or event["queue"] != args.queue or event["attempt"] != 0:
                errors.append(f"the event does not match what was sent: {event!r}")
            done.add(event["id"])
    connection.close()
    print(json.dumps({
        "sent": sent,
        "succeeded": sorted(done),
        "missing": sorted(wanted - done),
        "errors": errors,
    }))
    return 0 if done == wanted and not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
