#!/usr/bin/env python3
"""Cache stampede (dogpile) benchmark: how long the others wait once the value is ready.

Each round, `--clients` callers (50 threads, or processes with --processes; one connection each)
ask at the same moment (a barrier) for one missing cache key; one of them computes the value, and
its compute() returns only once all the others are blocked waiting for the lock (INFO clients:
blocked_clients), so they all overlap.
Measured: for each of the others, the time from the computing caller's SET returning to that
caller's return, i.e. how long the herd keeps waiting after the value is there: p50/p99/max over
all rounds' waits, and "last (median)", the median over the rounds of a round's slowest caller
(robust to a round stalled by the machine's other load).

Recipes (`--recipes`, default `django,cached`):

  django          python-redis-lock 4's Django backend, unchanged: redis_lock.django_cache.RedisCache
                  .locked_get_or_set (SET NX + BLPOP lock-signal:<name>; a release wakes one
                  waiter, which takes the lock, GETs the value and releases in turn)
  cached          rlock.cache.cached (clients/python/rlock/cache.py): waiters block in
                  LOCK.ACQUIRE with one shared token and are all woken at once; the computing
                  caller sends SET + LOCK.RELEASE + LOCK.RELEASE of the shared token in one round
                  trip, so each waiter then only GETs
For comparison, other LOCK.* recipes (defined here):
  fifo            the naive one: each waiter blocks with its own token (LOCK.ACQUIRE * BLOCK), is
                  handed the lock in turn, GETs, releases (two round trips each, one after another)
  fifo-pipelined  as fifo, but a handed-over waiter sends GET + LOCK.RELEASE in one round trip
  shared-pipelined  waiters share one token as in cached, but each woken waiter sends
                  GET + LOCK.RELEASE (pipelined) itself

Starts its own redis-server with the module on a unix socket in a temporary directory (or uses
`--socket` of a running one). Examples:

  .venv/bin/python scripts/bench_dogpile.py --rounds 30
  .venv/bin/python scripts/bench_dogpile.py --rounds 30 --recipes django,cached,fifo,shared-pipelined \\
      --server /work/shared/servers/redis-7.2.6/redis-server --module target/release/librlock.so

Needs the Python test venv (scripts/setup.sh --python: python-redis-lock, Django, django-redis).
`--json` prints the numbers as one JSON object instead of the table.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "clients" / "python"))

import rlock.cache  # noqa: E402

RECIPES = ("django", "cached", "fifo", "fifo-pipelined", "shared-pipelined")
RESULT_TIMEOUT = 60.0
VALUE = b"x" * 100  # the cached value


# --- server ----------------------------------------------------------------------------------------

class Server:
    """A redis-server with the module, on a unix socket in a temporary directory."""

    def __init__(self, binary, module):
        self.dir = tempfile.mkdtemp(prefix="rlock-bench-dogpile-")
        self.socket = os.path.join(self.dir, "redis.sock")
        self.log = os.path.join(self.dir, "redis.log")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--logfile", self.log,
             "--loadmodule", str(module)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        probe = redis.Redis(unix_socket_path=self.socket, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"redis-server exited with {self.proc.returncode}; log: {self.tail()}")
            try:
                probe.ping()
                break
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("redis-server did not answer PING within 10 s")
                time.sleep(0.01)
        try:
            probe.execute_command("LOCK.OWNER", "probe")
        except redis.ResponseError as exc:
            self.stop()
            raise SystemExit(f"LOCK.OWNER fails ({exc}): module not loaded?")
        probe.close()

    def tail(self):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-10:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- recipes ---------------------------------------------------------------------------------------

class Clock:
    """When the computing caller's SET returned, and which caller it was (shared memory, so it
    works across threads and forked processes)."""

    def __init__(self, ctx):
        self._at = ctx.Value("d", 0.0, lock=False)
        self._by = ctx.Value("i", -1, lock=False)
        self.me = -1  # the caller index of the thread/process using this copy

    def reset(self):
        self._at.value, self._by.value = 0.0, -1

    def mark(self):
        self._at.value = time.perf_counter()  # CLOCK_MONOTONIC: one clock for all processes
        self._by.value = current_caller()

    @property
    def set_at(self):
        return self._at.value if self._by.value >= 0 else None

    @property
    def by(self):
        return self._by.value


_caller = threading.local()


def current_caller():
    return getattr(_caller, "index", -1)


class TimedPipeline(redis.client.Pipeline):
    clock = None

    def execute(self, raise_on_error=True):
        has_set = any(args[0] == "SET" for args, _ in self.command_stack)
        result = super().execute(raise_on_error)
        if has_set:
            self.clock.mark()
        return result


def timed_client(socket, protocol, clock):
    """A redis.Redis whose pipelines note when one holding a SET returned (rlock.cache.cached
    sends SET + LOCK.RELEASE as one pipeline)."""
    client = redis.Redis(unix_socket_path=socket, protocol=protocol)

    def pipeline(transaction=True, shard_hint=None):
        pipe = TimedPipeline(client.connection_pool, client.response_callbacks, transaction, shard_hint)
        pipe.clock = clock
        return pipe

    client.pipeline = pipeline
    return client


def fifo_cached(client, key, ttl, compute, clock, pipelined):
    """The naive LOCK.* recipe: each waiter is handed the lock in turn (FIFO)."""
    lock = "fifo:" + key
    value = client.get(key)
    if value is not None:
        return value
    handed_miss = False
    while True:
        token = client.execute_command("LOCK.ACQUIRE", lock, "*", 60, "BLOCK", 0)
        if pipelined and not handed_miss:
            pipe = client.pipeline(transaction=False)
            pipe.get(key)
            pipe.execute_command("LOCK.RELEASE", lock, token)
            value, _ = pipe.execute()
            if value is not None:
                return value
            handed_miss = True  # released without a value: take it again, and compute
            continue
        try:
            value = client.get(key)
            if value is not None:
                return value
            value = compute()
            client.set(key, value, ex=ttl)
            clock.mark()
            return value
        finally:
            client.execute_command("LOCK.RELEASE", lock, token)


def shared_pipelined_cached(client, key, ttl, compute, clock):
    """Waiters share one token (woken together); each woken waiter sends GET + LOCK.RELEASE."""
    lock, shared = "shared:" + key, "waiters"
    value = client.get(key)
    if value is not None:
        return value
    while True:
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("LOCK.ACQUIRE", lock, "*", 60)
        pipe.get(key)
        token, value = pipe.execute()
        if token is not None:
            if value is None:
                value = compute()
                pipe = client.pipeline(transaction=False)
                pipe.set(key, value, ex=ttl)
                pipe.execute_command("LOCK.RELEASE", lock, token)
                pipe.execute()
                clock.mark()
            else:
                client.execute_command("LOCK.RELEASE", lock, token)
            return value
        if value is not None:
            return value
        client.execute_command("LOCK.ACQUIRE", lock, shared, 60, "BLOCK", 0)
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.execute_command("LOCK.RELEASE", lock, shared)
        value, _ = pipe.execute()
        if value is not None:
            return value


def setup_django(socket, protocol):
    from django.conf import settings

    settings.configure(CACHES={
        "default": {
            "BACKEND": "redis_lock.django_cache.RedisCache",
            "LOCATION": f"unix://{socket}",
            "OPTIONS": {"CONNECTION_POOL_KWARGS": {"protocol": protocol}},
        }
    })


def make_request(recipe, socket, protocol, clock):
    """A per-thread callable(key, compute) for the recipe (run in the thread that uses it)."""
    if recipe == "django":
        from django.core.cache import caches

        cache = caches["default"]  # this thread's backend object
        plain_set = cache.set

        def timed_set(*args, **kwargs):  # an instance attribute: the class stays unchanged
            result = plain_set(*args, **kwargs)
            clock.mark()
            return result

        cache.set = timed_set
        return lambda key, compute: cache.locked_get_or_set(key, compute)
    if recipe == "cached":
        client = timed_client(socket, protocol, clock)
        return lambda key, compute: rlock.cache.cached(client, key, 60, compute, lock_ttl=60)
    client = redis.Redis(unix_socket_path=socket, protocol=protocol)
    if recipe == "shared-pipelined":
        return lambda key, compute: shared_pipelined_cached(client, key, 60, compute, clock)
    pipelined = recipe == "fifo-pipelined"
    return lambda key, compute: fifo_cached(client, key, 60, compute, clock, pipelined)


# --- rounds ----------------------------------------------------------------------------------------

class Herd:
    """`clients` callers for one recipe (threads of this process, or forked processes), each with
    its own connection, reused across rounds."""

    def __init__(self, recipe, socket, protocol, clients, processes):
        ctx = multiprocessing.get_context("fork")
        self.recipe, self.clients, self.socket, self.protocol = recipe, clients, socket, protocol
        self.clock = Clock(ctx)
        self.start = ctx.Barrier(clients + 1)
        self.done = ctx.Barrier(clients + 1)
        self.returned = ctx.Array("d", clients, lock=False)
        self.failed = ctx.Value("i", 0)
        self.calls = ctx.Value("i", 0)
        self.round_no = ctx.Value("i", 0, lock=False)
        self.stop = ctx.Value("b", 0, lock=False)
        spawn = ctx.Process if processes else threading.Thread
        self.workers = [spawn(target=self.worker, args=(i,), daemon=True) for i in range(clients)]
        for w in self.workers:
            w.start()

    def key(self):
        return f"dogpile:{self.recipe}:{self.round_no.value}"

    def compute(self):
        with self.calls.get_lock():
            self.calls.value += 1
        admin = redis.Redis(unix_socket_path=self.socket, protocol=self.protocol)
        deadline = time.monotonic() + RESULT_TIMEOUT
        try:
            while admin.info("clients")["blocked_clients"] < self.clients - 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the others did not all block")
                time.sleep(0.0005)
        finally:
            admin.close()
        return VALUE

    def worker(self, i):
        _caller.index = i
        request = make_request(self.recipe, self.socket, self.protocol, self.clock)
        while True:
            self.start.wait()
            if self.stop.value:
                return
            try:
                value = request(self.key(), self.compute)
                self.returned[i] = time.perf_counter()
                if value != VALUE:
                    raise RuntimeError(f"wrong value {value!r}")
            except Exception as exc:  # noqa: BLE001
                print(f"{self.recipe} caller {i}: {exc!r}", file=sys.stderr)
                with self.failed.get_lock():
                    self.failed.value += 1
            self.done.wait()

    def round(self, n):
        self.round_no.value = n
        self.clock.reset()
        self.calls.value = 0
        self.start.wait(timeout=RESULT_TIMEOUT)
        self.done.wait(timeout=RESULT_TIMEOUT)
        if self.failed.value:
            raise SystemExit(f"{self.recipe}: {self.failed.value} callers failed")
        if self.calls.value != 1 or self.clock.set_at is None:
            raise SystemExit(f"{self.recipe}: computed {self.calls.value} times in round {n}")
        set_at, by = self.clock.set_at, self.clock.by
        waits = [(t - set_at) * 1e3 for i, t in enumerate(self.returned) if i != by]
        assert len(waits) == self.clients - 1
        return waits

    def close(self):
        self.stop.value = 1
        self.start.wait(timeout=RESULT_TIMEOUT)
        for w in self.workers:
            w.join(timeout=RESULT_TIMEOUT)


def pct(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))]


def summary(waits_per_round):
    flat = sorted(w for ws in waits_per_round for w in ws)
    return {
        "p50_ms": pct(flat, 50),
        "p99_ms": pct(flat, 99),
        "max_ms": flat[-1],
        "last_waiter_median_ms": statistics.median(max(ws) for ws in waits_per_round),
        "samples": len(flat),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="measured rounds per recipe (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent requests per round (default 50)")
    ap.add_argument("--recipes", default="django,cached", help=f"comma-separated, of {','.join(RECIPES)}")
    ap.add_argument("--server", default=os.environ.get("REDIS_SERVER") or shutil.which("redis-server"),
                    help="redis-server/valkey-server binary (default $REDIS_SERVER or redis-server on PATH)")
    ap.add_argument("--module", default=os.environ.get("RLOCK_MODULE") or str(REPO / "target/release/librlock.so"),
                    help="the module .so (default $RLOCK_MODULE or target/release/librlock.so)")
    ap.add_argument("--socket", help="use this running server (with the module) instead of starting one")
    ap.add_argument("--protocol", type=int, choices=(2, 3), default=2, help="RESP version (default 2)")
    ap.add_argument("--processes", action="store_true",
                    help="one process per caller (forked) instead of one thread each: no GIL between them")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    recipes = [x.strip() for x in args.recipes.split(",") if x.strip()]
    for recipe in recipes:
        if recipe not in RECIPES:
            ap.error(f"unknown recipe {recipe!r} (expected {', '.join(RECIPES)})")

    server = None
    if args.socket:
        socket = args.socket
    else:
        if not args.server or not os.access(args.server, os.X_OK):
            ap.error(f"no server binary ({args.server!r}); use --server")
        if not Path(args.module).is_file():
            ap.error(f"module not found: {args.module}; use --module")
        server = Server(args.server, args.module)
        socket = server.socket
    try:
        admin = redis.Redis(unix_socket_path=socket)
        server_info = admin.info("server")
        version = (f"{server_info.get('server_name', 'redis')} "
                   f"{server_info.get('valkey_version') or server_info.get('redis_version')}")
        if "django" in recipes:
            setup_django(socket, args.protocol)
        herds = {recipe: Herd(recipe, socket, args.protocol, args.clients, args.processes) for recipe in recipes}
        waits = {recipe: [] for recipe in recipes}
        for n in range(args.warmup + args.rounds):
            for recipe in recipes:  # interleaved, so drift in the machine's load hits all alike
                w = herds[recipe].round(n)
                if n >= args.warmup:
                    waits[recipe].append(w)
        for herd in herds.values():
            herd.close()
        if admin.info("clients")["blocked_clients"] != 0:
            raise SystemExit("clients left blocked")
    finally:
        if server is not None:
            server.stop()

    results = {recipe: summary(waits[recipe]) for recipe in recipes}
    if args.json:
        print(json.dumps({"server": version, "clients": args.clients, "rounds": args.rounds,
                          "protocol": args.protocol,
                          "callers": "processes" if args.processes else "threads", "results": results}))
        return
    base = recipes[0]
    print(f"dogpile: {args.clients} concurrent requests for one missing key, {args.rounds} rounds "
          f"(+{args.warmup} warm-up), server {version}, RESP{args.protocol}, "
          f"one {'process' if args.processes else 'thread'} per caller")
    print(f"time from the computing caller's SET returning to each of the {args.clients - 1} others' return (ms)")
    cols = ["p50_ms", "p99_ms", "max_ms", "last_waiter_median_ms"]
    heads = ["p50", "p99", "max", "last (median)"]
    print(f"{'recipe':<18}" + "".join(f"{h:>16}" for h in heads) + f"   ratio {base}/recipe (p50, p99, max)")
    for recipe in recipes:
        s = results[recipe]
        ratio = ", ".join(f"{results[base][c] / s[c]:.1f}x" if s[c] > 0 else "-" for c in cols[:3])
        print(f"{recipe:<18}" + "".join(f"{s[c]:>16.3f}" for c in cols) + f"   {ratio}")


if __name__ == "__main__":
    main()
