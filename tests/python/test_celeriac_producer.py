"""Checks of the Python producer against SPEC.md and its golden vectors.

Runs without a broker: ``python3 -m unittest discover -s tests/python``.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import unittest
import uuid

import msgpack

import celeriac_producer as cp

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "broker-schema" / "golden"


def _from_golden_json(value):
    """A golden vector's JSON value as the MessagePack value it stands for."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        if set(value) == {"$ext"}:
            return msgpack.ExtType(value["$ext"]["type"], bytes.fromhex(value["$ext"]["data"]))
        return {k: _from_golden_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_golden_json(v) for v in value]
    return value


def _golden(name: str):
    meaning = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    body = (GOLDEN / f"{name}.msgpack").read_bytes()
    return meaning, msgpack.unpackb(body, raw=False, strict_map_key=False)


class EnvelopeTest(unittest.TestCase):
    def test_minimal_matches_the_golden_vector(self):
        meaning, golden = _golden("minimal")
        env = meaning["envelope"]
        built = cp.build_envelope(env["task"], env["input"], task_id=env["id"], created_at=env["created_at"])
        self.assertEqual(msgpack.unpackb(cp.encode(built), raw=False), golden)
        self.assertEqual(set(built), set(cp.REQUIRED_FIELDS))

    def test_the_full_vectors_top_level_fields_encode_the_same(self):
        meaning, golden = _golden("full")
        env = meaning["envelope"]
        built = cp.build_envelope(
            env["task"],
            _from_golden_json(env["input"]),
            task_id=env["id"],
            created_at=env["created_at"],
            idempotency_key=env["idempotency_key"],
            priority=env["priority"],
            eta=env["eta"],
            expires=env["expires"],
            meta=env["meta"],
        )
        decoded = msgpack.unpackb(cp.encode(built), raw=False)
        for field, value in decoded.items():
            self.assertEqual(value, golden[field], field)
        # The input survives byte for byte: bin stays bin, the full-range
        # uint64 stays unsigned, text stays str.
        self.assertIsInstance(decoded["input"]["raw"], bytes)
        self.assertEqual(decoded["input"]["big"], 2**64 - 1)

    def test_omit_leaves_a_required_field_out(self):
        built = cp.build_envelope("celeriac.echo", 1, omit=["created_at"])
        self.assertNotIn("created_at", built)
        _, golden = _golden("missing_created_at")
        self.assertNotIn("created_at", golden)

    def test_priority_stays_in_range(self):
        with self.assertRaises(ValueError):
            cp.build_envelope("t", None, priority=10)


class IdTest(unittest.TestCase):
    CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

    def test_uuid7_is_canonical_version_7_and_sorts_by_time(self):
        ids = [cp.uuid7(1764077400000 + i) for i in range(100)]
        for task_id in ids:
            self.assertRegex(task_id, self.CANONICAL)
            self.assertEqual(uuid.UUID(task_id).version, 7)
        self.assertEqual(ids, sorted(ids))
        # The first 48 bits are the time in ms.
        self.assertEqual(cp.uuid7(1764077400000).replace("-", "")[:12], f"{1764077400000:012x}")


class PropertiesTest(unittest.TestCase):
    def test_properties_and_headers_follow_sections_4_and_5(self):
        env = cp.build_envelope("images.resize", {"w": 1}, created_at=1764077400999)
        props = cp.properties(env, "emails")
        self.assertEqual(props.message_id, env["id"])
        self.assertEqual(props.content_type, "application/x-msgpack")
        self.assertEqual(props.delivery_mode, 2)
        self.assertEqual(props.timestamp, 1764077400)
        self.assertEqual(props.type, "images.resize")
        self.assertIsNone(props.priority)
        self.assertEqual(
            props.headers,
            {
                "celeriac-task": "images.resize",
                "celeriac-attempt": 0,
                "celeriac-idempotency-key": env["id"],
                "celeriac-queue": "emails",
            },
        )

    def test_an_idempotency_key_and_a_priority_show_in_the_properties(self):
        env = cp.build_envelope("t", None, idempotency_key="order-42", priority=7)
        props = cp.properties(env, "default")
        self.assertEqual(props.headers["celeriac-idempotency-key"], "order-42")
        self.assertEqual(props.priority, 7)


class RouteTest(unittest.TestCase):
    def test_the_examples_of_section_9(self):
        zeros = lambda n: "0." * n  # noqa: E731
        self.assertEqual(cp.route("celeriac", "default", 0), ("celeriac.work", "default"))
        self.assertEqual(cp.route("celeriac", "default", 1), ("celeriac.delay.00", zeros(24) + "1.default"))
        self.assertEqual(cp.route("celeriac", "default", 100), cp.route("celeriac", "default", 1))
        self.assertEqual(cp.route("celeriac", "default", 101), ("celeriac.delay.01", zeros(23) + "1.0.default"))
        self.assertEqual(
            cp.route("celeriac", "default", 2500),
            ("celeriac.delay.04", zeros(20) + "1.1.0.0.1.default"),
        )
        self.assertEqual(
            cp.route("celeriac", "default", 30 * 86_400_000),
            ("celeriac.delay.24", "1.1.0.0.0.1.0.1.1.1.0.0.0.0.0.1.0.0.0.0.0.0.0.0.0.default"),
        )
        self.assertEqual(cp.route("celeriac", "default", 3_355_443_100)[0], "celeriac.delay.24")
        with self.assertRaises(cp.ProducerError):
            cp.route("celeriac", "default", 39 * 86_400_000)


