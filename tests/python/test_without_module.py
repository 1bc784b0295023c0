"""rlock's Python client on both kinds of server: with the module (``LOCK.*``) and without it
(python-redis-lock 4.0's own protocol: ``SET NX``, its scripts, its signal list), as on a managed
service where no module can be loaded.

The tests of test_client.py that do not depend on the module's own commands run here on both
kinds (``any_server``); the others check what only happens without the module: the probe made
once per connection pool and again after a connection error, ``ModuleRequired`` for ``fence``,
``bind`` and Redlock, python-redis-lock and rlock clients sharing one lock both ways (blocking and
asyncio), and ``rlock.cached``. python-redis-lock 4.0.1's whole suite runs against the client on
a server without the module in test_python_redis_lock_suite.py.
"""

import asyncio
import threading
import time

import pytest
import redis
import redis.asyncio
import redis_lock
from conftest import _module_path
from conftest import start_server
from helpers import DEADLINE as WAIT
from helpers import text
from helpers import wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry

import rlock
import rlock.asyncio
import rlock.cache


@pytest.fixture
def s(any_server):
    """A client on an empty database of either kind of server."""
    client = any_server.client(socket_timeout=10)
    client.flushall()
    yield client
    client.close()
    assert any_server.alive()


@pytest.fixture
def other(any_server):
    made = []

    def make():
        made.append(any_server.client())
        return made[-1]

    yield make
    for client in made:
        client.close()


def holder_of(client, name):
    """The token under ``lock:<name>``: the same string key on both kinds of server."""
    return text(client.get('lock:' + name))


def blocked(client):
    return client.info('clients')['blocked_clients']


def quiet_client(socket, protocol):
    """A client that sends no CLIENT SETINFO on connect (an unknown subcommand before Redis 7.2):
    the only unknown commands it sends are rlock's."""
    return redis.Redis(unix_socket_path=socket, protocol=protocol, retry=Retry(NoBackoff(), 0),
                       lib_name=None, lib_version=None)


def unknown_commands(client):
    """Error replies with the ERR prefix ("unknown command"; NOSCRIPT is counted apart)."""
    return client.info('errorstats').get('errorstat_ERR', {}).get('count', 0)


def run_in_thread(fn, *args, **kwargs):
    result = {}

    def body():
        try:
            result['value'] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: B036  (handed to the test)
            result['error'] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()

    def get():
        thread.join(WAIT)
        assert not thread.is_alive(), 'the thread did not finish in time'
        if 'error' in result:
            raise result['error']
        return result['value']

    return get


# --- test_client.py's tests that apply to both kinds -------------------------------------------


def test_moving_over_is_one_line(s):
    import rlock as redis_lock  # noqa: F811

    with redis_lock.Lock(s, 'orders', expire=60) as lock:
        assert holder_of(s, 'orders') == lock.id
        assert 0 < s.ttl('lock:orders') <= 60
        assert lock.locked() and lock.get_owner_id() == lock.id
    assert holder_of(s, 'orders') is None
    assert not lock.locked()


def test_a_timeout_gives_up_on_time(s, other):
    holder = rlock.Lock(s, 't', expire=60)
    assert holder.acquire()
    waiter = rlock.Lock(other(), 't', expire=60)
    started = time.monotonic()
    assert waiter.acquire(timeout=1) is False
    assert time.monotonic() - started >= 0.9
    holder.release()
    assert holder_of(s, 't') is None


def test_without_expire_the_lock_is_not_expirable(any_server, s):
    lock = rlock.Lock(s, 'forever')
    assert lock.acquire()
    if any_server.module is None:
        assert s.ttl('lock:forever') == -1  # python-redis-lock's own: no TTL at all
    else:
        assert s.pttl('lock:forever') / 1000 / (365 * 24 * 3600) > 999
    with pytest.raises(rlock.NotExpirable):
        lock.extend(10)
    lock.release()
    theirs = redis_lock.Lock(s, 'theirs', id='t-1')
    assert theirs.acquire()
    with pytest.raises(rlock.NotExpirable):
        rlock.Lock(s, 'theirs', id='t-1').extend(10)
    theirs.release()


