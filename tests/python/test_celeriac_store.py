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
        for name in ("records_v2.json", "records.json"):
            vectors = _load(name)
            self.assertGreaterEqual(len(vectors), 9)
            for v in vectors:
                with self.subTest(name=name, vector=v["name"]):
                    self._check(v)

    def _check(self, v):
        ns, task_id = v["namespace"], v["id"]
        self.assertEqual(cs.done_channel(ns, task_id), v["keys"]["channel"])
        if "history_hex" in v:
            self.assertEqual(cs.v1_record_key(ns, task_id), v["keys"]["record"])
            self.assertEqual(cs.v1_history_key(ns, task_id), v["keys"]["history"])
            record = cs.parse_v1_record(task_id, _fields(v), bytes.fromhex(v["history_hex"]))
        else:
            self.assertEqual(cs.record_key(ns, task_id), v["keys"]["record"])
            record = cs.parse_record(task_id, _fields(v))
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
        self.assertIsNone(cs.parse_record("x", {}))
        self.assertIsNone(cs.parse_v1_record("x", {}, None))

    def test_a_mark_of_the_wrong_version_is_an_error(self):
        with self.assertRaises(ValueError):
            cs.parse_record("x", {b"q": bytes.fromhex("9200cf0000019abb34efc7")})


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
