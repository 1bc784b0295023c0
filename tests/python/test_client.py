"""rlock's Python client (clients/python): what it does that python-redis-lock's suite does not
test, and every place it behaves differently (README, *Moving from python-redis-lock*).

python-redis-lock's own suite runs against it in test_python_redis_lock_suite.py.
"""

import asyncio
import threading
import time

import pytest
import redis
import redis.asyncio
import redis.backoff
import redis.retry
import redis_lock

import rlock
import rlock.asyncio

from helpers import DEADLINE as WAIT
from helpers import calls
from helpers import owner
from helpers import wait_until
from helpers import waiters


def info(client, name):
    return rlock._base.info_fields(client.execute_command('LOCK.INFO', name))


def test_moving_over_is_one_line(r):
    import rlock as redis_lock  # noqa: F811  (the one line that changes)

    with redis_lock.Lock(r, 'orders', expire=60) as lock:
        assert owner(r, 'orders') == lock.id
        assert 0 < r.ttl('lock:orders') <= 60
        assert lock.locked() and lock.get_owner_id() == lock.id
    assert owner(r, 'orders') is None


def test_a_blocking_acquire_is_one_module_wait_first_come_first_served(r, new_client, spawn):
    r.config_resetstat()
    holder = rlock.Lock(r, 'q', expire=60)
    assert holder.acquire()
    order = []
    locks = []

    def wait(i, lock):
        assert lock.acquire(timeout=WAIT)
        order.append(i)
        lock.release()

    futures = []
    for i in range(3):
        lock = rlock.Lock(new_client(), 'q', expire=60)
        locks.append(lock)
        futures.append(spawn(wait, i, lock))
        wait_until(lambda: waiters(r, 'q') == i + 1, f'waiter {i} queued')
    holder.release()
    for f in futures:
        f.result(timeout=WAIT)
    assert order == [0, 1, 2]
    # No BLPOP, no polling: each waiter sent one LOCK.OWNER and one LOCK.ACQUIRE.
    assert calls(r, 'blpop') == 0
    assert calls(r, 'lock.acquire') == 4


def test_a_timeout_gives_up_on_time_and_leaves_the_queue(r, new_client):
    holder = rlock.Lock(r, 't', expire=60)
    assert holder.acquire()
    waiter = rlock.Lock(new_client(), 't', expire=60)
    started = time.monotonic()
    assert waiter.acquire(timeout=1) is False
    assert time.monotonic() - started >= 0.9
    assert waiters(r, 't') == 0
    holder.release()
    assert owner(r, 't') is None


def test_without_expire_the_lock_is_held_for_1000_years_and_is_not_expirable(r):
    lock = rlock.Lock(r, 'forever')
    assert lock.acquire()
    years = r.pttl('lock:forever') / 1000 / (365 * 24 * 3600)
    assert 999 < years <= 1000
    with pytest.raises(rlock.NotExpirable):
        lock.extend(10)
    assert r.pttl('lock:forever') / 1000 / (365 * 24 * 3600) > 999  # unchanged
    lock.release()
    # python-redis-lock's own expire=None lock (no TTL at all) is not expirable either.
    theirs = redis_lock.Lock(r, 'theirs', id='t-1')
    assert theirs.acquire()
    with pytest.raises(rlock.NotExpirable):
        rlock.Lock(r, 'theirs', id='t-1').extend(10)
    theirs.release()


def test_bind_lets_the_lock_go_with_the_connection(r, new_client, spawn):
    holder_conn = new_client()
    holder = rlock.Lock(holder_conn, 'job', expire=3600, bind=True)
    assert holder.acquire()
    assert info(r, 'job')['bound_to'] is not None
    waiter = rlock.Lock(new_client(), 'job', expire=60)
    got = spawn(waiter.acquire, timeout=WAIT)
    wait_until(lambda: waiters(r, 'job') == 1, 'the waiter queued')
    holder_conn.connection_pool.disconnect()  # the process holding it dies
    assert got.result(timeout=WAIT) is True
    assert owner(r, 'job') == waiter.id


def test_fence_grows_with_every_holder(r):
    fences = []
    for _ in range(3):
        with rlock.Lock(r, 'fenced', expire=60, fence=True) as lock:
            fences.append(lock.fence)
    assert all(isinstance(f, int) for f in fences)
    assert fences == sorted(set(fences))
    assert rlock.Lock(r, 'plain', expire=60).fence is None


