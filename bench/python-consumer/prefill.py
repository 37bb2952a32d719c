#!/usr/bin/env python3
"""Pre-fill the request stream: N entries `prompt hello max_tokens 8 id <i>`, pipelined.

    python3 prefill.py [--redis-url URL] [--stream llmq:requests] [--requests 20000] [--max-tokens 8]
"""
import argparse

import redis


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--stream", default="llmq:requests")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--prompt", default="hello")
    args = parser.parse_args()
    client = redis.from_url(args.redis_url)
    for start in range(0, args.requests, 1000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1000, args.requests)):
                pipe.xadd(args.stream, {"prompt": args.prompt, "max_tokens": args.max_tokens, "id": i})
            pipe.execute()
    print(client.xlen(args.stream))


if __name__ == "__main__":
    main()