class TopologyTest(unittest.TestCase):
    def test_names_and_arguments_of_section_7(self):
        steps = cp.topology("celeriac", ["default"])
        exchanges = {s.name: s.exchange_type for s in steps if s.kind == "exchange"}
        self.assertEqual(exchanges["celeriac.work"], "direct")
        self.assertEqual(exchanges["celeriac.dlx"], "direct")
        self.assertEqual(exchanges["celeriac.delay.deliver"], "topic")
        self.assertEqual(exchanges["celeriac.events"], "topic")
        self.assertEqual(exchanges["celeriac.control"], "fanout")
        self.assertEqual(len(exchanges), 5 + 25)
        queues = {s.name: s.arguments for s in steps if s.kind == "queue"}
        self.assertEqual(queues["celeriac.delay.04"]["x-message-ttl"], 1600)
        self.assertEqual(queues["celeriac.delay.04"]["x-dead-letter-exchange"], "celeriac.delay.03")
        self.assertEqual(queues["celeriac.delay.00"]["x-dead-letter-exchange"], "celeriac.delay.deliver")
        self.assertEqual(queues["celeriac.q.default"]["x-delivery-limit"], 5)
        self.assertEqual(queues["celeriac.dlq.default"]["x-delivery-limit"], 2147483647)
        binds = [(s.kind, s.source, s.name, s.routing_key) for s in steps if "bind" in s.kind]
        self.assertIn(
            ("bind", "celeriac.delay.04", "celeriac.delay.04", "*." * 20 + "1.#"),
            binds,
        )
        self.assertIn(
            ("exchange-bind", "celeriac.delay.04", "celeriac.delay.03", "*." * 20 + "0.#"),
            binds,
        )
        self.assertIn(
            ("bind", "celeriac.delay.deliver", "celeriac.q.default", "*." * 25 + "default"),
            binds,
        )
        # Everything a binding or dead-letter argument names comes first.
        declared = set()
        for s in steps:
            if s.kind in ("exchange", "queue"):
                declared.add((s.kind, s.name))
                dlx = (s.arguments or {}).get("x-dead-letter-exchange")
                if dlx:
                    self.assertIn(("exchange", dlx), declared)
            elif s.kind == "bind":
                self.assertIn(("queue", s.name), declared)
                self.assertIn(("exchange", s.source), declared)
            else:
                self.assertIn(("exchange", s.name), declared)

    def test_names_are_checked(self):
        for bad in ["", ".a", "a.", "a..b", "a b", "a#", "a*", "x" * 101]:
            with self.assertRaises(ValueError, msg=bad):
                cp.check_name("queue", bad)
        cp.check_name("queue", "emails.high")


class SignatureTest(unittest.TestCase):
    """Section 15, against ``golden/signatures/vectors.json``."""

    @staticmethod
    def _vectors():
        doc = json.loads((GOLDEN / "signatures" / "vectors.json").read_text(encoding="utf-8"))
        keys = {key_id: base64.b64decode(secret) for key_id, secret in doc["keys"].items()}
        return doc, keys

    @staticmethod
    def _body(vector) -> bytes:
        if "body_file" in vector:
            return (GOLDEN / vector["body_file"]).read_bytes()
        return bytes.fromhex(vector["body_hex"])

    def test_the_sign_vectors(self):
        doc, keys = self._vectors()
        for vector in doc["sign"]:
            fields = [tuple(pair) for pair in vector["fields"]]
            body = self._body(vector)
            with self.subTest(vector["name"]):
                self.assertEqual(cp.canonical(fields, body).hex(), vector["canonical_hex"])
                key_id = vector["key"]
                self.assertEqual(cp.signature(key_id, keys[key_id], fields, body), vector["signature"])

    def test_signed_properties_carry_the_signature_of_the_task_fields(self):
        doc, keys = self._vectors()
        vector = next(v for v in doc["sign"] if v["name"] == "task_minimal")
        meaning, _ = _golden("minimal")
        env = meaning["envelope"]
        built = cp.build_envelope(env["task"], env["input"], task_id=env["id"], created_at=env["created_at"])
        body = (GOLDEN / "minimal.msgpack").read_bytes()
        props = cp.properties(built, "default", body, ("2025-06", keys["2025-06"]))
        # The same fields as the vector: the queue header is not signed.
        self.assertEqual(cp.task_fields(props.message_id, props.headers), [tuple(p) for p in vector["fields"]])
        self.assertEqual(props.headers[cp.SIGNATURE_HEADER], vector["signature"])
        self.assertNotIn(cp.SIGNATURE_HEADER, cp.properties(built, "default").headers)

    def test_key_files(self):
        keys = cp.read_keys("# ring\n\nnew  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8   # signs\nold\tY2VsZXJpYWMgZ29sZGVuIHByZXZpb3VzIGtleSAzMiE=\n")
        self.assertEqual([k for k, _ in keys], ["new", "old"])
        self.assertEqual(keys[0][1], bytes(range(32)))
        for bad, line in [
            ("a AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\nb\n", "line 2"),
            ("a c2hvcnQ=\n", "line 1"),
            ("a !!!\n", "line 1"),
            ("bad/id AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n", "line 1"),
            ("# nothing\n", "no key"),
        ]:
            with self.subTest(bad):
                with self.assertRaises(ValueError) as caught:
                    cp.read_keys(bad)
                self.assertIn(line, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