def test_extend_renews_the_lease_of_the_holder_only(s):
    lock = rlock.Lock(s, 'ext', expire=10)
    assert lock.acquire()
    lock.extend(100)
    assert 90 < s.ttl('lock:ext') <= 100
    with pytest.raises(rlock.NotAcquired):
        rlock.Lock(s, 'ext', expire=10).extend()
    lock.release()
    with pytest.raises(rlock.NotAcquired):
        lock.extend()
    with pytest.raises(rlock.NotAcquired):
        lock.release()


def test_python_redis_lock_and_rlock_wake_each_other(s, other):
    """One lock, a python-redis-lock client and an rlock client, each waiting for the other."""
    theirs = redis_lock.Lock(s, 'shared', expire=60)
    assert theirs.acquire()
    ours = rlock.Lock(other(), 'shared', expire=60)
    got = run_in_thread(ours.acquire, timeout=WAIT)
    wait_until(lambda: blocked(s) == 1, 'the rlock waiter blocked')
    assert holder_of(s, 'shared') == theirs.id  # never two holders
    theirs.release()
    assert got() is True
    assert holder_of(s, 'shared') == ours.id

    their_waiter = redis_lock.Lock(other(), 'shared', expire=60)
    got = run_in_thread(their_waiter.acquire, timeout=WAIT)
    wait_until(lambda: blocked(s) == 1, 'the python-redis-lock waiter blocked')
    assert holder_of(s, 'shared') == ours.id
    ours.release()
    assert got() is True
    assert holder_of(s, 'shared') == their_waiter.id
    # Each releases only its own: rlock cannot release python-redis-lock's hold, nor the reverse.
    with pytest.raises(rlock.NotAcquired):
        ours.release()
    their_waiter.release()


def test_reset_hands_the_lock_to_the_next_waiter(s, other):
    holder = rlock.Lock(s, 'stuck', expire=60)
    assert holder.acquire()
    waiter = rlock.Lock(other(), 'stuck', expire=60)
    got = run_in_thread(waiter.acquire, timeout=WAIT)
    wait_until(lambda: blocked(s) == 1, 'the waiter blocked')
    rlock.Lock(s, 'stuck').reset()
    assert got() is True
    assert holder_of(s, 'stuck') == waiter.id
    with pytest.raises(rlock.NotAcquired):
        holder.release()


def test_reset_all_removes_every_lock(s):
    for name in ('a', 'b'):
        assert rlock.Lock(s, name, expire=60).acquire()
    assert rlock.reset_all(s) == 2
    assert holder_of(s, 'a') is None and holder_of(s, 'b') is None


def test_arguments_are_checked_as_python_redis_lock_checks_them(s):
    with pytest.raises(ValueError):
        rlock.Lock(object(), 'x')
    with pytest.raises(ValueError):
        rlock.Lock(s, 'x', auto_renewal=True)
    lock = rlock.Lock(s, 'x', expire=5)
    with pytest.raises(rlock.TimeoutTooLarge):
        lock.acquire(timeout=6)
    with pytest.raises(rlock.TimeoutNotUsable):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(rlock.InvalidTimeout):
        lock.acquire(timeout=-1)
    assert holder_of(s, 'x') is None


def test_acquiring_again_raises_already_acquired(s):
    own = rlock.Lock(s, 'twice', expire=100)
    assert own.acquire()
    with pytest.raises(rlock.AlreadyAcquired):
        own.acquire()
    shared = rlock.Lock(s, 'twice', expire=5, id=own.id)
    with pytest.raises(rlock.AlreadyAcquired):
        shared.acquire()
    assert s.ttl('lock:twice') > 90  # an id given by the caller: nothing changed
    assert holder_of(s, 'twice') == own.id


def test_auto_renewal_keeps_the_lock_past_its_lease(s):
    lock = rlock.Lock(s, 'renewed', expire=1, auto_renewal=True)
    assert lock.acquire()
    first = time.monotonic()
    wait_until(lambda: time.monotonic() - first > 1.5 and holder_of(s, 'renewed') == lock.id,
               'still held past the 1 s lease')
    lock.release()
    assert holder_of(s, 'renewed') is None


# --- asyncio, both kinds --------------------------------------------------------------------------


def aclient(server):
    return redis.asyncio.Redis(unix_socket_path=server.socket, protocol=server.protocol,
                               retry=Retry(NoBackoff(), 0))


