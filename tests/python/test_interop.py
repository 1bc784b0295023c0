"""Interop between rlock's LOCK.* commands and the unmodified python-redis-lock package.

Both sides share the keys `lock:<name>` (value = owner's token, TTL = lease) and
`lock-signal:<name>` (the list python-redis-lock waiters BLPOP). The suite checks, against a real
redis-server with the module loaded (see conftest.py), that:

* whatever frees a lock wakes the other side's waiters at once, not after a timeout:
  python release / reset / reset_all wake module waiters (LOCK.ACQUIRE ... BLOCK), and
  LOCK.RELEASE / LOCK.RESETALL / a module lock's TTL running out wake python waiters;
* each side's API works on locks made by the other (owner, extend/renew, release, wrong token);
* python and module clients hammering one lock never overlap, and no waiter is left behind.

Every test runs twice, with RESP2 and with RESP3 clients (see conftest.py).

Waiting is never done with sleeps: blocking calls run in threads, the test waits until the server
reports them blocked (INFO clients -> blocked_clients) and then for their result, with deadlines.
"""

import threading
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait

import pytest
import redis_lock

WAKE = 2.0  # a waiter must get a freed lock this many seconds after the event that freed it
BLOCKED_TIMEOUT = 5.0  # seconds for a thread's blocking call to show up in blocked_clients


def text(value):
    """Replies are bytes or str depending on decode_responses; compare them as str."""
    return value.decode() if isinstance(value, bytes) else value


def owner(client, name):
    return text(client.execute_command("LOCK.OWNER", name))


def blocked_clients(client):
    return client.info("clients")["blocked_clients"]


def wait_blocked(client, expected, timeout=BLOCKED_TIMEOUT):
    """Poll INFO clients until exactly `expected` clients are blocked (the only sleep in the tests)."""
    deadline = time.monotonic() + timeout
    while True:
        now = blocked_clients(client)
        if now == expected:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"expected {expected} blocked client(s), still {now} after {timeout} s")
        time.sleep(0.005)


def result_within(future, seconds, what):
    try:
        return future.result(timeout=max(seconds, 0.0))
    except FutureTimeout:
        pytest.fail(f"{what}: no result within {seconds:.1f} s")


def module_acquire(client, name, token, ttl, block_ms):
    """LOCK.ACQUIRE ... BLOCK, meant for a worker thread: returns (reply, time of the reply)."""
    reply = client.execute_command("LOCK.ACQUIRE", name, token, ttl, "BLOCK", block_ms)
    return text(reply), time.monotonic()


def python_acquire(lock, timeout):
    """python-redis-lock's blocking acquire, for a worker thread: returns (result, time of it)."""
    acquired = lock.acquire(blocking=True, timeout=timeout)
    return acquired, time.monotonic()


# --- python frees the lock -> module waiter ------------------------------------------------------

@pytest.mark.parametrize("how", ["release", "reset", "reset_all"])
def test_python_free_wakes_module_waiter(r, new_client, spawn, how):
    held = redis_lock.Lock(r, "n", id="py", expire=60)
    assert held.acquire(blocking=False)

    waiter = spawn(module_acquire, new_client(), "n", "mod", 60, 10000)
    wait_blocked(r, 1)
    assert owner(r, "n") == "py", "the blocked module waiter must not have taken the held lock"

    freed_at = time.monotonic()
    if how == "release":
        held.release()
    elif how == "reset":
        redis_lock.Lock(r, "n").reset()
    else:
        redis_lock.reset_all(r)

    reply, replied_at = result_within(waiter, WAKE, f"module waiter not woken by python {how}()")
    assert reply == "OK"
    assert replied_at - freed_at < WAKE
    assert owner(r, "n") == "mod"
    assert redis_lock.Lock(r, "n").get_owner_id() == "mod"
    # The lease counts from the handover and is the waiter's own ttl.
    assert 55_000 < r.pttl("lock:n") <= 60_000
    assert blocked_clients(r) == 0


# --- module frees the lock -> python waiter ------------------------------------------------------

@pytest.mark.parametrize("how", ["LOCK.RELEASE", "LOCK.RESETALL"])
def test_module_free_wakes_python_waiter(r, new_client, spawn, how):
    assert text(r.execute_command("LOCK.ACQUIRE", "n", "mod", 60)) == "OK"
    # A second, python-made lock: LOCK.RELEASE must leave it alone, LOCK.RESETALL must remove it.
    other = redis_lock.Lock(r, "other", id="pyother", expire=60)
    assert other.acquire(blocking=False)

    lock = redis_lock.Lock(new_client(), "n", expire=60)
    waiter = spawn(python_acquire, lock, 10)  # python BLPOPs lock-signal:n for up to 10 s
    wait_blocked(r, 1)

    freed_at = time.monotonic()
    if how == "LOCK.RELEASE":
        assert r.execute_command("LOCK.RELEASE", "n", "mod") == 1
    else:
        assert r.execute_command("LOCK.RESETALL") == 2

    acquired, acquired_at = result_within(waiter, WAKE, f"python waiter not woken by {how}")
    assert acquired is True
    assert acquired_at - freed_at < WAKE
    assert owner(r, "n") == lock.id
    if how == "LOCK.RELEASE":
        assert owner(r, "other") == "pyother"
    else:
        assert not other.locked()
    assert blocked_clients(r) == 0


