"""Redlock (clients/python/rlock/redlock.py) over 5 independent rlock servers.

Five redis-servers with the module are started for this file (unix sockets in temp dirs, as in
conftest.py; the binary from $REDIS_SERVER, the module from $RLOCK_MODULE); a failure to start
fails the tests, never skips them. Clients alternate RESP2 and RESP3. Servers are "failed" with
SIGSTOP: the process keeps its sockets, so connections and commands queue in the kernel and are
carried out after SIGCONT, the hard case for a lock client. Every test SIGCONTs all servers
when it ends, whatever happened.

Waiting is done with deadline loops on a condition, never fixed sleeps.
"""

import contextlib
import os
import signal
import threading
import time
import uuid

import pytest

from conftest import RedisServer, _module_path, _server_binary
from helpers import calls, owner, wait_until
from rlock import redlock
from rlock.redlock import Acquired, Redlock, RedlockError

N = 5
SERVER_TIMEOUT = 0.25  # per-attempt wait for replies; generous for a loaded 2-core CI box
CLIENT_TIMEOUT = 1.0  # the clients' socket timeouts (bound a handshake with a stopped server)
BOUND = 3.0  # an acquire/release must return within this, servers stopped or not
SETTLE = 5.0  # seconds for resumed servers to run what was queued for them


@pytest.fixture(scope="module")
def servers():
    binary, module = _server_binary(), _module_path()
    started = [RedisServer(binary, module, 2 + i % 2) for i in range(N)]
    try:
        for server in started:
            try:
                server.wait_ready()
            except Exception as exc:
                pytest.fail(f"could not start redis-server with the rlock module: {exc!r}\n"
                            f"{server.log_tail()}", pytrace=False)
        yield started
    finally:
        for server in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()


@pytest.fixture
def clients(servers):
    """One client per server on empty databases, statistics reset; every server resumed and
    alive afterwards. Each client keeps the connection it used here in its pool: a command sent
    after a SIGSTOP goes out on it and waits in the stopped server's socket."""
    made = [s.client(socket_timeout=CLIENT_TIMEOUT) for s in servers]
    for c in made:
        c.flushall()
        c.config_resetstat()
    try:
        yield made
    finally:
        for s in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.proc.pid, signal.SIGCONT)
        for c in made:
            c.close()
        dead = [s for s in servers if not s.alive()]
        if dead:
            pytest.fail("redis-server died during the test\n" + "\n".join(s.log_tail() for s in dead),
                        pytrace=False)


@contextlib.contextmanager
def stopped(servers):
    """SIGSTOP these servers for the block; SIGCONT them however it ends."""
    try:
        for s in servers:
            os.kill(s.proc.pid, signal.SIGSTOP)
        yield
    finally:
        for s in servers:
            os.kill(s.proc.pid, signal.SIGCONT)


def owners(clients, name):
    return [owner(c, name) for c in clients]


def wait_for(condition, what, timeout=SETTLE):
    wait_until(condition, what, timeout)


def timed(fn):
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


@pytest.fixture
def acquire_rounds(monkeypatch):
    """Every LOCK.ACQUIRE round the Redlock sends during the test, to know which requests went
    out to a stopped server (``sent`` is final once the round is over)."""
    rounds = []

    class Recorded(redlock._Round):
        def __init__(self, clients, args, *rest, **kwargs):
            super().__init__(clients, args, *rest, **kwargs)
            if args[0] == "LOCK.ACQUIRE":
                rounds.append(self)

    monkeypatch.setattr(redlock, "_Round", Recorded)
    return rounds


def check_queued_commands_ran(clients, indexes, rounds):
    """The resumed servers ran each LOCK.ACQUIRE that had reached their socket while they were
    stopped and, after it, the LOCK.RELEASE piped behind it. (A release round may also have
    queued a LOCK.RELEASE for a server whose acquire never went out: more releases are fine.)"""
    expected = {i: sum(1 for rnd in rounds if rnd.requests[i].sent) for i in indexes}
    wait_for(lambda: all(calls(clients[i], "lock.acquire") == expected[i]
                         and calls(clients[i], "lock.release") >= expected[i] for i in indexes),
             f"the resumed servers ran the queued LOCK.ACQUIRE and LOCK.RELEASE ({expected} each)")
    print(f"queued LOCK.ACQUIRE per resumed server: {expected}")
    return sum(expected.values())


def test_all_up_acquired_everywhere_and_released_everywhere(clients):
    name = f"all-up-{uuid.uuid4().hex}"
    ttl = 10
    lock = Redlock(clients, name, ttl, server_timeout=SERVER_TIMEOUT)
    held, took = timed(lock.acquire)
    assert isinstance(held, Acquired)
    assert 0 < held.validity < ttl
    assert held.servers >= 3 and held.token == lock.held.token
    # acquire() returns at the quorum; the other servers get it moments later
    wait_for(lambda: owners(clients, name) == [held.token] * N, "every server holds the token")
    assert 0 < clients[0].pttl(f"lock:{name}") <= ttl * 1000
    released, release_took = timed(lock.release)
    assert released == N
    assert owners(clients, name) == [None] * N
    assert lock.held is None
    print(f"all up: acquire {took * 1000:.2f} ms, release {release_took * 1000:.2f} ms")