def test_asyncio_rlock_and_python_redis_lock_share_one_lock(any_server, s, other):
    """rlock.asyncio waits for a python-redis-lock holder and the reverse, on either kind."""

    async def main():
        a, b = aclient(any_server), aclient(any_server)
        try:
            theirs = redis_lock.Lock(other(), 'aio', expire=60)
            assert theirs.acquire()
            ours = rlock.asyncio.Lock(a, 'aio', expire=60)
            task = asyncio.create_task(ours.acquire(timeout=WAIT))
            while blocked(s) != 1:
                await asyncio.sleep(0.005)
            assert holder_of(s, 'aio') == theirs.id
            theirs.release()
            assert await asyncio.wait_for(task, WAIT) is True
            assert await ours.get_owner_id() == ours.id and await ours.locked()
            with pytest.raises(rlock.AlreadyAcquired):
                await ours.acquire()

            their_waiter = redis_lock.Lock(other(), 'aio', expire=60)
            got = run_in_thread(their_waiter.acquire, timeout=WAIT)
            while blocked(s) != 1:
                await asyncio.sleep(0.005)
            await ours.extend(30)
            await ours.release()
            assert await asyncio.to_thread(got) is True
            assert holder_of(s, 'aio') == their_waiter.id
            with pytest.raises(rlock.NotAcquired):
                await ours.release()
            their_waiter.release()

            async with rlock.asyncio.Lock(b, 'aio', expire=5, auto_renewal=True) as lock:
                assert await lock.locked()
            assert not await lock.locked()
            assert await rlock.asyncio.Lock(a, 'aio', expire=5).acquire(blocking=False) is True
            assert await rlock.asyncio.reset_all(a) == 1
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())


def test_asyncio_a_cancelled_wait_leaves_no_lock(any_server, s):
    async def main():
        a, b = aclient(any_server), aclient(any_server)
        try:
            holder = rlock.asyncio.Lock(a, 'cancel', expire=60)
            assert await holder.acquire()
            waiter = rlock.asyncio.Lock(b, 'cancel', expire=60)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.acquire(), 0.3)
            await holder.release()
            assert holder_of(s, 'cancel') is None
            assert await waiter.acquire(blocking=False) is True
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())


# --- without the module only -----------------------------------------------------------------


@pytest.fixture(scope='module', params=[2, 3], ids=['resp2', 'resp3'])
def plain_server(request):
    server = start_server(None, request.param)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plain(plain_server):
    """A client of a server without the module, on an empty database."""
    client = plain_server.client(socket_timeout=10)
    client.flushall()
    yield client
    client.close()
    assert plain_server.alive()


def test_without_the_module_fence_and_bind_raise_module_required_and_change_nothing(plain, plain_server):
    for options in ({'fence': True}, {'bind': True}, {'fence': True, 'bind': True}):
        with pytest.raises(rlock.ModuleRequired, match=r'rlock Redis module'):
            rlock.Lock(plain, 'opt', expire=60, **options).acquire()
        assert plain.keys('*') == []

    async def main():
        a = aclient(plain_server)
        try:
            with pytest.raises(rlock.ModuleRequired, match=r'fence=True\) needs the rlock Redis module'):
                await rlock.asyncio.Lock(a, 'opt', expire=60, fence=True).acquire()
        finally:
            await a.aclose()

    asyncio.run(main())
    assert plain.keys('*') == []


def test_without_the_module_the_signal_list_is_python_redis_lock_s(plain):
    """What the two tests of python-redis-lock's suite left out with the module check."""
    lock = rlock.Lock(plain, 'sig', expire=60, signal_expire=5000)
    assert lock.acquire()
    lock.release()
    assert plain.lrange('lock-signal:sig', 0, -1) == [b'1']
    assert 4000 < plain.pttl('lock-signal:sig') <= 5000


def test_without_the_module_the_probe_is_made_once_per_pool(plain, plain_server):
    before = unknown_commands(plain)
    client = quiet_client(plain_server.socket, plain_server.protocol)
    for i in range(5):
        with rlock.Lock(client, f'p{i}', expire=60):
            pass
        assert not rlock.Lock(client, f'p{i}').locked()
    rlock.reset_all(client)
    assert unknown_commands(plain) == before + 1  # one "unknown command": the probe
    second = quiet_client(plain_server.socket, plain_server.protocol)  # another pool: probed again
    rlock.Lock(second, 'q').locked()
    assert unknown_commands(plain) == before + 2
    client.close()
    second.close()


