#!/usr/bin/env python3
"""rlock's Python client against python-redis-lock, side by side on one server with the module.

    .venv/bin/python scripts/bench_client.py [--seconds 3] [--threads 8] [--out docs/bench-clients.md]

Workloads, each run for both libraries, one after the other, on the same server:

- uncontended: one thread, ``with Lock(conn, name, expire=60): pass`` in a loop; µs per cycle and
  commands per cycle (from INFO commandstats); three rounds, the libraries taking turns, the
  median round of each;
- contended: ``--threads`` threads, each with its own connection, on one lock, hold 0: acquisitions
  per second, the least and the most any thread got (fairness), commands per acquisition.

Prints a markdown table with ratios (rlock / python-redis-lock). Part of ``make bench``. Absolute
numbers move between runs on a shared machine; the ratios of one run are the result.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import redis_lock

import rlock

REPO = Path(__file__).resolve().parents[1]


class Server:
    def __init__(self, binary, module):
        self.dir = tempfile.mkdtemp(prefix='rlock-bench-client-')
        self.socket = os.path.join(self.dir, 'redis.sock')
        self.proc = subprocess.Popen(
            [binary, '--port', '0', '--unixsocket', self.socket, '--save', '', '--appendonly', 'no',
             '--dir', self.dir, '--loadmodule', str(Path(module).resolve())],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().execute_command('LOCK.OWNER', 'probe')
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError('redis-server with the module did not start')
                time.sleep(0.01)

    def client(self):
        return redis.Redis(unix_socket_path=self.socket, protocol=2)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def total_calls(conn):
    return sum(v['calls'] for k, v in conn.info('commandstats').items() if k.lower() not in ('cmdstat_info', 'cmdstat_config|resetstat'))


def uncontended(server, lib, seconds):
    """µs per cycle and commands per cycle. Each library has a lock name of its own: the module
    signals a name python-redis-lock's SET touched in the last 2 s, which would tax rlock's
    releases for python-redis-lock's run."""
    conn = server.client()
    name = f'u-{lib.__name__}'
    with lib.Lock(conn, name, expire=60):  # warm up: scripts loaded, connection open
        pass
    conn.config_resetstat()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            with lib.Lock(conn, name, expire=60):
                pass
        n += 100
    elapsed = time.perf_counter() - start
    return {'usec': elapsed / n * 1e6, 'cmds': total_calls(conn) / n}


def alternating(libs, run, rounds=3):
    """``run(lib)`` for each library in turn, ``rounds`` times; per library the round with the
    median µs: a slow spell of the machine then hits both libraries alike."""
    results = {name: [] for name in libs}
    for _ in range(rounds):
        for name, lib in libs.items():
            results[name].append(run(lib))
    return {name: sorted(rs, key=lambda r: r['usec'])[len(rs) // 2] for name, rs in results.items()}


def contended(server, lib, seconds, threads):
    conn = server.client()
    conn.flushall()
    conn.config_resetstat()
    counts = [0] * threads
    stop = threading.Event()
    ready = threading.Barrier(threads + 1)

    def work(i):
        c = server.client()
        lock = lib.Lock(c, f'hot-{lib.__name__}', expire=60)
        ready.wait()
        while not stop.is_set():
            if lock.acquire(timeout=5):
                counts[i] += 1
                lock.release()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    time.sleep(seconds)  # the measuring period, not synchronisation
    stop.set()
    for w in workers:
        w.join(30)
    total = sum(counts)
    return {
        'per_sec': total / seconds,
        'least': min(counts),
        'most': max(counts),
        'cmds': total_calls(conn) / max(total, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seconds', type=float, default=3.0)
    ap.add_argument('--threads', type=int, default=8)
    ap.add_argument('--server', default=os.environ.get('REDIS_SERVER') or shutil.which('redis-server'))
    ap.add_argument('--module', default=os.environ.get('RLOCK_MODULE') or str(REPO / 'target/release/librlock.so'))
    ap.add_argument('--out', help='also write the table to this markdown file')
    args = ap.parse_args()

    server = Server(args.server, args.module)
    try:
        version = server.client().info('server').get('redis_version')
        libs = {'python-redis-lock': redis_lock, 'rlock': rlock}
        u = alternating(libs, lambda lib: uncontended(server, lib, args.seconds / 3))
        c = {name: contended(server, lib, args.seconds, args.threads) for name, lib in libs.items()}
    finally:
        server.stop()

    p, r = 'python-redis-lock', 'rlock'
    lines = [
        f'Python clients, one server ({args.server}, {version}) with the module loaded; '
        f'{args.seconds:g} s per run; `.venv/bin/python scripts/bench_client.py`',
        '',
        '| workload | python-redis-lock | rlock (clients/python) | rlock / python-redis-lock |',
        '|---|---|---|---|',
        f"| uncontended `with Lock(...)`: µs per cycle | {u[p]['usec']:.1f} | {u[r]['usec']:.1f} | {u[r]['usec'] / u[p]['usec']:.2f}× |",
        f"| uncontended: commands run per cycle (INFO commandstats: with those run inside scripts and by the module) | {u[p]['cmds']:.2f} | {u[r]['cmds']:.2f} | |",
        f"| {args.threads} threads, one lock, hold 0: acquisitions/s | {c[p]['per_sec']:.0f} | {c[r]['per_sec']:.0f} | {c[r]['per_sec'] / max(c[p]['per_sec'], 1):.2f}× |",
        f"| {args.threads} threads: least / most acquisitions of one thread | {c[p]['least']} / {c[p]['most']} | {c[r]['least']} / {c[r]['most']} | |",
        f"| {args.threads} threads: commands run per acquisition | {c[p]['cmds']:.2f} | {c[r]['cmds']:.2f} | |",
    ]
    text = '\n'.join(lines) + '\n'
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == '__main__':
    sys.exit(main())
