"""Checks of the store reader against SPEC.md section 18 and its golden vectors.

Runs without Redis: ``python3 -m unittest discover -s tests/python``.
"""

from __future__ import annotations

import json
import pathlib
import unittest

import celeriac_store as cs

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "broker-schema" / "golden" / "store"


def _load(name: str):
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))["vectors"]


def _fields(vector) -> dict[bytes, bytes]:
    out = {}
    for name, value in vector["fields"].items():
        out[name.encode()] = value.encode() if isinstance(value, str) else bytes.fromhex(value["hex"])
    return out


class RecordTest(unittest.TestCase):
    def test_every_golden_record_reads_as_it_says(self):
        vectors = _load("records.json")
        self.assertGreaterEqual(len(vectors), 8)
        for v in vectors:
            with self.subTest(v["name"]):
                ns, task_id = v["namespace"], v["id"]
                self.assertEqual(cs.record_key(ns, task_id), v["keys"]["record"])
                self.assertEqual(cs.history_key(ns, task_id), v["keys"]["history"])
                self.assertEqual(cs.done_channel(ns, task_id), v["keys"]["channel"])
                record = cs.parse_record(task_id, _fields(v), bytes.fromhex(v["history_hex"]))
                want = v["record"]
                for field in ("task", "queue", "state", "attempt", "runs", "worker", "idempotency_key",
                              "workflow_id", "created_at", "queued_at", "started_at", "finished_at", "history"):
                    self.assertEqual(record[field], want[field], field)
                error = None if record["error"] is None else {"type": record["error"][0], "message": record["error"][1]}
                self.assertEqual(error, want["error"])
                self.assertEqual(record["result"].hex() if record["result"] else None, want["result_hex"])
                shown = cs.record_json(record)
                self.assertEqual(shown["result"], v["status"]["result"])
                self.assertEqual(shown["result_stored"], v["status"]["result_stored"])

    def test_an_empty_hash_is_no_record(self):
        self.assertIsNone(cs.parse_record("x", {}, None))


class JsonValueTest(unittest.TestCase):
    def test_every_golden_value_maps_to_its_json(self):
        for v in _load("json_values.json"):
            with self.subTest(v["name"]):
                self.assertEqual(cs.bytes_to_json(bytes.fromhex(v["msgpack"])), v["json"])

    def test_bytes_that_are_not_one_value_are_raw(self):
        self.assertEqual(cs.bytes_to_json(b"\x01\x02"), {"$raw": "AQI="})
        self.assertEqual(cs.bytes_to_json(b"\xc1"), {"$raw": "wQ=="})


if __name__ == "__main__":
    unittest.main()
