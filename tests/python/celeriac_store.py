#!/usr/bin/env python3
"""A reader of celeriac's state store, written from ``broker-schema/SPEC.md`` alone.

Section 18 of the contract makes the store's layout in Redis public: a
task's record is the hash ``{ns}:r:{id}`` (layout version 2), its history
the hash's fields named ``h:…``, and the write of a final state publishes
on the channel ``{ns}:done:{id}``. Records of version 1 (the hash
``{ns}:t:{id}`` beside the history string ``{ns}:t:{id}:h``) are read when
a task has none of version 2. This module reads records (section 18.4), waits for
final states without polling (section 18.5), follows an idempotency key to
the task that ran, and shows MessagePack values as JSON without loss
(section 18.6). It uses only ``redis`` (redis-py) and ``msgpack``.

As a module::

    import redis
    import celeriac_store as cs

    r = redis.Redis.from_url("redis://127.0.0.1:6379")
    record = cs.wait(r, "celeriac", task_id, timeout=30)
    if record and record["state"] == "succeeded":
        print(record["result"])

As a command (prints the record as JSON; exit 0 final, 1 not final
within the timeout, 3 unknown)::

    python3 celeriac_store.py --redis-url URL --namespace NS TASK_ID [--wait SECONDS] [--key KEY]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import time
from typing import Any, Mapping

import msgpack

# Section 12 and 18.3: the final states.
FINAL_STATES = frozenset({"succeeded", "failed", "skipped", "revoked", "expired"})
# Section 18.3: a run's lease token, or this prefix and the task that ran.
SUCCEEDED_PREFIX = "done:"
# Section 18.4: transitions kept.
HISTORY_LIMIT = 100
# Section 18.5: a waiter reads again at least this often (seconds).
RECHECK_SECONDS = 30.0
# Section 18.6.
MAX_SAFE_INTEGER = (1 << 53) - 1
TAGS = ("$int", "$float", "$str", "$bin", "$ext", "$map")


def record_key(ns: str, task_id: str) -> str:
    """The hash of a task's record (section 18.2)."""
    return f"{ns}:r:{task_id}"


def v1_record_key(ns: str, task_id: str) -> str:
    """The hash of a task's record in layout version 1 (section 18.4)."""
    return f"{ns}:t:{task_id}"


def v1_history_key(ns: str, task_id: str) -> str:
    """The string of a task's history in layout version 1 (section 18.4)."""
    return f"{ns}:t:{task_id}:h"


def done_channel(ns: str, task_id: str) -> str:
    """The completion channel of a task or a workflow (section 18.5)."""
    return f"{ns}:done:{task_id}"


def execution_key(ns: str, key: str) -> str:
    """The execution key of an idempotency key (section 18.2)."""
    return f"{ns}:k:{key}"


class Pairs(list):
    """A MessagePack map as its entries in order (keys may repeat or be any value)."""


def unpack(data: bytes) -> Any:
    """One MessagePack value, maps as ``Pairs`` so that nothing is lost.

    A ``str`` that is not UTF-8 comes back with surrogate escapes, which
    ``to_json`` writes as ``$str``. Raises ``ValueError`` for bytes that are
    not exactly one value.
    """
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            unicode_errors="surrogateescape",
            strict_map_key=False,
            object_pairs_hook=Pairs,
            timestamp=0,
        )
    except Exception as e:  # msgpack raises several types for bad bytes
        raise ValueError(f"not one MessagePack value: {e}") from e


def plain(value: Any) -> Any:
    """A value from ``unpack`` with its maps as dicts (for string-keyed data)."""
    if isinstance(value, Pairs):
        return {plain(k): plain(v) for k, v in value}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_utf8(text: str) -> bool:
    """Whether a decoded ``str`` held valid UTF-8 (no surrogate escapes)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _tag(name: str, inner: Any) -> dict:
    return {name: inner}


def to_json(value: Any) -> Any:
    """A value from ``unpack`` in the JSON form of section 18.6."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        return _tag("$int", str(value))
    if isinstance(value, float):
        if math.isnan(value):
            return _tag("$float", "NaN")
        if math.isinf(value):
            return _tag("$float", "Infinity" if value > 0 else "-Infinity")
        return value
    if isinstance(value, str):
        if _is_utf8(value):
            return value
        return _tag("$str", _b64(value.encode("utf-8", "surrogateescape")))
    if isinstance(value, (bytes, bytearray)):
        return _tag("$bin", _b64(bytes(value)))
    if isinstance(value, msgpack.ExtType):
        return _tag("$ext", {"type": value.code, "data": _b64(value.data)})
    if isinstance(value, msgpack.Timestamp):
        return _tag("$ext", {"type": -1, "data": _b64(value.to_bytes())})
    if isinstance(value, Pairs):
        keys = [k for k, _ in value]
        as_object = (
            all(isinstance(k, str) and _is_utf8(k) for k in keys)
            and len(set(keys)) == len(keys)
            and not (len(keys) == 1 and keys[0].startswith("$"))
        )
        if as_object:
            return {k: to_json(v) for k, v in value}
        return _tag("$map", [[to_json(k), to_json(v)] for k, v in value])
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return to_json(Pairs(value.items()))
    raise TypeError(f"not a MessagePack value: {value!r}")


