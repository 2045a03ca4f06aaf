"""The broker's share of a webhook's latency: one persistent message at a time, published with a
confirm to a durable single-active-consumer queue like orderbot's shards.

    python bench/broker_latency.py [--messages 300] [--interval-ms 20]

Prints, without a consumer and with one (acking at once, then 20 ms later, as a worker acks
after its step): the publish -> confirm time (what `orderbot serve` waits for before its 200)
and the publish -> delivery time (one broker hop of the path webhook -> worker -> sender; a
reply takes two). Uses the shared RabbitMQ (ORDERBOT_TEST_RABBITMQ_URL, else the local
default) and a throwaway queue, deleted afterwards. Asserts nothing.
"""

from __future__ import annotations  # noqa: I001 - _common puts the repository on sys.path

import argparse
import asyncio
import os
import time
import uuid

from _common import cpu_probe, median
from e2e import pct

from tests.distributed.conftest import RABBIT_URL


async def measure(messages: int, interval: float) -> None:
    import aio_pika

    name = f"bench-broker-{uuid.uuid4().hex[:8]}"
    publisher = await aio_pika.connect(RABBIT_URL)
    consumer = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await publisher.channel(publisher_confirms=True)
        declared = await channel.declare_queue(
            name, durable=True, arguments={"x-single-active-consumer": True}
        )
        consuming = await consumer.channel()
        await consuming.set_qos(prefetch_count=32)
        queue = await consuming.get_queue(name)
        delivered: dict[str, float] = {}
        ack_delay = 0.0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            delivered[str(message.message_id)] = time.perf_counter()
            if ack_delay:
                await asyncio.sleep(ack_delay)
            await message.ack()

        for label, delay in (
            ("no consumer", None),
            ("consumer, ack at once", 0.0),
            ("consumer, ack after 20 ms", 0.02),
        ):
            tag = None
            if delay is not None:
                ack_delay = delay
                tag = await queue.consume(on_message)
            confirms: list[float] = []
            deliveries: list[float] = []
            for i in range(messages):
                key = f"{label}-{i}"
                start = time.perf_counter()
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        b"x" * 300,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=key,
                    ),
                    routing_key=name,
                )
                confirms.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(interval)
                if key in delivered:
                    deliveries.append((delivered[key] - start) * 1000)
            if tag is None:
                await declared.purge()
            else:
                await queue.cancel(tag)
            confirms.sort()
            deliveries.sort()
            hop = (
                f"; publish -> delivery p50 {median(deliveries):.2f} ms, p90 "
                f"{pct(deliveries, 0.9):.2f} ms"
                if deliveries
                else ""
            )
            print(
                f"{label:<28} publish -> confirm p50 {median(confirms):.2f} ms, p90 "
                f"{pct(confirms, 0.9):.2f} ms, p99 {pct(confirms, 0.99):.2f} ms{hop}",
                flush=True,
            )
        await declared.delete(if_unused=False, if_empty=False)
    finally:
        await consumer.close()
        await publisher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    args = parser.parse_args()
    print(
        f"broker latency: {args.messages} persistent messages one at a time, every "
        f"{args.interval_ms:g} ms; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; {cpu_probe()}"
    )
    asyncio.run(measure(args.messages, args.interval_ms / 1000))


if __name__ == "__main__":
    main()