def test_module_lock_expiry_wakes_python_waiter(r, new_client, spawn):
    assert text(r.execute_command("LOCK.ACQUIRE", "n", "mod", 1)) == "OK"
    acquired_mod_at = time.monotonic()

    # Without a signal from the module on expiry, python would only retry after its 20 s BLPOP.
    lock = redis_lock.Lock(new_client(), "n", expire=30)
    waiter = spawn(python_acquire, lock, 20)
    wait_blocked(r, 1)
    assert r.exists("lock:n") == 1, "module lock expired before the python waiter blocked: test is void"

    deadline = acquired_mod_at + 1 + 3  # TTL end + 3 s
    acquired, acquired_at = result_within(
        waiter,
        deadline - time.monotonic(),
        "python waiter not woken when the module lock's TTL ran out (lock-signal:n not pushed?)",
    )
    assert acquired is True
    assert acquired_at - acquired_mod_at > 0.8, "python got the lock before the module lock's TTL ended"
    assert owner(r, "n") == lock.id
    assert 25_000 < r.pttl("lock:n") <= 30_000


def test_module_release_wakes_python_waiters_without_timeout_one_by_one(r, new_client, spawn):
    """python-redis-lock with neither timeout nor expire waits in BLPOP 0 for a signal only:
    the module must know it is there (rlock.python-signal auto) however long it has waited."""
    assert r.config_get("rlock.python-signal") == {"rlock.python-signal": "auto"}
    assert text(r.execute_command("LOCK.ACQUIRE", "n", "mod", 60)) == "OK"
    first = redis_lock.Lock(new_client(), "n")
    second = redis_lock.Lock(new_client(), "n")
    a = spawn(python_acquire, first, None)
    wait_blocked(r, 1)
    b = spawn(python_acquire, second, None)
    wait_blocked(r, 2)

    assert r.execute_command("LOCK.RELEASE", "n", "mod") == 1
    done, _ = wait([a, b], timeout=WAKE, return_when="FIRST_COMPLETED")
    assert len(done) == 1, "one release wakes one python waiter, which takes the lock"
    winner, loser = (first, second) if a in done else (second, first)
    assert owner(r, "n") == winner.id
    wait_blocked(r, 1)

    # The winner hands it back through the module (as a module client with its token would).
    assert r.execute_command("LOCK.RELEASE", "n", winner.id) == 1
    acquired, _ = result_within(b if a in done else a, WAKE, "the second python waiter")
    assert acquired is True
    assert owner(r, "n") == loser.id
    loser.release()
    assert blocked_clients(r) == 0


# --- each API on the other's locks ---------------------------------------------------------------

def test_python_api_on_module_lock(r):
    assert text(r.execute_command("LOCK.ACQUIRE", "n", "tok", 60)) == "OK"
    assert r.get("lock:n") == b"tok"

    assert redis_lock.Lock(r, "n", expire=60).acquire(blocking=False) is False
    lock = redis_lock.Lock(r, "n", id="tok")
    assert lock.locked() is True
    assert text(lock.get_owner_id()) == "tok"

    lock.extend(expire=100)
    assert 95_000 < r.pttl("lock:n") <= 100_000
    assert owner(r, "n") == "tok"

    lock.release()
    assert owner(r, "n") is None
    assert lock.locked() is False
    assert r.exists("lock:n") == 0


def test_module_commands_on_python_lock(r):
    lock = redis_lock.Lock(r, "n", id="pyid", expire=60)
    assert lock.acquire(blocking=False)
    assert owner(r, "n") == "pyid"

    assert r.execute_command("LOCK.ACQUIRE", "n", "other", 60) is None
    assert r.execute_command("LOCK.RELEASE", "n", "wrong") == 0
    assert r.execute_command("LOCK.RENEW", "n", "wrong", 120) == 0
    assert owner(r, "n") == "pyid"
    assert 55_000 < r.pttl("lock:n") <= 60_000

    assert r.execute_command("LOCK.RENEW", "n", "pyid", 120) == 1
    assert 115_000 < r.pttl("lock:n") <= 120_000
    # Same token re-acquiring refreshes the lease (safe retry after a lost reply).
    assert text(r.execute_command("LOCK.ACQUIRE", "n", "pyid", 90)) == "OK"
    assert 85_000 < r.pttl("lock:n") <= 90_000
    assert lock.get_owner_id() == "pyid"

    assert r.execute_command("LOCK.RELEASE", "n", "pyid") == 1
    assert owner(r, "n") is None
    assert lock.locked() is False
    with pytest.raises(redis_lock.NotAcquired):
        lock.release()