def bytes_to_json(data: bytes) -> Any:
    """Stored MessagePack bytes as JSON: their one value, else ``$raw``."""
    try:
        return to_json(unpack(data))
    except ValueError:
        return _tag("$raw", _b64(data))


# Section 18.4: the stage of a state in a history's order.
STAGES = {"created": 0, "queued": 1, "started": 2}


def history_order(transition: Mapping[str, Any]) -> tuple[int, int, int]:
    """Where a transition sorts: time, attempt, stage (section 18.4)."""
    return (transition["at_ms"], transition["attempt"], STAGES.get(transition["state"], 3))


def _transition(entry: Any) -> dict:
    if not isinstance(entry, dict) or "state" not in entry:
        raise ValueError(f"history entry {entry!r} is not a transition")
    return entry


def parse_history(fields: Mapping[bytes, bytes]) -> list[dict]:
    """The transitions of a record's ``h:`` fields, all of them, oldest first."""
    out = [
        _transition(msgpack.unpackb(value, raw=False, strict_map_key=False))
        for name, value in fields.items()
        if name.startswith(b"h:")
    ]
    return sorted(out, key=history_order)


def parse_v1_history(data: bytes | None) -> list[dict]:
    """The transitions of a history string of version 1, oldest first."""
    if not data:
        return []
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    return [_transition(entry) for entry in unpacker][-HISTORY_LIMIT:]


def _text(fields: Mapping[bytes, bytes], name: str) -> str | None:
    raw = fields.get(name.encode())
    return raw.decode("utf-8", "replace") if raw else None


def _number(fields: Mapping[bytes, bytes], name: str) -> int | None:
    text = _text(fields, name)
    if text is None:
        return None
    if not text.isdigit():
        raise ValueError(f"field {name!r} holds {text!r}, not a decimal number")
    return int(text)


def parse_record(task_id: str, fields: Mapping[bytes, bytes]) -> dict | None:
    """A task's record from its hash fields (section 18.4).

    ``None`` for an empty hash. The record is a dict: ``id``, ``task``,
    ``queue``, ``state``, ``attempt``, ``runs``, ``worker``,
    ``idempotency_key``, ``workflow_id``, the four times, ``error`` (a
    ``(type, message)`` pair or ``None``), ``result`` (the stored bytes or
    ``None``) and ``history``.
    """
    if not fields:
        return None
    mark = None
    if fields.get(b"q"):
        mark = msgpack.unpackb(fields[b"q"], raw=False)
        if not (isinstance(mark, list) and len(mark) == 5 and all(isinstance(n, int) for n in mark[:2])
                and all(isinstance(t, str) for t in mark[2:4]) and (mark[4] is None or isinstance(mark[4], str))):
            raise ValueError(f"queued mark {mark!r} is not [attempt, at_ms, task, queue, wf]")
    history = parse_history(fields)
    runs = sum(1 for t in history if t["state"] == "started")
    record = _build(task_id, fields, mark, history, runs)
    record["history"] = sorted(record["history"], key=history_order)[-HISTORY_LIMIT:]
    return record


def parse_v1_record(task_id: str, fields: Mapping[bytes, bytes], history: bytes | None) -> dict | None:
    """A task's record of layout version 1: its hash fields and history string."""
    if not fields:
        return None
    mark = None
    if fields.get(b"q"):
        mark = msgpack.unpackb(fields[b"q"])
        if not (isinstance(mark, list) and len(mark) == 2 and all(isinstance(n, int) for n in mark)):
            raise ValueError(f"queued mark {mark!r} is not [attempt, at_ms]")
        mark = mark + [None, None, None]
    return _build(task_id, fields, mark, parse_v1_history(history), _number(fields, "runs") or 0)


