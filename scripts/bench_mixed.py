#!/usr/bin/env python3
"""Real python-redis-lock clients on a lock that module clients share, for `make bench`
(examples/bench/, workload `mixed`).

N threads, one redis connection and one `redis_lock.Lock(conn, name, expire=...)` each, loop:
`acquire(timeout=...)`; on success `INCR <inside>` (anything but 1 means another holder is
inside: an overlap), hold 0 to `--hold-ms` ms (uniformly random), `DECR <inside>`, `release()`
(a `NotAcquired` there counts as an overlap too: the lock was not ours any more). A failed
acquire (the timeout passed) is counted, and the loop goes on.

Prints `ready` once connected, waits for a line on stdin (the benchmark starts its own clients
at the same moment), runs for `--seconds` (an acquire that starts in time counts, whenever it
ends), then prints one JSON object: {"seconds": s, "acquisitions": [per client], "failures":
[...], "overlaps": [...]}.
"""
import argparse
import json
import random
import sys
import threading
import time

import redis
import redis_lock


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--name", default="hot")
    ap.add_argument("--inside", default="mixed:inside")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--hold-ms", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--expire", type=int, default=10)
    ap.add_argument("--timeout", type=int, default=5)
    args = ap.parse_args()

    n = args.clients
    acquisitions, failures, overlaps = [0] * n, [0] * n, [0] * n
    conns = [redis.StrictRedis(unix_socket_path=args.socket) for _ in range(n)]
    for c in conns:
        c.ping()
    go = threading.Event()
    end = [0.0]

    def worker(i):
        conn = conns[i]
        lock = redis_lock.Lock(conn, args.name, expire=args.expire)
        rng = random.Random(i)
        go.wait()
        while time.perf_counter() < end[0]:
            if not lock.acquire(timeout=args.timeout):
                failures[i] += 1
                continue
            acquisitions[i] += 1
            if conn.incr(args.inside) != 1:
                overlaps[i] += 1
            time.sleep(rng.uniform(0, args.hold_ms / 1000.0))
            conn.decr(args.inside)
            try:
                lock.release()
            except redis_lock.NotAcquired:
                overlaps[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    end[0] = t0 + args.seconds
    go.set()
    for t in threads:
        t.join()
    print(json.dumps({
        "seconds": time.perf_counter() - t0,
        "acquisitions": acquisitions,
        "failures": failures,
        "overlaps": overlaps,
    }))


if __name__ == "__main__":
    main()