def test_one_lock_object_gets_a_new_fence_at_every_acquire(r):
    # One Lock keeps its id: each acquire after a release is a new acquisition, with a new fence
    # (the same fence came back before: the server only remembered the token).
    lock = rlock.Lock(r, 'refenced', expire=60, fence=True)
    fences = []
    for _ in range(3):
        assert lock.acquire()
        fences.append(lock.fence)
        lock.release()
    assert fences == sorted(set(fences)), fences


def test_python_redis_lock_and_rlock_wake_each_other(r, new_client, spawn):
    theirs = redis_lock.Lock(r, 'shared', expire=60)
    assert theirs.acquire()
    ours = rlock.Lock(new_client(), 'shared', expire=60)
    got = spawn(ours.acquire, timeout=WAIT)
    wait_until(lambda: waiters(r, 'shared') == 1, 'the rlock waiter queued')
    theirs.release()
    assert got.result(timeout=WAIT) is True

    their_waiter = redis_lock.Lock(new_client(), 'shared', expire=60)
    got = spawn(their_waiter.acquire, timeout=WAIT)
    wait_until(lambda: r.info('clients')['blocked_clients'] == 1, 'the python-redis-lock waiter blocked')
    ours.release()
    assert got.result(timeout=WAIT) is True
    assert owner(r, 'shared') == their_waiter.id


def test_reset_hands_the_lock_to_the_next_waiter(r, new_client, spawn):
    holder = rlock.Lock(r, 'stuck', expire=60)
    assert holder.acquire()
    waiter = rlock.Lock(new_client(), 'stuck', expire=60)
    got = spawn(waiter.acquire, timeout=WAIT)
    wait_until(lambda: waiters(r, 'stuck') == 1, 'the waiter queued')
    rlock.Lock(r, 'stuck').reset()
    assert got.result(timeout=WAIT) is True
    assert owner(r, 'stuck') == waiter.id
    with pytest.raises(rlock.NotAcquired):
        holder.release()


def test_a_wait_cut_by_the_socket_timeout_leaves_no_waiter_and_no_lock(r, redis_server):
    holder = rlock.Lock(r, 'cut', expire=60)
    assert holder.acquire()
    impatient = rlock.Lock(redis_server.client(socket_timeout=0.3), 'cut', expire=60)
    with pytest.raises(redis.TimeoutError):
        impatient.acquire()
    wait_until(lambda: waiters(r, 'cut') == 0, 'the cut waiter gone')
    holder.release()
    assert owner(r, 'cut') is None


def test_reset_all_removes_every_lock(r):
    for name in ('a', 'b'):
        assert rlock.Lock(r, name, expire=60).acquire()
    assert rlock.reset_all(r) == 2
    assert owner(r, 'a') is None and owner(r, 'b') is None


def test_arguments_are_checked_as_python_redis_lock_checks_them(r):
    with pytest.raises(ValueError):
        rlock.Lock(object(), 'x')
    with pytest.raises(ValueError):
        rlock.asyncio.Lock(r, 'x')  # a blocking client given to the asyncio Lock
    with pytest.raises(ValueError):
        rlock.Lock(r, 'x', auto_renewal=True)
    lock = rlock.Lock(r, 'x', expire=5)
    with pytest.raises(rlock.TimeoutTooLarge):
        lock.acquire(timeout=6)
    with pytest.raises(rlock.TimeoutNotUsable):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(rlock.InvalidTimeout):
        lock.acquire(timeout=-1)
    assert owner(r, 'x') is None


# --- rlock.asyncio ----------------------------------------------------------------------------


def aclient(redis_server):
    return redis.asyncio.Redis(unix_socket_path=redis_server.socket, protocol=redis_server.protocol)


def test_asyncio_lock_waits_and_is_handed_the_lock(r, redis_server):
    async def main():
        a, b = aclient(redis_server), aclient(redis_server)
        try:
            holder = rlock.asyncio.Lock(a, 'aio', expire=60, fence=True)
            assert await holder.acquire()
            waiter = rlock.asyncio.Lock(b, 'aio', expire=60, fence=True)
            task = asyncio.create_task(waiter.acquire(timeout=WAIT))
            while waiters(r, 'aio') != 1:
                await asyncio.sleep(0.005)
            with pytest.raises(rlock.AlreadyAcquired):
                await holder.acquire()
            await holder.release()
            assert await asyncio.wait_for(task, WAIT) is True
            assert waiter.fence > holder.fence
            assert await waiter.get_owner_id() == waiter.id
            await waiter.release()
            async with rlock.asyncio.Lock(a, 'aio', expire=5, auto_renewal=True) as lock:
                assert await lock.locked()
            assert not await lock.locked()
            assert await rlock.asyncio.Lock(a, 'aio', expire=5).acquire(blocking=False) is True
            assert await rlock.asyncio.reset_all(a) == 1
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())


