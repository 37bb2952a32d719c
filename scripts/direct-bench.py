#!/usr/bin/env python3
"""Direct HTTP clients against llama-server's /v1/chat/completions, for comparison with llmq.

usage: direct-bench.py URL [--requests N] [--concurrency C] [--max-tokens K]
Prints one JSON line: requests, concurrency, wall_s, throughput_rps, tokens_per_s.
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--tag", default="", help="prefix for the prompts, so runs do not share cached prompts")
    parser.add_argument("--no-ignore-eos", action="store_true")
    args = parser.parse_args()
    target = urllib.parse.urlparse(args.url)
    lock = threading.Lock()
    next_index = [0]
    tokens = [0]

    def client():
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
        while True:
            with lock:
                if next_index[0] >= args.requests:
                    return
                index = next_index[0]
                next_index[0] += 1
            body = json.dumps({
                "messages": [{"role": "user", "content": f"{args.tag}tell a long story about request {index}"}],
                "max_tokens": args.max_tokens, "ignore_eos": not args.no_ignore_eos,
            })
            connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = json.loads(connection.getresponse().read())
            with lock:
                tokens[0] += response["usage"]["completion_tokens"]

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    print(json.dumps({"requests": args.requests, "concurrency": args.concurrency, "wall_s": round(wall, 3),
                      "throughput_rps": round(args.requests / wall, 3), "tokens_per_s": round(tokens[0] / wall, 1)}))


if __name__ == "__main__":
    main()
