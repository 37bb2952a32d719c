#!/usr/bin/env python3
"""Conversations through llmq, turn after turn, for the affinity benchmark (bench/run.sh affinity).

Each conversation is a thread: it publishes a turn (the whole history as `messages`, streamed,
with its own reply stream), waits for the reply, appends the answer and a new user message, thinks
for a moment, and goes on. Prints one JSON object: per turn, prompt_ms, first_token_ms,
cached_tokens and prompt_tokens of every conversation. Speaks RESP over a plain socket, so it
needs nothing beyond Python.

usage: affinity.py REDIS_PORT CONVERSATIONS TURNS MODE   (MODE: session | opening)
"""
import json
import random
import socket
import sys
import threading
import time


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode("utf-8", "replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.read() for _ in range(size)]
        raise RuntimeError("unexpected reply %r" % line)


WORDS = ("queue stream worker slot lease backend token prompt cache reply history turn model server "
         "group consumer pending claim redis cluster shard replica answer question context window").split()


def words(rng, count):
    return " ".join(rng.choice(WORDS) for _ in range(count))


def conversation(port, index, turns, mode, results, lock):
    rng = random.Random(index)
    redis = Redis(port)
    reply_to = "llmq:affinity:%d" % index
    history = [{"role": "system", "content": "Conversation %d. %s" % (index, words(rng, 50))}]
    cursor = "0-0"
    for turn in range(turns):
        history.append({"role": "user", "content": words(rng, 25)})
        fields = ["messages", json.dumps(history), "max_tokens", "24", "id", "c%d-t%d" % (index, turn),
                  "reply_to", reply_to, "stream", "1"]
        if mode == "session":
            fields += ["session", "conversation-%d" % index]
        redis.call("XADD", "llmq:requests", "*", *fields)
        reply = None
        while reply is None:
            answer = redis.call("XREAD", "BLOCK", "60000", "STREAMS", reply_to, cursor)
            if not answer:
                raise RuntimeError("no reply to conversation %d turn %d" % (index, turn))
            entry_id, flat = answer[0][1][0]
            cursor = entry_id
            reply = dict(zip(flat[::2], flat[1::2]))
        if reply.get("status") != "ok":
            raise RuntimeError("conversation %d turn %d: %s" % (index, turn, reply))
        history.append({"role": "assistant", "content": reply.get("content", "")})
        with lock:
            results.append({
                "conversation": index, "turn": turn, "backend": reply.get("backend"),
                "prompt_ms": float(reply.get("prompt_ms") or 0), "first_token_ms": float(reply.get("first_token_ms") or 0),
                "cached_tokens": int(reply.get("cached_tokens") or 0), "prompt_tokens": int(reply.get("prompt_tokens") or 0),
            })
        # A person reads the answer and types the next message.
        time.sleep(rng.uniform(3.0, 6.0))


def main():
    port, conversations, turns, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    results, lock, errors = [], threading.Lock(), []

    def run(index):
        try:
            conversation(port, index, turns, mode, results, lock)
        except Exception as error:  # reported below: the benchmark fails, not hangs
            errors.append(str(error))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(conversations)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    if errors:
        sys.exit("affinity.py: " + "; ".join(errors[:3]))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
