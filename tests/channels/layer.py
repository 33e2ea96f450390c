"""Drives a real channels_redis layer for Herald's bridge tests.

    python layer.py send    <layer> <redis-url> <prefix> <group> <count> [--rate R] [--keys k1,k2]
    python layer.py receive <layer> <redis-url> <prefix> <group> <count> [--keys k1,k2]

`send` calls group_send(group, {"type": "chat.message", "seq": n, "blob": b"\\x00\\xff"}) for
n in 0..count (at most R per second when given) and prints {"sent": count}. `receive` joins a new
channel to the group, prints {"ready": channel}, then prints each event it receives as a JSON
line until it has `count`.
"""

import argparse
import asyncio
import json
import sys
import time

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer


def make_layer(args):
    keys = args.keys.split(",") if args.keys else None
    options = {"hosts": [args.url], "prefix": args.prefix, "symmetric_encryption_keys": keys}
    if args.layer == "core":
        # The tests count every event; the default capacity (100 per channel) would let
        # group_send drop events whenever the bridge, sharing a test's single thread with the
        # gateways and clients, is a burst behind.
        return RedisChannelLayer(capacity=10_000, **options)
    return RedisPubSubChannelLayer(**options)


async def send(layer, args):
    started = time.monotonic()
    for seq in range(args.count):
        await layer.group_send(args.group, {"type": "chat.message", "seq": seq, "blob": b"\x00\xff"})
        if args.rate:
            delay = started + (seq + 1) / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    print(json.dumps({"sent": args.count, "seconds": time.monotonic() - started}), flush=True)


async def receive(layer, args):
    channel = await layer.new_channel()
    await layer.group_add(args.group, channel)
    print(json.dumps({"ready": channel}), flush=True)
    for _ in range(args.count):
        event = await layer.receive(channel)
        print(json.dumps(event), flush=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["send", "receive"])
    parser.add_argument("layer", choices=["core", "pubsub"])
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("group")
    parser.add_argument("count", type=int)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--keys", default="")
    args = parser.parse_args()
    layer = make_layer(args)
    await (send if args.command == "send" else receive)(layer, args)
    if hasattr(layer, "flush") and args.layer == "pubsub":
        await layer.flush()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
