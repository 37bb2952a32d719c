#!/usr/bin/env python3
"""A straightforward Python consumer doing an llmq worker's job, for the drain-rate comparison.

One process, one asyncio event loop, redis-py's asyncio client and one aiohttp ClientSession
(keep-alive). A reader loop claims up to as many requests as there are free slots with
XREADGROUP ... COUNT <free> BLOCK 2000, starts one task per request, and keeps at most
--concurrency requests in flight. Each task calls POST {endpoint}/v1/chat/completions and then
publishes the reply and acknowledges the request in one MULTI/EXEC pipeline (XADD + XACK).

Idiomatic, not tuned: no uvloop, no custom parsers, no batching of replies across requests.
It speaks llmq's message contract for the fields a benchmark uses (see the README beside it).
"""
import argparse
import asyncio
import json
import socket
import time

import aiohttp
import redis.asyncio as redis


class Consumer:
    def __init__(self, args):
        self.args = args
        self.url = args.endpoint.rstrip("/") + "/v1/chat/completions"
        self.redis = redis.from_url(args.redis_url, decode_responses=True)
        self.session = None
        self.tasks = set()

    async def run(self):
        args = self.args
        try:
            await self.redis.xgroup_create(args.stream, args.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as self.session:
            last_work = time.monotonic()
            while True:
                if len(self.tasks) >= args.concurrency:
                    await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                free = args.concurrency - len(self.tasks)
                result = await self.redis.xreadgroup(
                    args.group, args.consumer, {args.stream: ">"}, count=free, block=2000)
                if not result:
                    idle = time.monotonic() - last_work
                    if args.exit_when_idle > 0 and not self.tasks and idle >= args.exit_when_idle:
                        break
                    continue
                last_work = time.monotonic()
                for _stream, entries in result:
                    for entry_id, fields in entries:
                        task = asyncio.create_task(self.handle(entry_id, fields))
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)
            if self.tasks:
                await asyncio.gather(*self.tasks)
        await self.redis.aclose()

    async def handle(self, entry_id, fields):
        started = time.monotonic()
        reply = {"id": fields.get("id") or entry_id, "request": entry_id}
        backend_ms = 0.0
        try:
            if ("prompt" in fields) == ("messages" in fields):
                raise ValueError("give exactly one of prompt and messages")
            if "messages" in fields:
                messages = json.loads(fields["messages"])
            else:
                messages = [{"role": "user", "content": fields["prompt"]}]
            body = {"messages": messages, "max_tokens": int(fields.get("max_tokens", 1024)), "stream": False}
        except (ValueError, TypeError) as error:
            reply.update(status="error", error_code="invalid_request", error=str(error))
        else:
            backend_started = time.monotonic()
            try:
                async with self.session.post(self.url, json=body) as response:
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:500]}")
                    data = await response.json()
                choice = data["choices"][0]
                usage = data.get("usage") or {}
                reply.update(
                    status="ok",
                    content=choice["message"].get("content") or "",
                    finish_reason=choice.get("finish_reason") or "",
                    prompt_tokens=usage.get("prompt_tokens", 0),
                    completion_tokens=usage.get("completion_tokens", 0),
                )
            except Exception as error:  # every request gets a reply
                reply.update(status="error", error_code="backend_error", error=str(error) or type(error).__name__)
            backend_ms = (time.monotonic() - backend_started) * 1000
        reply.update(
            consumer=self.args.consumer,
            backend_ms=f"{backend_ms:.3f}",
            total_ms=f"{(time.monotonic() - started) * 1000:.3f}",
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(fields.get("reply_to") or self.args.replies, reply)
            pipe.xack(self.args.stream, self.args.group, entry_id)
            await pipe.execute()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--endpoint", default="http://127.0.0.1:8080")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    parser.add_argument("--consumer", default=f"py-{socket.gethostname()}", help="consumer name in the group")
    parser.add_argument("--stream", default="llmq:requests")
    parser.add_argument("--group", default="llmq")
    parser.add_argument("--replies", default="llmq:replies", help="reply stream when a request has no reply_to")
    parser.add_argument("--exit-when-idle", type=float, default=0, metavar="SECONDS",
                        help="exit 0 after this long with nothing to do (0: never)")
    args = parser.parse_args()
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    asyncio.run(Consumer(args).run())


if __name__ == "__main__":
    main()