def test_two_stopped_still_acquired_in_bounded_time(servers, clients, acquire_rounds):
    name = f"two-stopped-{uuid.uuid4().hex}"
    lock = Redlock(clients, name, 30, server_timeout=SERVER_TIMEOUT)
    with stopped(servers[:2]):
        held, took = timed(lock.acquire)
        assert held, "3 of 5 servers are up: the lock must be acquired"
        assert took < BOUND, f"acquire took {took:.3f} s with 2 servers stopped"
        assert held.servers == 3
        assert owners(clients[2:], name) == [held.token] * 3
        released, release_took = timed(lock.release)
        assert release_took < BOUND, f"release took {release_took:.3f} s with 2 servers stopped"
        assert released == 3
        assert owners(clients[2:], name) == [None] * 3
    # The clients' connections were made (by the fixture) before the SIGSTOP, so the acquire went
    # out on them and waits in the stopped servers' sockets; release() sent LOCK.RELEASE behind
    # it on the same connection. Resumed, they run both and end up free, long before the TTL.
    check_queued_commands_ran(clients, [0, 1], acquire_rounds)
    assert owners(clients, name) == [None] * N
    print(f"2 stopped: acquire {took * 1000:.2f} ms, release {release_took * 1000:.2f} ms")


def test_three_stopped_not_acquired_and_nothing_left_behind(servers, clients, acquire_rounds):
    name = f"three-stopped-{uuid.uuid4().hex}"
    lock = Redlock(clients, name, 30, server_timeout=SERVER_TIMEOUT, retry_count=2, retry_delay=0.05)
    with stopped(servers[:3]):
        held, took = timed(lock.acquire)
        assert held is None
        assert lock.held is None
        assert took < 2 * BOUND, f"acquire took {took:.3f} s with 3 servers stopped"
        # the servers that are up were released at once
        assert owners(clients[3:], name) == [None, None]
        assert all(calls(c, "lock.release") >= 1 for c in clients[3:])
    # Attempt 1 reached the stopped servers' sockets on the connections the fixture had made;
    # attempt 2 could not (a new connection's handshake was never answered, so nothing was
    # sent). After SIGCONT each runs the queued LOCK.ACQUIRE and then the LOCK.RELEASE piped
    # behind it.
    assert check_queued_commands_ran(clients, [0, 1, 2], acquire_rounds) >= 1, \
        "no LOCK.ACQUIRE reached a stopped server: the case under test did not happen"
    assert owners(clients, name) == [None] * N  # the TTL is 30 s: freed by the release, not by it
    print(f"3 stopped: acquire gave up after {took * 1000:.2f} ms (2 attempts)")


def test_two_clients_racing_never_both_hold_it(clients):
    name = f"race-{uuid.uuid4().hex}"
    rounds = 25
    barrier = threading.Barrier(2, timeout=BOUND * 3)
    results = [[None] * rounds for _ in range(2)]
    errors = []

    def contender(me):
        lock = Redlock(clients, name, 10, server_timeout=SERVER_TIMEOUT, retry_count=2, retry_delay=0.01,
                       token=f"contender-{me}-{uuid.uuid4().hex}")
        try:
            for i in range(rounds):
                barrier.wait()  # start together
                held = lock.acquire()
                results[me][i] = held is not None
                barrier.wait()  # both have decided while a winner still holds it
                if held:
                    lock.release()
                barrier.wait()  # the lock is free again before the next round
        except Exception as exc:  # reported below; break the barrier so the other one stops
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=contender, args=(me,)) for me in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a contender hung"
    assert not errors, errors
    both = [i for i in range(rounds) if results[0][i] and results[1][i]]
    assert not both, f"both held the lock at once in rounds {both}"
    won = sum(results[0]) + sum(results[1])
    assert won >= 1, "nobody ever got the lock"
    assert owners(clients, name) == [None] * N
    print(f"race: {rounds} rounds, won by 0: {sum(results[0])}, by 1: {sum(results[1])}, by none: {rounds - won}")


def test_holder_blocks_others_extend_and_context_manager(servers, clients):
    name = f"api-{uuid.uuid4().hex}"
    urls = [f"unix://{s.socket}" for s in servers]  # URLs: the Redlock makes its own clients
    with Redlock(urls, name, 5, server_timeout=SERVER_TIMEOUT, token="me") as lock:
        assert owners(clients, name).count("me") >= 3
        other = Redlock(clients, name, 5, server_timeout=SERVER_TIMEOUT, retry_count=2, retry_delay=0.01)
        assert other.acquire() is None
        with pytest.raises(RedlockError):
            other.release()
        with pytest.raises(RedlockError):
            lock.acquire()
        validity = lock.extend(60)
        assert validity is not None and 5 < validity < 60
        assert lock.held.validity == validity
        # renewed on a majority at least (a server whose acquire had not gone out when extend()
        # began, e.g. a new connection still in its handshake, is not sent it any more)
        assert owners(clients, name).count("me") >= 3
        assert sum(c.pttl(f"lock:{name}") > 5000 for c in clients) >= 3
    assert owners(clients, name) == [None] * N
    with pytest.raises(RedlockError):
        with Redlock(clients, name, 5, server_timeout=SERVER_TIMEOUT), \
                Redlock(clients, name, 5, server_timeout=SERVER_TIMEOUT, retry_count=1):
            pass
    assert owners(clients, name) == [None] * N
    with pytest.raises(ValueError):
        Redlock(clients, name, 0)
    with pytest.raises(ValueError):
        Redlock(clients, name, 1.5)
    with pytest.raises(TypeError):
        Redlock([object()], name, 1)
