"""Small helpers the Python test files share: reading replies and server state, and waiting for
a condition with a deadline (never a fixed sleep as synchronisation)."""

import time

import pytest
import redis

DEADLINE = 10.0  # seconds: how long any wait for a condition may take


def text(value):
    """A reply as str (redis-py gives bytes unless decode_responses)."""
    return value.decode() if isinstance(value, bytes) else value


def owner(client, name):
    return text(client.execute_command("LOCK.OWNER", name))


def lock_info(client, name):
    """LOCK.INFO as a dict with str keys (a map in RESP3, a flat array in RESP2)."""
    reply = client.execute_command("LOCK.INFO", name)
    if isinstance(reply, dict):
        return {text(k): v for k, v in reply.items()}
    return {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}


def waiters(client, name):
    """Module clients queued for the lock."""
    return lock_info(client, name)["waiters"]


def calls(client, command):
    """How many times the server ran ``command`` since CONFIG RESETSTAT (INFO commandstats;
    module commands are listed as the module spells them, e.g. cmdstat_LOCK.ACQUIRE)."""
    for key, stats in client.info("commandstats").items():
        if key.lower() == f"cmdstat_{command}".lower():
            return stats["calls"]
    return 0


def wait_until(condition, what, timeout=DEADLINE):
    """Poll ``condition()`` until it is true; fail the test after ``timeout`` seconds."""
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
        pass  # the server is gone; the threads' connections fail on their own
