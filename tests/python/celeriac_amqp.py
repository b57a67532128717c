"""Publishing on RabbitMQ (sections 7 to 9 of ``broker-schema/SPEC.md``):
the route of a task through the delay cascade, the namespace's topology,
and ``Producer``, which declares it and publishes with publisher confirms
and the mandatory flag.

Part of the Python producer (``celeriac_producer``, which re-exports these
names), written from SPEC.md alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pika
import pika.exceptions

from celeriac_envelope import (DEFAULT_NAMESPACE, DEFAULT_QUEUE, NotPublished, ProducerError, build_envelope,
                               check_name, encode, now_ms, properties)

# Section 7.2.
DEFAULT_DELIVERY_LIMIT = 5
# Section 9.
DELAY_UNIT_MS = 100
DELAY_LEVELS = 25


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
