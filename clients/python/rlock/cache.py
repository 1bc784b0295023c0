"""Cache stampede (dogpile) protection with the rlock module's ``LOCK.*`` commands.

When a popular cache entry is missing, every request that misses it would compute it at once (the
"dogpile", "thundering herd" or "cache stampede"). :func:`cached` lets exactly one caller compute
the value while the others wait for it, and hands the value to all of them as soon as it is
stored, without serving stale data. It needs only redis-py (the recipe below uses the module's
commands; without the module, see the end)::

    import rlock.cache

    report = rlock.cache.cached(conn, "report:2024", 600, build_report, lock_ttl=120)

The recipe (``<lock>`` is ``cached:<key>`` unless ``lock_name`` says otherwise, so a ``{hashtag}``
in the key keeps the lock in the key's cluster slot):

1. ``GET key``: a hit is returned.
2. ``LOCK.ACQUIRE <lock> * lock_ttl`` and ``GET key``, pipelined (one round trip, no blocking):

   - the lock is taken (the server made the token): if the ``GET`` found a value (stored since
     step 1), return it; otherwise ``compute()`` and return its result. Either way the lock is
     then let go in one round trip: ``SET key value EX ttl`` (when computed),
     ``LOCK.RELEASE <lock> token`` (the value is stored before anyone is woken) and
     ``LOCK.RELEASE <lock> rlock.cache:waiters`` (see 3). If ``compute()`` raises, the lock is let
     go the same way (without ``SET``) and the exception goes to the caller: the waiters then wake,
     find no value, and try again (step 2) themselves, one of them computing.
   - the lock is held but the ``GET`` found a value: return it.
   - the lock is held and there is no value yet: go to 3.
3. Wait: ``LOCK.ACQUIRE <lock> rlock.cache:waiters 1 BLOCK ms``. Every waiter blocks with the
   **same** token, so when the computing caller releases, the module hands the lock to that token
   and replies to **all** waiters at once (connections waiting with one token are one owner),
   instead of one after the other; the computing caller's next command, in the same round trip,
   lets the waiters' token go again, so the lock is free by the time they look. Each waiter then
   needs one ``GET key`` and returns the value. No value (the computing caller failed, or its
   ``lock_ttl`` ran out and the module handed the lock to the waiters' token): ``LOCK.RELEASE
   <lock> rlock.cache:waiters`` and back to step 2. Holders of the shared token never compute, so
   ``compute()`` still runs under a lock of its own, once at a time. Should a lock be handed to the
   waiters' token by someone else (a holder that is not :func:`cached`), that token keeps it for
   its 1 s lease at most, and the next caller that misses takes it over (same token) and lets it
   go at once.

With a plain first-come-first-served hand-over, the waiters would instead be served one after
the other, each holding the lock for a ``GET`` and a ``LOCK.RELEASE`` (python-redis-lock's
``locked_get_or_set`` does the same, with ``BLPOP`` wake-ups); the last of 49 waiters then waits
for ~100 round trips after the value is ready instead of one (``scripts/bench_dogpile.py``
measures it).

Values are what redis-py gives: ``bytes`` (``str`` with ``decode_responses=True``). The caller
that computed gets ``compute()``'s own result, the others the stored value; so have ``compute``
return ``bytes``/``str``, or pass ``serialize`` (value -> ``bytes``/``str``, e.g. ``json.dumps``)
and ``deserialize`` (the stored value -> value, e.g. ``json.loads``).

``lock_ttl`` (whole seconds) bounds how long a crashed caller can keep the others waiting; it
should exceed the time ``compute()`` may take: if it runs out while computing, another caller
computes too.

Without the module (probed once per connection pool, see :mod:`rlock`), the same recipe runs on
python-redis-lock's protocol, on the same lock key ``lock:<lock>``: ``SET NX EX lock_ttl`` and
``GET key`` pipelined; the caller that took the lock computes, stores, and lets it go with
python-redis-lock's release script (which pushes one element on ``lock-signal:<lock>``); the
others ``BLPOP`` that list (at most ``lock_ttl`` seconds at a time, so a crashed holder delays
them by its lease at most), and a waiter woken that finds the value pushes the signal on again
before it returns, so the waiters wake one after the other, one round trip each, as
python-redis-lock's own ``locked_get_or_set`` would serve them.
"""

import math
import time

from ._base import UNLOCK_SCRIPT
from ._base import new_id
from .lock import module_loaded

__all__ = ["cached", "Timeout", "WAITERS_TOKEN"]

WAITERS_TOKEN = "rlock.cache:waiters"
"""The token every waiter blocks with (never the token of a caller that computes)."""


class Timeout(TimeoutError):
    """Neither the value nor the lock came within ``timeout`` seconds."""


def _set_args(ttl):
    if ttl is None:
        return {}
    if isinstance(ttl, int):
        return {"ex": ttl}
    return {"px": max(1, int(round(ttl * 1000)))}


