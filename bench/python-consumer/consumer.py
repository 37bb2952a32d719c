#!/usr/bin/env python3
"""A straightforward Python consumer doing an llmq worker's job, for the drain-rate comparison.

redis-py's asyncio client and aiohttp with one keep-alive session: C coroutines, each reading
from the consumer group (XREADGROUP), calling the OpenAI-compatible backend, then publishing the
reply and acknowledging in one MULTI pipeline. Idiomatic, not tuned; see docs/BENCHMARKS.md.
"""
import argparse
import asyncio
import json
import socket
import time

import aiohttp
import redis.asyncio as redis


async def serve(args):
    client = redis.from_url(args.redis_url)
    try:
        await client.xgroup_create(args.stream, args.group, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
    url = args.endpoint.rstrip("/") + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    last_work = [time.monotonic()]

    async with aiohttp.ClientSession(connector=connector) as session:

        async def handle(entry_id, fields):
            started = time.monotonic()
            fields = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
            reply = {"id": fields.get("id", entry_id), "request": entry_id}
            try:
                if "messages" in fields:
                    messages = json.loads(fields["messages"])
                else:
                    messages = [{"role": "user", "content": fields["prompt"]}]
                body = {"messages": messages, "max_tokens": int(fields.get("max_tokens", 1024)), "stream": False}
                backend_started = time.monotonic()
                async with session.post(url, json=body) as response:
                    data = await response.json(content_type=None)
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {data}")
                backend_ms = (time.monotonic() - backend_started) * 1000
                choice = data["choices"][0]
                reply.update(
                    status="ok", content=choice["message"]["content"] or "",
                    finish_reason=choice.get("finish_reason") or "",
                    prompt_tokens=data["usage"]["prompt_tokens"], completion_tokens=data["usage"]["completion_tokens"],
                    backend_ms=f"{backend_ms:.3f}")
            except Exception as error:  # every request gets a reply
                reply.update(status="error", error_code="backend_error", error=str(error))
            reply.update(consumer=args.consumer, total_ms=f"{(time.monotonic() - started) * 1000:.3f}")
            async with client.pipeline(transaction=True) as pipe:
                pipe.xadd(fields.get("reply_to", args.replies), reply)
                pipe.xack(args.stream, args.group, entry_id)
                await pipe.execute()

        async def loop():
            while True:
                result = await client.xreadgroup(args.group, args.consumer, {args.stream: ">"}, count=1, block=2000)
                if not result:
                    if time.monotonic() - last_work[0] > args.exit_when_idle > 0:
                        return
                    continue
                last_work[0] = time.monotonic()
                for _, entries in result:
                    for entry_id, fields in entries:
                        await handle(entry_id.decode(), fields)

        await asyncio.gather(*(loop() for _ in range(args.concurrency)))
    await client.aclose()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--endpoint", default="http://127.0.0.1:8080")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--consumer", default=f"py-{socket.gethostname()}")
    parser.add_argument("--stream", default="llmq:requests")
    parser.add_argument("--group", default="llmq")
    parser.add_argument("--replies", default="llmq:replies")
    parser.add_argument("--exit-when-idle", type=float, default=0, help="exit after this many idle seconds (0: never)")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
