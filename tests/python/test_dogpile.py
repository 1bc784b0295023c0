"""Cache stampede (dogpile): many requests miss one cache entry at the same moment; the value must
be computed once while the others wait for it.

* test A: python-redis-lock's Django cache backend, ``redis_lock.django_cache.RedisCache``,
  unchanged, against a server with the module loaded (its lock is SET NX + BLPOP on
  ``lock-signal:<name>``).

50 threads, each with its own connection, start together on a barrier; the one that computes does
not return until the 49 others are really waiting for the lock (the server says so), so the
requests overlap for sure. Waiting is done with deadline loops on server state, never with fixed
sleeps. Every test runs with RESP2 and RESP3 clients (see conftest.py).
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait

import pytest
import redis
from django.conf import settings
from django.test import override_settings

N = 50  # concurrent requests
RESULT_TIMEOUT = 30.0  # seconds for all requests to return once started
WAITING_TIMEOUT = 10.0  # seconds for the others to show up as waiting


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def info(client, name):
    """LOCK.INFO as a dict with str keys (a map in RESP3, a flat array in RESP2)."""
    reply = client.execute_command("LOCK.INFO", name)
    if isinstance(reply, dict):
        return {text(k): v for k, v in reply.items()}
    return {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}


def wait_until(condition, what, timeout=WAITING_TIMEOUT):
    """Poll `condition()` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.002)


def free_blocked(client):
    """Make every blocked client return: drop all keys and CLIENT UNBLOCK whoever still waits."""
    try:
        client.flushall()
        for entry in client.client_list():
            if "b" in entry.get("flags", ""):
                client.client_unblock(entry["id"])
    except redis.RedisError:
        pass


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