def _build(task_id: str, fields: Mapping[bytes, bytes], mark: list | None, history: list[dict],
           runs: int) -> dict:
    """Steps 2 to 4 of section 18.4, both versions; ``mark`` has five items."""
    record = {
        "id": task_id,
        "task": _text(fields, "task") or (mark and mark[2]) or "",
        "queue": _text(fields, "queue") or (mark and mark[3]) or "",
        "state": _text(fields, "state"),
        "attempt": _number(fields, "attempt") or 0,
        "runs": runs,
        "worker": _text(fields, "worker"),
        "idempotency_key": _text(fields, "key"),
        "workflow_id": _text(fields, "wf") or (mark and mark[4]) or None,
        "created_at": _number(fields, "created_at"),
        "queued_at": _number(fields, "queued_at"),
        "started_at": _number(fields, "started_at"),
        "finished_at": _number(fields, "finished_at"),
        "error": None,
        "result": fields.get(b"result") or None,
        "history": history,
    }
    if record["state"] is None and mark is not None:
        # Step 2: only a producer's mark.
        attempt, at_ms = mark[0], mark[1]
        record.update(
            state="queued", attempt=attempt, runs=0, queued_at=at_ms, worker=None, idempotency_key=None,
            created_at=None, started_at=None, finished_at=None, result=None,
            history=[{"state": "queued", "at_ms": at_ms, "attempt": attempt}],
        )
        return record
    if _text(fields, "err_type") is not None and record["state"] != "succeeded":
        record["error"] = (_text(fields, "err_type"), _text(fields, "err_msg") or "")
    if mark is not None:
        attempt, at_ms = mark[0], mark[1]
        if record["queued_at"] is None:
            record["queued_at"] = at_ms
        if record["state"] in ("created", "queued"):
            record["state"] = "queued"
            record["attempt"] = attempt
            record["history"] = (record["history"] + [{"state": "queued", "at_ms": at_ms, "attempt": attempt}])[
                -HISTORY_LIMIT:
            ]
    return record


def read(r: Any, ns: str, task_id: str) -> dict | None:
    """Reads a task's record in one transaction, or its record of version 1."""
    pipe = r.pipeline(transaction=True)
    pipe.hgetall(record_key(ns, task_id))
    pipe.hgetall(v1_record_key(ns, task_id))
    pipe.get(v1_history_key(ns, task_id))
    fields, v1_fields, v1_history = pipe.execute()
    if not fields and v1_fields:
        return parse_v1_record(task_id, v1_fields, v1_history)
    return parse_record(task_id, fields)


def succeeded_as(r: Any, ns: str, key: str) -> str | None:
    """The task id a key succeeded as, from its execution key (section 18.5)."""
    value = r.get(execution_key(ns, key))
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    return text[len(SUCCEEDED_PREFIX):] if text.startswith(SUCCEEDED_PREFIX) else None


def wait(r: Any, ns: str, task_id: str, timeout: float, key: str | None = None,
         recheck: float = RECHECK_SECONDS) -> dict | None:
    """Waits until the task's record is final and returns it (section 18.5).

    Subscribes to the completion channel first, then reads; wakes on a
    message or every ``recheck`` seconds. With the ``key`` the task was sent
    with, a task that has no record while its key succeeded as another
    task returns that task's record (its ``id`` says which). ``None`` when
    nothing final is found within ``timeout`` seconds.
    """
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(done_channel(ns, task_id))
    try:
        deadline = time.monotonic() + timeout
        while True:
            record = read(r, ns, task_id)
            if record is None and key is not None:
                other = succeeded_as(r, ns, key)
                if other is not None and other != task_id:
                    record = read(r, ns, other)
            if record is not None and record["state"] in FINAL_STATES:
                return record
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            pubsub.get_message(timeout=min(left, recheck))
    finally:
        pubsub.close()


def record_json(record: Mapping[str, Any]) -> dict:
    """A record as JSON: times in ms, the result by section 18.6."""
    out = {k: v for k, v in record.items() if k not in ("result", "error")}
    out["error"] = None if record["error"] is None else {"type": record["error"][0], "message": record["error"][1]}
    out["result_stored"] = record["result"] is not None
    out["result"] = None if record["result"] is None else bytes_to_json(record["result"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="celeriac_store.py",
        description="Read (and wait for) a celeriac task's record in Redis, per SPEC.md section 18.",
        epilog="Exit codes: 0 shown (final with --wait), 1 not final within --wait, 2 usage, 3 unknown task.",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    parser.add_argument("--namespace", default=os.environ.get("CELERIAC_NAMESPACE", "celeriac"))
    parser.add_argument("--wait", type=float, metavar="SECONDS", help="wait this long for a final state")
    parser.add_argument("--key", help="the idempotency key the task was sent with")
    parser.add_argument("task_id")
    args = parser.parse_args(argv)
    import redis  # only the command needs a connection

    r = redis.Redis.from_url(args.redis_url)
    if args.wait is not None:
        record = wait(r, args.namespace, args.task_id, args.wait, key=args.key)
        if record is None:
            record = read(r, args.namespace, args.task_id)
            if record is None:
                return 3
            print(json.dumps(record_json(record)))
            return 1
    else:
        record = read(r, args.namespace, args.task_id)
        if record is None:
            return 3
    print(json.dumps(record_json(record)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