# --- many clients of both kinds on one lock ------------------------------------------------------

def test_mutual_exclusion_hammer(r, new_client, spawn):
    """4 python-redis-lock and 4 LOCK.* clients, 50 rounds each, never inside together.

    Each round all 8 threads meet at a barrier and then race for the lock once each. Without the
    rounds the module's FIFO queue would hand the lock from module client to module client and
    python waiters would only get their turns after the module clients were done, so the two
    kinds would barely interleave; with them every round mixes both kinds.
    """
    threads_per_side, rounds = 4, 50
    barrier = threading.Barrier(2 * threads_per_side, timeout=30)
    guard = threading.Lock()
    state = {"inside": 0, "overlaps": 0, "holders": []}

    def critical_section(client, kind):
        with guard:
            state["inside"] += 1
            state["holders"].append(kind)
            if state["inside"] != 1:
                state["overlaps"] += 1
        # A read-modify-write through the server: lost updates would show any overlap too.
        value = int(client.get("hammer:counter") or 0)
        client.set("hammer:counter", value + 1)
        with guard:
            state["inside"] -= 1

    def python_rounds(client):
        for _ in range(rounds):
            barrier.wait()
            with redis_lock.Lock(client, "h", expire=10):
                critical_section(client, "p")

    def module_rounds(client):
        token = uuid.uuid4().hex
        for i in range(rounds):
            barrier.wait()
            reply = client.execute_command("LOCK.ACQUIRE", "h", token, 10, "BLOCK", 10000)
            assert text(reply) == "OK", f"module client timed out waiting in round {i}"
            critical_section(client, "m")
            assert client.execute_command("LOCK.RELEASE", "h", token) == 1, f"lost the lock in round {i}"

    def worker(body, client):
        try:
            body(client)
        except BaseException:
            barrier.abort()  # the other threads get BrokenBarrierError instead of waiting
            raise

    futures = [spawn(worker, python_rounds, new_client()) for _ in range(threads_per_side)]
    futures += [spawn(worker, module_rounds, new_client()) for _ in range(threads_per_side)]
    done, not_done = wait(futures, timeout=60)
    assert not not_done, f"{len(not_done)} of {len(futures)} workers still running after 60 s"
    errors = [f.exception() for f in done if f.exception() is not None]
    first = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), None)
    if first or errors:
        raise first or errors[0]

    total = 2 * threads_per_side * rounds
    holders = "".join(state["holders"])
    assert state["overlaps"] == 0, f"{state['overlaps']} overlapping entries; holder sequence {holders}"
    assert len(holders) == total
    assert int(r.get("hammer:counter")) == total
    assert owner(r, "h") is None
    assert blocked_clients(r) == 0


@pytest.mark.parametrize("holder", ["module", "python"])
def test_python_and_module_waiters_both_get_the_lock(r, new_client, spawn, holder):
    if holder == "module":
        assert text(r.execute_command("LOCK.ACQUIRE", "n", "holder", 60)) == "OK"
    else:
        held = redis_lock.Lock(r, "n", id="holder", expire=60)
        assert held.acquire(blocking=False)

    got = []

    def python_waiter(client):
        lock = redis_lock.Lock(client, "n", expire=60)
        if not lock.acquire(blocking=True, timeout=10):
            return False
        assert owner(client, "n") == lock.id
        got.append("python")
        lock.release()
        return True

    def module_waiter(client):
        if text(client.execute_command("LOCK.ACQUIRE", "n", "mod", 60, "BLOCK", 10000)) != "OK":
            return False
        assert owner(client, "n") == "mod"
        got.append("module")
        assert client.execute_command("LOCK.RELEASE", "n", "mod") == 1
        return True

    py = spawn(python_waiter, new_client())
    wait_blocked(r, 1)
    mod = spawn(module_waiter, new_client())
    wait_blocked(r, 2)

    if holder == "module":
        assert r.execute_command("LOCK.RELEASE", "n", "holder") == 1
    else:
        held.release()

    deadline = time.monotonic() + 5
    assert result_within(mod, deadline - time.monotonic(), "module waiter starved") is True
    assert result_within(py, deadline - time.monotonic(), "python waiter starved") is True
    assert sorted(got) == ["module", "python"]
    assert owner(r, "n") is None
    assert blocked_clients(r) == 0
