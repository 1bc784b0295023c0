#!/usr/bin/env python3
"""The real python-redis-lock library under contention, for `make bench` (examples/bench/).

N threads, one redis connection each, take and release one lock in a loop with
`redis_lock.Lock(conn, name, expire=...)`, holding it `--hold-ms` each time. After a warm-up the
script measures for `--seconds`: acquisitions, per-thread counts, acquire latencies, and the
server's `total_commands_processed` delta (taken with INFO on a separate connection; the one INFO
counted inside the delta is subtracted) and server CPU time (/proc/<pid>/stat).

Prints `key=value` lines (comma-separated lists) for the Rust benchmark to parse.
"""
import argparse
import os
import threading
import time

import redis
import redis_lock


def server_cpu(pid):
    """utime + stime of the server process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--hold-ms", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.25)
    ap.add_argument("--expire", type=int, default=10)
    ap.add_argument("--server-pid", type=int, required=True)
    args = ap.parse_args()

    measuring = threading.Event()
    stop = threading.Event()
    start = threading.Barrier(args.clients + 1)
    counts = [0] * args.clients
    latencies = [[] for _ in range(args.clients)]
    hold = args.hold_ms / 1000.0

    def worker(i):
        conn = redis.StrictRedis(unix_socket_path=args.socket)
        lock = redis_lock.Lock(conn, args.name, expire=args.expire)
        start.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            lock.acquire()
            t1 = time.perf_counter()
            if hold:
                time.sleep(hold)
            lock.release()
            if measuring.is_set():
                counts[i] += 1
                latencies[i].append((t1 - t0) * 1e6)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    admin = redis.StrictRedis(unix_socket_path=args.socket)
    start.wait()
    time.sleep(args.warmup)
    cmds0 = admin.info("stats")["total_commands_processed"]
    cpu0 = server_cpu(args.server_pid)
    measuring.set()
    t0 = time.perf_counter()
    time.sleep(args.seconds)
    measuring.clear()
    elapsed = time.perf_counter() - t0
    cpu = server_cpu(args.server_pid) - cpu0
    cmds1 = admin.info("stats")["total_commands_processed"]
    stop.set()
    for t in threads:
        t.join()

    lat = [x for per in latencies for x in per]
    print(f"seconds={elapsed:.6f}")
    print(f"acquisitions={sum(counts)}")
    print(f"commands={cmds1 - cmds0 - 1}")
    print(f"server_cpu={cpu:.4f}")
    print("per_client=" + ",".join(str(c) for c in counts))
    print("latencies_us=" + ",".join(f"{x:.1f}" for x in lat))


if __name__ == "__main__":
    main()