def cached(client, key, ttl, compute, *, lock_ttl=60, timeout=None, lock_name=None,
           serialize=None, deserialize=None):
    """The value cached at ``key``; on a miss ``compute()`` runs once, under a lock, while the
    other callers wait for its value (see the module docstring for the recipe).

    :param client: a ``redis.Redis`` (with the rlock module loaded or not).
    :param key: the cache key (the value is a plain string key).
    :param ttl: the cached value's time to live in seconds (int or float; ``None``: no expiry).
    :param compute: called without arguments to make the value; must not return ``None``.
    :param lock_ttl: the lock's lease in whole seconds (the longest ``compute()`` may take).
    :param timeout: seconds to wait for the value or the lock; ``None``: no limit. When it runs
        out, :class:`Timeout` is raised.
    :param lock_name: the lock's name (key ``lock:<lock_name>``); default ``cached:<key>``.
    :param serialize: value -> ``bytes``/``str`` to store; default: store ``compute()``'s result.
    :param deserialize: stored ``bytes``/``str`` -> value; default: return it as redis-py gives.
    """
    if isinstance(key, bytes):
        key = key.decode()
    lock = lock_name if lock_name is not None else "cached:" + key
    load = deserialize if deserialize is not None else (lambda raw: raw)
    deadline = None if timeout is None else time.monotonic() + timeout

    value = client.get(key)
    if value is not None:
        return load(value)
    if not module_loaded(client):
        return _plain(client, key, ttl, compute, lock_ttl, timeout, deadline, lock, serialize, load)

    while True:
        # 2. Try to become the one that computes; the GET sees a value stored meanwhile.
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("LOCK.ACQUIRE", lock, "*", lock_ttl)
        pipe.get(key)
        token, value = pipe.execute(raise_on_error=False)
        if isinstance(token, Exception):
            raise token
        if token is not None:
            stored = None
            try:
                if isinstance(value, Exception):  # e.g. WRONGTYPE: let the lock go, then raise
                    raise value
                if value is not None:
                    return load(value)
                result = compute()
                if result is None:
                    raise ValueError("compute() must return a value, not None")
                stored = serialize(result) if serialize is not None else result
                return result
            finally:
                # One round trip: store the value (if any), hand the lock to the waiters (all woken
                # at once, holding the shared token) and let it go at once: they only need to GET.
                pipe = client.pipeline(transaction=False)
                if stored is not None:
                    pipe.set(key, stored, **_set_args(ttl))
                pipe.execute_command("LOCK.RELEASE", lock, token)
                pipe.execute_command("LOCK.RELEASE", lock, WAITERS_TOKEN)
                pipe.execute()
        if value is not None:
            return load(value)

        # 3. Someone computes: wait with the shared token, to be woken together when it is done.
        if deadline is None:
            block_ms = 0
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no value for {key!r} within {timeout} s")
            block_ms = max(1, math.ceil(left * 1000))
        if client.execute_command("LOCK.ACQUIRE", lock, WAITERS_TOKEN, 1, "BLOCK", block_ms) is None:
            raise Timeout(f"no value for {key!r} within {timeout} s")
        value = client.get(key)
        if value is not None:
            return load(value)
        # No value: compute() failed, or its lock's lease ran out (then the waiters hold the lock
        # with the shared token: let it go). Try again from 2.
        client.execute_command("LOCK.RELEASE", lock, WAITERS_TOKEN)


#: ``signal_expire`` (ms) of python-redis-lock's release, for the signal list this recipe writes.
SIGNAL_EXPIRE_MS = 1000


def _plain(client, key, ttl, compute, lock_ttl, timeout, deadline, lock, serialize, load):
    """:func:`cached` on a server without the module: python-redis-lock's lock and signal list."""
    name, signal = "lock:" + lock, "lock-signal:" + lock
    release = client.register_script(UNLOCK_SCRIPT)
    while True:
        token = new_id()
        pipe = client.pipeline(transaction=False)
        pipe.set(name, token, nx=True, ex=lock_ttl)
        pipe.get(key)
        took, value = pipe.execute(raise_on_error=False)
        if isinstance(took, Exception):
            raise took
        if took:
            stored = None
            try:
                if isinstance(value, Exception):
                    raise value
                if value is not None:
                    return load(value)
                result = compute()
                if result is None:
                    raise ValueError("compute() must return a value, not None")
                stored = serialize(result) if serialize is not None else result
                return result
            finally:
                # One round trip: store, then release (the script signals one waiter).
                pipe = client.pipeline(transaction=False)
                if stored is not None:
                    pipe.set(key, stored, **_set_args(ttl))
                release(keys=(name, signal), args=(token, SIGNAL_EXPIRE_MS), client=pipe)
                pipe.execute()
        if value is not None:
            return load(value)

        # Someone computes: wait for the signal of its release (or its lease's end).
        wait = lock_ttl
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no value for {key!r} within {timeout} s")
            wait = min(wait, left)
        woken = client.blpop(signal, max(wait, 0.001))
        value = client.get(key)
        if value is not None:
            if woken:
                # Pass the signal on to the next waiter, as its release would have.
                pipe = client.pipeline(transaction=False)
                pipe.lpush(signal, 1)
                pipe.pexpire(signal, SIGNAL_EXPIRE_MS)
                pipe.execute()
            return load(value)
        if deadline is not None and time.monotonic() >= deadline:
            raise Timeout(f"no value for {key!r} within {timeout} s")