def test_asyncio_a_cancelled_wait_leaves_no_waiter_and_no_lock(r, redis_server):
    async def main():
        a, b = aclient(redis_server), aclient(redis_server)
        try:
            holder = rlock.asyncio.Lock(a, 'cancel', expire=60)
            assert await holder.acquire()
            waiter = rlock.asyncio.Lock(b, 'cancel', expire=60)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.acquire(), 0.3)
            while waiters(r, 'cancel') != 0:
                await asyncio.sleep(0.005)
            await holder.release()
            assert owner(r, 'cancel') is None
            assert await waiter.acquire(blocking=False) is True
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())


def test_asyncio_auto_renewal_keeps_the_lock(r, redis_server):
    async def main():
        a = aclient(redis_server)
        try:
            lock = rlock.asyncio.Lock(a, 'renewed', expire=1, auto_renewal=True)
            assert await lock.acquire()
            renewals = calls(r, 'lock.renew')
            while calls(r, 'lock.renew') < renewals + 2:
                await asyncio.sleep(0.05)
            assert owner(r, 'renewed') == lock.id  # past its 1 s lease, still held
            await lock.release()
            assert lock._lock_renewal_thread is None
        finally:
            await a.aclose()

    asyncio.run(main())


def test_release_writes_no_signal_list_when_no_python_redis_lock_client_waits(r):
    lock = rlock.Lock(r, 'quiet', expire=60, signal_expire=5000)  # signal_expire: ignored
    assert lock.acquire()
    lock.release()
    assert r.exists('lock-signal:quiet') == 0
    assert owner(r, 'quiet') is None


def test_an_empty_id_is_refused_by_the_server(r):
    with pytest.raises(redis.ResponseError, match='token must not be empty'):
        rlock.Lock(r, 'empty', id='').acquire()
    assert owner(r, 'empty') is None


def test_acquiring_again_raises_already_acquired(r):
    own = rlock.Lock(r, 'twice', expire=100)
    assert own.acquire()
    r.expire('lock:twice', 50)
    with pytest.raises(rlock.AlreadyAcquired):
        own.acquire()
    # A random id: LOCK.OWNER and LOCK.ACQUIRE went in one round trip, the lease was renewed.
    assert r.ttl('lock:twice') > 90
    shared = rlock.Lock(r, 'twice', expire=5, id=own.id)
    with pytest.raises(rlock.AlreadyAcquired):
        shared.acquire()
    # An id given by the caller: LOCK.OWNER first, nothing changed.
    assert r.ttl('lock:twice') > 90
    assert owner(r, 'twice') == own.id


class ReplyDropper:
    """A TCP proxy in front of the server's unix socket that can lose one reply: once armed, the
    next data the server sends back is not passed on, and the client's connection is closed
    instead (a connection that breaks after the server ran the command)."""

    def __init__(self, unix_socket):
        import socket

        self.unix_socket = unix_socket
        self.armed = threading.Event()
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.unix_socket)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src, dst, replies):
        try:
            while data := src.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    break  # the reply is lost: close both sides below
                dst.sendall(data)
        except OSError:
            pass
        import socket

        for s in (src, dst):  # shutdown first: it also wakes the other direction's recv()
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.listener.close()


def test_an_acquire_whose_reply_is_lost_gives_the_lock_back(r, redis_server):
    proxy = ReplyDropper(redis_server.socket)
    try:
        conn = redis.Redis(host='127.0.0.1', port=proxy.port, protocol=redis_server.protocol,
                           retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
        assert conn.ping()
        for blocking in (False, True):
            lock = rlock.Lock(conn, 'lost')  # no expire: a lost lock would be held for 1,000 years
            assert not lock.locked()  # the pool's probe for the module made (again, after a loss)
            proxy.armed.set()
            with pytest.raises(redis.ConnectionError):
                lock.acquire(blocking=blocking)
            # The server took the lock for this id; acquire() released it on a new connection.
            wait_until(lambda: owner(r, 'lost') is None, 'the lock given back')
            assert calls(r, 'lock.release') >= 1
            r.config_resetstat()
        conn.close()
    finally:
        proxy.close()
