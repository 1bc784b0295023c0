"""LOCK.* driven from redis-py's asyncio client (``redis.asyncio``) with raw ``execute_command``,
the way an asyncio application calls a module command.

Every test runs against both RESP2 and RESP3 (conftest's ``redis_server`` fixture); the reply
shapes that differ (``LOCK.INFO``: a flat list in RESP2, a dict in RESP3) are handled here.
Each scenario runs in its own event loop (``asyncio.run``) under an overall deadline, so a lost
wake-up fails the test instead of hanging the suite. Synchronisation is by waiting, with a
deadline, for the server's ``blocked_clients`` or ``LOCK.INFO``'s ``waiters`` to reach a value;
never by a fixed sleep.
"""

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

DEADLINE = 10.0  # seconds for any awaited condition
SCENARIO_DEADLINE = 30.0  # seconds for a whole test's event loop


def run(coro):
    """Run a scenario in a fresh event loop, failing (not hanging) past SCENARIO_DEADLINE."""
    return asyncio.run(asyncio.wait_for(coro, SCENARIO_DEADLINE))


class Clients:
    """Asyncio clients on the fixture's server, all closed at the end of the scenario."""

    def __init__(self, server):
        self.server = server
        self.made = []

    def new(self, **kwargs):
        """An application-style client: strings decoded, the test's RESP version, no socket
        timeout (a blocking acquire must not be cut), no silent retries (a retried blocked
        acquire would re-queue at the back)."""
        options = dict(
            unix_socket_path=self.server.socket,
            protocol=self.server.protocol,
            decode_responses=True,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
        )
        options.update(kwargs)
        client = aioredis.Redis(**options)
        self.made.append(client)
        return client

    async def close(self):
        for client in self.made:
            await client.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


