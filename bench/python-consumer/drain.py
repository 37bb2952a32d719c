#!/usr/bin/env python3
"""Drain rate of a reply stream, from its entry IDs (the ms part is Redis's clock).

    python3 drain.py [--redis-url URL] [--replies llmq:replies] [--check]

prints {"replies": n, "seconds": s, "per_second": r}: s from the first reply's ID to the last's,
r = (n - 1) / s. With --check it also counts the request stream's entries, the distinct
requests replied to, duplicate replies, error replies and the group's pending entries, and
exits 1 unless every request has exactly one reply, none is an error, and nothing is pending.
"""
import argparse
import json
import sys

import redis


def id_ms(entry_id):
    return int(entry_id.split("-")[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--replies", default="llmq:replies")
    parser.add_argument("--check", action="store_true", help="also check one reply per request, nothing pending")
    parser.add_argument("--stream", default="llmq:requests", help="request stream (for --check)")
    parser.add_argument("--group", default="llmq", help="consumer group (for --check)")
    args = parser.parse_args()
    client = redis.from_url(args.redis_url, decode_responses=True)

    n, first, last, start = 0, None, None, "-"
    replied, duplicates, errors = set(), 0, 0
    while True:
        batch = client.xrange(args.replies, min=start, count=10000)
        if not batch:
            break
        for entry_id, fields in batch:
            n += 1
            first = first or entry_id
            last = entry_id
            if args.check:
                request = fields.get("request")
                duplicates += request in replied
                replied.add(request)
                errors += fields.get("status") != "ok"
        start = "(" + batch[-1][0]
    seconds = (id_ms(last) - id_ms(first)) / 1000 if n else 0.0
    result = {"replies": n, "seconds": seconds, "per_second": round((n - 1) / seconds, 1) if seconds > 0 else None}
    ok = True
    if args.check:
        requests = client.xlen(args.stream)
        pending = client.xpending(args.stream, args.group)["pending"]
        ok = requests == len(replied) == n and duplicates == 0 and errors == 0 and pending == 0
        result.update(requests=requests, distinct_requests_replied=len(replied), duplicate_replies=duplicates,
                      error_replies=errors, pending=pending, ok=ok)
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
