"""Cache stampede (dogpile): many requests miss one cache entry at the same moment; the value must
be computed once while the others wait for it.

* test A: python-redis-lock's Django cache backend, ``redis_lock.django_cache.RedisCache``,
  unchanged, against a server with the module loaded (its lock is SET NX + BLPOP on
  ``lock-signal:<name>``);
* test B: ``rlock.cache.cached``, the same recipe with ``LOCK.*`` (clients/python/rlock/cache.py),
  including a ``compute()`` that raises.

50 threads, each with its own connection, start together on a barrier; the one that computes does
not return until the 49 others are really waiting for the lock (the server says so), so the
requests overlap for sure. Waiting is done with deadline loops on server state, never with fixed
sleeps. Every test runs with RESP2 and RESP3 clients (see conftest.py).
"""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait

import pytest
import redis
from django.conf import settings
from django.test import override_settings

import rlock.cache  # clients/python, installed into .venv by scripts/setup.sh --python
from helpers import free_blocked
from helpers import lock_info as info
from helpers import text
from helpers import wait_until

N = 50  # concurrent requests
RESULT_TIMEOUT = 30.0  # seconds for all requests to return once started
WAITING_TIMEOUT = 10.0  # seconds for the others to show up as waiting


def run_together(r, request):
    """Run `request(i)` for i in 0..N-1 in N threads released together by a barrier; return the
    list of (result or exception) in order. Threads left blocked by a failure are freed."""
    barrier = threading.Barrier(N)

    def one(i):
        barrier.wait(timeout=WAITING_TIMEOUT)
        try:
            return request(i)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            return exc

    pool = ThreadPoolExecutor(max_workers=N)
    futures = [pool.submit(one, i) for i in range(N)]
    try:
        done, pending = wait(futures, timeout=RESULT_TIMEOUT)
        if pending:
            pytest.fail(f"{len(pending)} of {N} requests did not return within {RESULT_TIMEOUT} s")
        return [f.result() for f in futures]
    finally:
        deadline = time.monotonic() + 15
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            free_blocked(r)
            time.sleep(0.02)
        pool.shutdown(wait=False, cancel_futures=True)


# --- A: python-redis-lock's Django backend, unchanged ---------------------------------------------

@pytest.fixture
def django_cache(redis_server, r):
    """Django's CACHES["default"] = python-redis-lock's backend on this test's server.

    Django settings can be configured once per process (and pytest runs every test file in one
    process), so they are configured here only if nobody did yet, with Django's defaults, and the
    cache is set per test with override_settings (which also resets django.core.cache.caches).
    Django keeps one cache object per thread; django-redis shares one connection pool per
    LOCATION, handing each concurrent command its own connection.
    """
    if not settings.configured:
        settings.configure()
    caches_setting = {
        "default": {
            "BACKEND": "redis_lock.django_cache.RedisCache",
            "LOCATION": f"unix://{redis_server.socket}",
            "OPTIONS": {"CONNECTION_POOL_KWARGS": {"protocol": redis_server.protocol}},
        }
    }
    with override_settings(CACHES=caches_setting):
        from django.core.cache import cache

        yield cache
        cache.client.get_client().connection_pool.disconnect()


def test_django_backend_computes_once_for_50_concurrent_requests(r, django_cache):
    from django.core.cache import cache  # a proxy: each thread gets its own backend object

    key = "dogpile-a"
    lock_name = "get_or_set:" + key  # the backend's lock name (key lock:get_or_set:dogpile-a)
    calls = []

    def creator():
        calls.append(threading.get_ident())
        # python-redis-lock's waiters block in BLPOP lock-signal:<name>; wait for all of them.
        wait_until(lambda: r.info("clients")["blocked_clients"] == N - 1,
                   f"{N - 1} waiters blocked in BLPOP")
        holder = info(r, lock_name)
        assert text(holder["owner"]) == text(r.get("lock:" + lock_name))
        assert holder["waiters"] == 0 and holder["python"] == 1
        return {"value": "expensive", "computed_by": threading.get_ident()}

    results = run_together(r, lambda i: cache.locked_get_or_set(key, creator))

    errors = [res for res in results if isinstance(res, Exception)]
    assert not errors, errors
    assert len(calls) == 1, f"the creator ran {len(calls)} times"
    assert all(res == {"value": "expensive", "computed_by": calls[0]} for res in results)
    assert r.execute_command("LOCK.OWNER", lock_name) is None
    assert r.info("clients")["blocked_clients"] == 0
    assert django_cache.get(key) == {"value": "expensive", "computed_by": calls[0]}