async def wait_until(probe, want, what):
    """Await ``probe()`` until it returns ``want``; fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while True:
        got = await probe()
        if got == want:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} stayed {got!r}, wanted {want!r}")
        await asyncio.sleep(0.002)


async def blocked_clients(c):
    return int((await c.info("clients"))["blocked_clients"])


async def wait_blocked(c, n):
    await wait_until(lambda: blocked_clients(c), n, "blocked_clients")


def info_dict(reply):
    """LOCK.INFO as a dict: RESP3 replies a map (a dict here), RESP2 a flat [field, value, ...]."""
    if isinstance(reply, dict):
        return reply
    assert isinstance(reply, list) and len(reply) % 2 == 0, reply
    return dict(zip(reply[0::2], reply[1::2]))


async def lock_info(c, name):
    return info_dict(await c.execute_command("LOCK.INFO", name))


async def waiters(c, name):
    return (await lock_info(c, name))["waiters"]


def test_commands_and_reply_types(redis_server, r):
    async def scenario():
        async with Clients(redis_server) as clients:
            c = clients.new()
            assert await c.execute_command("LOCK.ACQUIRE", "orders", "tok-1", 30) == "OK"
            # the same token again: OK (TTL refreshed); another token, no BLOCK: None at once
            assert await c.execute_command("LOCK.ACQUIRE", "orders", "tok-1", 30) == "OK"
            assert await c.execute_command("LOCK.ACQUIRE", "orders", "tok-2", 30) is None
            assert await c.execute_command("LOCK.OWNER", "orders") == "tok-1"
            assert await c.execute_command("LOCK.RENEW", "orders", "tok-1", 60) == 1
            assert await c.execute_command("LOCK.RENEW", "orders", "tok-2", 60) == 0

            info = await lock_info(c, "orders")
            assert set(info) == {"owner", "ttl", "waiters", "python", "bound_to", "fence"}
            assert info["owner"] == "tok-1"
            assert 55_000 < info["ttl"] <= 60_000
            assert info["waiters"] == 0
            assert info["bound_to"] is None
            assert info["fence"] is None

            assert await c.execute_command("LOCK.RELEASE", "orders", "tok-2") == 0
            assert await c.execute_command("LOCK.RELEASE", "orders", "tok-1") == 1
            assert await c.execute_command("LOCK.OWNER", "orders") is None
            assert (await lock_info(c, "orders"))["ttl"] == -2

            # BLOCK with a time limit: None when the time is up
            await c.execute_command("LOCK.ACQUIRE", "orders", "tok-1", 30)
            assert await c.execute_command("LOCK.ACQUIRE", "orders", "tok-2", 30, "BLOCK", 50) is None

            # token *: the server makes one and replies it
            made = await c.execute_command("LOCK.ACQUIRE", "invoices", "*", 30)
            assert isinstance(made, str) and len(made) == 24
            assert await c.execute_command("LOCK.OWNER", "invoices") == made
            assert await c.execute_command("LOCK.ACQUIRE", "invoices", "*", 30) is None

            with pytest.raises(redis.ResponseError, match="ttl must be a positive integer"):
                await c.execute_command("LOCK.ACQUIRE", "orders", "tok-1", 0)

            assert await c.execute_command("LOCK.RESETALL") == 2
            assert await c.execute_command("LOCK.OWNER", "orders") is None

    run(scenario())


def test_blocked_acquire_woken_by_release(redis_server, r):
    """One client object, several tasks: each blocked acquire takes its own pool connection;
    releases hand the lock over first come, first served."""

    async def scenario():
        async with Clients(redis_server) as clients:
            app = clients.new()
            admin = clients.new()
            assert await app.execute_command("LOCK.ACQUIRE", "jobs", "holder", 30) == "OK"

            tasks = []
            for i in range(3):
                tasks.append(asyncio.create_task(
                    app.execute_command("LOCK.ACQUIRE", "jobs", f"w{i}", 30, "BLOCK", 0)))
                await wait_blocked(admin, i + 1)  # queued in this order
            assert await waiters(admin, "jobs") == 3
            assert not any(t.done() for t in tasks)

            assert await app.execute_command("LOCK.RELEASE", "jobs", "holder") == 1
            assert await asyncio.wait_for(tasks[0], DEADLINE) == "OK"
            assert await app.execute_command("LOCK.OWNER", "jobs") == "w0"
            assert not tasks[1].done() and not tasks[2].done()
            await wait_blocked(admin, 2)

            for i in (1, 2):
                assert await app.execute_command("LOCK.RELEASE", "jobs", f"w{i - 1}") == 1
                assert await asyncio.wait_for(tasks[i], DEADLINE) == "OK"
                assert await app.execute_command("LOCK.OWNER", "jobs") == f"w{i}"
            await wait_blocked(admin, 0)
            assert await app.execute_command("LOCK.RELEASE", "jobs", "w2") == 1

            # a blocked acquire with token * replies the server-made token when handed the lock
            await app.execute_command("LOCK.ACQUIRE", "jobs", "holder", 30)
            star = asyncio.create_task(app.execute_command("LOCK.ACQUIRE", "jobs", "*", 30, "BLOCK", 0))
            await wait_blocked(admin, 1)
            await app.execute_command("LOCK.RELEASE", "jobs", "holder")
            made = await asyncio.wait_for(star, DEADLINE)
            assert isinstance(made, str) and len(made) == 24
            assert await app.execute_command("LOCK.OWNER", "jobs") == made

    run(scenario())


def test_fence(redis_server, r):
    async def scenario():
        async with Clients(redis_server) as clients:
            c = clients.new()
            admin = clients.new()
            f1 = await c.execute_command("LOCK.ACQUIRE", "ledger", "a", 30, "FENCE")
            assert isinstance(f1, int)
            # the holder's retry with FENCE replies the same fence; another token gets None
            assert await c.execute_command("LOCK.ACQUIRE", "ledger", "a", 30, "FENCE") == f1
            assert await c.execute_command("LOCK.ACQUIRE", "ledger", "b", 30, "FENCE") is None

            # a waiter with FENCE gets its fence when handed the lock, above every earlier one
            waiter = asyncio.create_task(
                c.execute_command("LOCK.ACQUIRE", "ledger", "b", 30, "BLOCK", 0, "FENCE"))
            await wait_blocked(admin, 1)
            assert await c.execute_command("LOCK.RELEASE", "ledger", "a") == 1
            f2 = await asyncio.wait_for(waiter, DEADLINE)
            assert isinstance(f2, int) and f2 > f1
            assert (await lock_info(c, "ledger"))["fence"] == f2

            # token * with FENCE: [token, fence]
            assert await c.execute_command("LOCK.RELEASE", "ledger", "b") == 1
            token, f3 = await c.execute_command("LOCK.ACQUIRE", "ledger", "*", 30, "FENCE")
            assert isinstance(token, str) and len(token) == 24
            assert isinstance(f3, int) and f3 > f2
            assert await c.execute_command("LOCK.ACQUIRE", "ledger", "*", 30, "FENCE") is None
            # ... also when handed over after blocking
            waiter = asyncio.create_task(
                c.execute_command("LOCK.ACQUIRE", "ledger", "*", 30, "FENCE", "BLOCK", 0))
            await wait_blocked(admin, 1)
            assert await c.execute_command("LOCK.RELEASE", "ledger", token) == 1
            token2, f4 = await asyncio.wait_for(waiter, DEADLINE)
            assert token2 != token and f4 > f3
            assert await c.execute_command("LOCK.OWNER", "ledger") == token2

    run(scenario())


def test_bind_lets_go_when_the_connection_closes(redis_server, r):
    """A BIND holder's client is closed: the lock goes at once to the blocked (BIND) waiter, and
    when that waiter's client closes in turn, the lock is free."""

    async def scenario():
        async with Clients(redis_server) as clients:
            admin = clients.new()
            # single_connection_client: one connection per client, so closing the client closes
            # exactly the connection that acquired
            holder = clients.new(single_connection_client=True)
            waiter = clients.new(single_connection_client=True)

            assert await holder.execute_command("LOCK.ACQUIRE", "nightly", "job-1", 3600, "BIND") == "OK"
            holder_id = await holder.client_id()
            assert (await lock_info(admin, "nightly"))["bound_to"] == holder_id

            pending = asyncio.create_task(
                waiter.execute_command("LOCK.ACQUIRE", "nightly", "job-2", 3600, "BLOCK", 0, "BIND", "FENCE"))
            await wait_blocked(admin, 1)

            await holder.aclose()  # the "crash": the acquiring connection goes away
            fence = await asyncio.wait_for(pending, DEADLINE)
            assert isinstance(fence, int)
            assert await admin.execute_command("LOCK.OWNER", "nightly") == "job-2"
            info = await lock_info(admin, "nightly")
            assert info["bound_to"] == await waiter.client_id()
            assert info["ttl"] > 3_500_000  # the TTL counts from the hand-over

            await waiter.aclose()
            await wait_until(lambda: admin.execute_command("LOCK.OWNER", "nightly"), None, "LOCK.OWNER")

    run(scenario())