@pytest.mark.parametrize('protocol', [2, 3])
def test_a_server_replaced_under_the_pool_is_probed_again(protocol, tmp_path):
    """The same address served by a server without the module, then with it, then without it
    again (a restart, a failover): redis-py reconnects by itself, and the client follows."""
    path = str(tmp_path / 'swap.sock')
    server = start_server(None, protocol, socket=path)
    client = quiet_client(path, protocol)
    try:
        with pytest.raises(rlock.ModuleRequired):
            rlock.Lock(client, 'swap', expire=60, fence=True).acquire()
        assert rlock.Lock(client, 'swap', expire=60).acquire()
        server.stop()
        with pytest.raises(redis.ConnectionError):  # nobody there: the pool forgets the answer
            rlock.Lock(client, 'swap').locked()
        server = start_server(None, protocol, socket=path)
        before = unknown_commands(client)
        assert not rlock.Lock(client, 'swap').locked()
        assert unknown_commands(client) == before + 1  # probed again
        server.stop()

        server = start_server(_module_path(), protocol, socket=path)
        # Probed as "no module"; fence=True probes again before it gives up, and finds it.
        fenced = rlock.Lock(client, 'swap', expire=60, fence=True)
        assert fenced.acquire() and isinstance(fenced.fence, int)
        assert text(client.execute_command('LOCK.OWNER', 'swap')) == fenced.id
        server.stop()

        server = start_server(None, protocol, socket=path)
        # Probed as "module": LOCK.RELEASE is an unknown command there, so the release is made
        # again in python-redis-lock's protocol (the new server never had the lock).
        with pytest.raises(rlock.NotAcquired):
            fenced.release()
        with pytest.raises(rlock.ModuleRequired):
            rlock.Lock(client, 'swap', expire=60, bind=True).acquire()
        with rlock.Lock(client, 'swap', expire=60) as lock:
            assert text(client.get('lock:swap')) == lock.id
    finally:
        client.close()
        server.stop()


def test_without_the_module_redlock_raises_module_required(plain, plain_server):
    servers = [plain_server.client(socket_timeout=1) for _ in range(3)]
    try:
        with pytest.raises(rlock.ModuleRequired, match='Redlock'):
            rlock.Redlock(servers, 'red', ttl=10, retry_count=1, server_timeout=1).acquire()
    finally:
        for c in servers:
            c.close()


def test_without_the_module_cached_computes_once_and_wakes_every_waiter(plain, plain_server):
    """Four callers miss while one computes: one computation, and every waiter gets the value
    once it is stored (woken one after the other through python-redis-lock's signal list)."""
    computing = threading.Event()
    finish = threading.Event()
    computed = []

    def compute():
        computed.append(1)
        computing.set()
        assert finish.wait(WAIT)
        return b'value'

    clients = [plain_server.client() for _ in range(5)]
    try:
        first = run_in_thread(rlock.cached, clients[0], 'k', 60, compute, lock_ttl=30)
        assert computing.wait(WAIT)
        assert text(plain.get('lock:cached:k'))  # python-redis-lock's lock key
        rest = [run_in_thread(rlock.cached, c, 'k', 60, compute, lock_ttl=30, timeout=WAIT)
                for c in clients[1:]]
        wait_until(lambda: blocked(plain) == 4, 'four waiters blocked on the signal list')
        finish.set()
        started = time.monotonic()
        assert first() == b'value'
        assert [get() for get in rest] == [b'value'] * 4
        assert time.monotonic() - started < 5  # woken by signals, not by the 30 s lease
        assert computed == [1]
        assert plain.get('lock:cached:k') is None
    finally:
        finish.set()
        for c in clients:
            c.close()


def test_without_the_module_cached_times_out_while_a_python_redis_lock_holder_keeps_it(plain):
    theirs = redis_lock.Lock(plain, 'cached:slow', expire=60)
    assert theirs.acquire()
    started = time.monotonic()
    with pytest.raises(rlock.cache.Timeout):
        rlock.cached(plain, 'slow', 60, lambda: b'never', lock_ttl=30, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert holder_of(plain, 'cached:slow') == theirs.id
    theirs.release()
    assert rlock.cached(plain, 'slow', 60, lambda: b'now', lock_ttl=30) == b'now'