# --- B: rlock.cache.cached -------------------------------------------------------------------------

def test_cached_computes_once_for_50_concurrent_requests(r, new_client):
    key, lock_name = "dogpile-b", "cached:dogpile-b"
    clients = [new_client() for _ in range(N)]
    calls = []

    def compute():
        calls.append(threading.get_ident())
        wait_until(lambda: info(r, lock_name)["waiters"] == N - 1, f"{N - 1} waiters queued")
        assert r.info("clients")["blocked_clients"] == N - 1
        return b"expensive"

    results = run_together(r, lambda i: rlock.cache.cached(clients[i], key, 60, compute, lock_ttl=30))

    errors = [res for res in results if isinstance(res, Exception)]
    assert not errors, errors
    assert len(calls) == 1, f"compute ran {len(calls)} times"
    assert results == [b"expensive"] * N
    assert r.execute_command("LOCK.OWNER", lock_name) is None
    assert r.info("clients")["blocked_clients"] == 0
    assert r.get(key) == b"expensive"
    assert 59_000 < r.pttl(key) <= 60_000


class Boom(Exception):
    pass


def test_cached_compute_raising_releases_and_a_waiter_computes(r, new_client):
    key, lock_name = "dogpile-c", "cached:dogpile-c"
    clients = [new_client() for _ in range(N)]
    calls = []

    def compute():
        calls.append(threading.get_ident())
        if len(calls) == 1:
            wait_until(lambda: info(r, lock_name)["waiters"] == N - 1, f"{N - 1} waiters queued")
            raise Boom("the first computation fails")
        # The failed caller let the lock go at once (not after lock_ttl), a waiter took it and the
        # other waiters queued again behind it.
        wait_until(lambda: info(r, lock_name)["waiters"] == N - 2, f"{N - 2} waiters queued again")
        return b"second try"

    results = run_together(r, lambda i: rlock.cache.cached(clients[i], key, 60, compute, lock_ttl=60))

    assert len(calls) == 2, f"compute ran {len(calls)} times"
    assert calls[0] != calls[1], "the retry must run in a waiter, not in the caller that failed"
    failed = [res for res in results if isinstance(res, Exception)]
    assert len(failed) == 1 and isinstance(failed[0], Boom), failed
    assert results.count(b"second try") == N - 1
    assert r.execute_command("LOCK.OWNER", lock_name) is None
    assert r.info("clients")["blocked_clients"] == 0
    assert r.get(key) == b"second try"


def test_cached_compute_raising_alone_releases_the_lock(r):
    def compute():
        assert r.execute_command("LOCK.OWNER", "cached:k") is not None
        raise Boom("no value")

    with pytest.raises(Boom):
        rlock.cache.cached(r, "k", 10, compute)
    assert r.execute_command("LOCK.OWNER", "cached:k") is None
    assert r.get("k") is None
    assert rlock.cache.cached(r, "k", 10, lambda: b"v") == b"v"


def test_cached_hit_does_not_compute_or_lock(r):
    r.set("k", b"there")
    assert rlock.cache.cached(r, "k", 10, lambda: pytest.fail("computed on a hit")) == b"there"
    assert r.exists("lock:cached:k") == 0