def test_cancelled_or_timed_out_acquire_leaves_the_queue(redis_server, r):
    """Client-side pitfalls: ``asyncio.wait_for`` (or a task's cancel) around a blocked acquire,
    and a ``socket_timeout`` shorter than BLOCK, both make redis.asyncio drop the connection, so
    the server drops the waiter: it is never handed the lock, and a retry queues at the back."""

    async def scenario():
        async with Clients(redis_server) as clients:
            admin = clients.new()
            await admin.execute_command("LOCK.ACQUIRE", "q", "holder", 30)

            early = clients.new()
            early_task = asyncio.create_task(early.execute_command("LOCK.ACQUIRE", "q", "early", 30, "BLOCK", 0))
            await wait_blocked(admin, 1)

            cancelled = clients.new()
            with pytest.raises(asyncio.TimeoutError):
                # times out client-side: the connection is closed under the blocked command
                await asyncio.wait_for(
                    cancelled.execute_command("LOCK.ACQUIRE", "q", "cancelled", 30, "BLOCK", 0), 0.2)

            short = clients.new(socket_timeout=0.2)
            with pytest.raises(redis.TimeoutError):
                await short.execute_command("LOCK.ACQUIRE", "q", "short", 30, "BLOCK", 0)

            # the server noticed both disconnects: only "early" still waits
            await wait_until(lambda: waiters(admin, "q"), 1, "LOCK.INFO waiters")

            # retrying after the timeout queues behind "early"
            retry = clients.new()
            retry_task = asyncio.create_task(retry.execute_command("LOCK.ACQUIRE", "q", "short", 30, "BLOCK", 0))
            await wait_until(lambda: waiters(admin, "q"), 2, "LOCK.INFO waiters")

            assert await admin.execute_command("LOCK.RELEASE", "q", "holder") == 1
            assert await asyncio.wait_for(early_task, DEADLINE) == "OK"
            assert not retry_task.done()
            assert await admin.execute_command("LOCK.RELEASE", "q", "early") == 1
            assert await asyncio.wait_for(retry_task, DEADLINE) == "OK"
            assert await admin.execute_command("LOCK.OWNER", "q") == "short"

    run(scenario())
