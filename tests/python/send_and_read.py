#!/usr/bin/env python3
"""Sends tasks from Python and reads their outcomes from the store, both from SPEC.md alone.

``celeriac_producer`` publishes (sections 2 to 9), ``celeriac_store`` reads
the records and waits on the completion channel (section 18): no other
process is asked for anything. Prints one JSON line per case:
``{"case", "sent", "record"}`` (the case ``woken`` adds ``waited_ms``) with the record as ``celeriac_store.record_json``
gives it, or ``"record": null`` when nothing final came within the timeout.

    python3 send_and_read.py --amqp-addr URL --redis-url URL --namespace NS [--timeout S]

Exit codes: 0 every case reached a final state, 1 one did not, 2 usage or
an unreachable broker or store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import msgpack
import redis

import celeriac_producer as cp
import celeriac_store as cs

# An input with what JSON cannot say: bin, a uint64 above 2^53, an ext.
RICH_INPUT = {
    "blob": b"\x00\xff",
    "big": 2**64 - 1,
    "tag": msgpack.ExtType(5, b"\x01\x02"),
    "text": "h\u00e9llo",
    "list": [1, None, True, 0.5],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="send_and_read.py", description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-addr", default=os.environ.get("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    parser.add_argument("--namespace", default="celeriac")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        store = redis.Redis.from_url(args.redis_url)
        store.ping()
        producer = cp.Producer(args.amqp_addr, args.namespace)
    except Exception as e:  # connection errors of either client
        print(f"send_and_read: {e!r}", file=sys.stderr)
        return 2
    ns = args.namespace
    all_final = True

    def report(case: str, sent: str, record: dict | None, **extra: Any) -> None:
        nonlocal all_final
        all_final = all_final and record is not None
        line = {"case": case, "sent": sent, "record": None if record is None else cs.record_json(record)}
        print(json.dumps(line | extra), flush=True)

    with producer:
        producer.declare([cp.DEFAULT_QUEUE])
        # A result read from the record, woken by the completion channel.
        rich = producer.send("celeriac.echo", RICH_INPUT)
        record = cs.wait(store, ns, rich, args.timeout)
        if record is not None and record["result"] is not None:
            echoed = cs.plain(cs.unpack(record["result"]))
            if echoed != RICH_INPUT:
                print(f"send_and_read: the echo of {rich} is {echoed!r}, not the input", file=sys.stderr)
                return 1
        report("rich", rich, record)

        # Woken by the channel alone: the task is due 1.5 s after it is sent
        # and the wait never re-reads on its own before its timeout, so only
        # the completion message can end it early.
        delayed = producer.send("celeriac.echo", "later", countdown_ms=1500)
        began = time.monotonic()
        record = cs.wait(store, ns, delayed, args.timeout, recheck=args.timeout)
        report("woken", delayed, record, waited_ms=round((time.monotonic() - began) * 1000))

        # One key, two tasks: the second is not run, its key leads to the first.
        key = f"py-store-{rich}"
        first = producer.send("celeriac.echo", "first", idempotency_key=key)
        report("key-first", first, cs.wait(store, ns, first, args.timeout, key=key))
        second = producer.send("celeriac.echo", "second", idempotency_key=key)
        report("key-second", second, cs.wait(store, ns, second, args.timeout, key=key))

        # Never run: no handler, and past its expiry.
        report("unknown", (u := producer.send("py.nobody-handles-this", None)), cs.wait(store, ns, u, args.timeout))
        now = cp.now_ms()
        expired = producer.send("celeriac.echo", "late", created_at=now, expires=now - 1)
        report("expired", expired, cs.wait(store, ns, expired, args.timeout))
    return 0 if all_final else 1


if __name__ == "__main__":
    sys.exit(main())