def test_cached_serialize_deserialize_and_lock_name(r):
    value = rlock.cache.cached(r, "j", 5.5, lambda: {"a": [1, 2]}, serialize=json.dumps,
                               deserialize=json.loads, lock_name="my-lock")
    assert value == {"a": [1, 2]}
    assert json.loads(r.get("j")) == {"a": [1, 2]}
    assert 5_000 < r.pttl("j") <= 5_500
    assert rlock.cache.cached(r, "j", 5, lambda: pytest.fail("computed on a hit"),
                              deserialize=json.loads) == {"a": [1, 2]}
    assert r.exists("lock:my-lock") == 0


def test_cached_none_from_compute_is_an_error_and_releases(r):
    with pytest.raises(ValueError):
        rlock.cache.cached(r, "n", 10, lambda: None)
    assert r.execute_command("LOCK.OWNER", "cached:n") is None


def test_cached_timeout_while_another_computes(r):
    assert r.execute_command("LOCK.ACQUIRE", "cached:t", "someone", 60) in (b"OK", "OK")
    started = time.monotonic()
    with pytest.raises(rlock.cache.Timeout):
        rlock.cache.cached(r, "t", 10, lambda: pytest.fail("computed while locked"), timeout=0.2)
    assert 0.15 < time.monotonic() - started < 5
    assert text(r.execute_command("LOCK.OWNER", "cached:t")) == "someone"
    assert info(r, "cached:t")["waiters"] == 0


def test_cached_value_stored_by_another_holder_while_waiting(r, new_client, spawn):
    """A caller waiting for a lock held by someone other than cached() (so nobody lets the shared
    waiters' token go for it) gets the value that holder stores when it releases; the waiters'
    token then holds the lock for at most its 1 s lease, and a miss meanwhile is not held up."""
    assert r.execute_command("LOCK.ACQUIRE", "cached:h", "holder", 60) in (b"OK", "OK")
    waiter = spawn(rlock.cache.cached, new_client(), "h", 10, lambda: pytest.fail("computed"))
    wait_until(lambda: info(r, "cached:h")["waiters"] == 1, "the caller queued")
    r.set("h", b"from holder")
    assert r.execute_command("LOCK.RELEASE", "cached:h", "holder") == 1
    try:
        assert waiter.result(timeout=RESULT_TIMEOUT) == b"from holder"
    except FutureTimeout:
        pytest.fail("the waiter did not return")
    held = info(r, "cached:h")
    assert text(held["owner"]) == rlock.cache.WAITERS_TOKEN and 0 < held["ttl"] <= 1000
    r.delete("h")
    assert rlock.cache.cached(r, "h", 10, lambda: b"new", timeout=0.5) == b"new"
    assert r.execute_command("LOCK.OWNER", "cached:h") is None


def test_cached_holder_lease_running_out_a_waiter_computes(r, new_client, spawn):
    """The caller computing crashed (its lock is left to its lease): when the lease runs out the
    waiters are handed the lock with their shared token, find no value, let it go, and one of them
    computes."""
    assert r.execute_command("LOCK.ACQUIRE", "cached:e", "crashed", 1) in (b"OK", "OK")
    waiter = spawn(rlock.cache.cached, new_client(), "e", 10, lambda: b"recomputed")
    wait_until(lambda: info(r, "cached:e")["waiters"] == 1, "the caller queued")
    try:
        assert waiter.result(timeout=RESULT_TIMEOUT) == b"recomputed"
    except FutureTimeout:
        pytest.fail("the waiter did not return")
    assert r.execute_command("LOCK.OWNER", "cached:e") is None
    assert r.get("e") == b"recomputed"


def test_cached_error_reading_the_key_under_the_lock_releases_it(r, new_client):
    """The GET sent with LOCK.ACQUIRE fails (WRONGTYPE): the lock just taken is let go."""
    client = new_client()
    client.get = lambda key: None  # step 1 misses, so the pipelined ACQUIRE + GET runs
    r.rpush("l", "not a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        rlock.cache.cached(client, "l", 10, lambda: pytest.fail("computed"))
    assert r.execute_command("LOCK.OWNER", "cached:l") is None
