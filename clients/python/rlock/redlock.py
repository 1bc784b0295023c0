"""Redlock: one lock over N independent rlock servers.

The servers are *independent*: no replication between them, each one a primary of its own with
the rlock module loaded. A lock is held when a majority of them (``N // 2 + 1``) granted it to
our token within a bounded time, so it survives the failure of a minority of servers (crashed,
stopped, unreachable) without the failover race of an asynchronously replicated primary. This is
the algorithm of the Redis documentation's "Distributed locks with Redis" (Redlock), with
rlock's commands as the per-server step:

1. Take a fresh random token and the time.
2. Send the non-blocking ``LOCK.ACQUIRE name token ttl`` to every server at once, each in a
   thread of its own, and wait for the replies at most ``server_timeout`` seconds: a server that
   is down or stopped costs that much at most, once, not once per server.
3. Acquired if a majority replied ``OK`` and the time left, ``validity = ttl - elapsed - drift``
   with ``drift = ttl * clock_drift_factor + 0.002``, is positive. The lock is then ours for
   ``validity`` seconds from the moment ``acquire()`` returned.
4. Otherwise send ``LOCK.RELEASE name token`` everywhere and, after a random pause of up to
   ``retry_delay`` seconds, try again, ``retry_count`` attempts in all.

The module checks tokens itself, so releasing is just ``LOCK.RELEASE`` on every server, and
renewing (``extend``) is ``LOCK.RENEW`` on a majority.

A server that does not answer in time may still carry out our ``LOCK.ACQUIRE`` later (a stopped
process resumes and reads what waited in its socket). When we then give the lock up, the
``LOCK.RELEASE`` for that server goes out on the *same* connection, behind the unanswered
acquire, so the server runs the two in that order whenever it gets to them: it does not keep a
lock that nobody holds. Where the acquire could not even be sent (a new connection whose
handshake the server never answered), nothing is left behind. In the remaining case (the
connection itself was lost after the server took the lock) the TTL frees it.

Usage::

    import redis
    from rlock.redlock import Redlock

    servers = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"]
    lock = Redlock(servers, "nightly-report", ttl=30)
    held = lock.acquire()
    if held:
        print(f"mine for {held.validity:.3f} s")
        ...
        lock.release()

    with Redlock(servers, "nightly-report", ttl=30) as lock:   # RedlockError if not acquired
        ...

Give clients (``redis.Redis`` objects) a ``socket_timeout`` and ``socket_connect_timeout``:
``acquire()`` itself never waits longer than ``server_timeout`` for a server, but opening a new
connection to a stopped server waits for the client's own timeouts in a background thread.
URLs are turned into clients with both set to ``server_timeout``.

What this does not give: safety rests on bounded clock drift between the servers and this
process (a server whose clock jumps forward expires the lock early), and a holder that stalls
longer than its validity (GC pause, stopped VM) is not stopped from acting. ``FENCE`` numbers
are per server and do not compose into a fence for the Redlock: do not use them as one.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import queue
import random
import threading
import time
from typing import List, NamedTuple, Optional, Sequence, Union

import redis
from redis.exceptions import RedisError, ResponseError

from ._base import is_unknown_command, module_required

__all__ = ["Redlock", "RedlockError", "Acquired"]

log = logging.getLogger(__name__)

DRIFT_CONSTANT = 0.002  # seconds added to the drift allowance, as in the Redlock description


class RedlockError(RuntimeError):
    """A Redlock was used in a way its state does not allow (releasing a lock not held, acquiring
    twice), or ``with Redlock(...)`` could not acquire it."""


class Acquired(NamedTuple):
    """What ``acquire()`` returns when it got the lock (a tuple, so always true)."""

    validity: float  # seconds from the return of acquire() during which the lock is ours
    token: str  # the token the servers hold (LOCK.OWNER shows it)
    servers: int  # how many servers had granted it when acquire() decided (>= the quorum)


def new_token() -> str:
    """24 characters of base64 from 18 random bytes, like the module's own ``*`` tokens."""
    return base64.b64encode(os.urandom(18)).decode("ascii")


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _get_connection(pool):
    try:
        return pool.get_connection()  # redis-py >= 5.3 (passing a command name is deprecated)
    except TypeError:
        return pool.get_connection("LOCK")  # older redis-py requires one


class _Gate:
    """Lets one round's requests send their command until the round's deadline or until it is
    closed, then none: no command of a round leaves after the round is over (a late
    LOCK.ACQUIRE would land after our LOCK.RELEASE). Once closed, ``sent`` is final."""

    def __init__(self, deadline):
        self.lock = threading.Lock()
        self.open = True
        self.deadline = deadline

    def close(self):
        with self.lock:
            self.open = False


class _Request:
    """One command to one server, in a daemon thread of its own, waiting for its reply until
    ``deadline``.

    When ``done`` is set, exactly one of these describes the outcome: ``reply`` (the reply),
    ``error`` (a RedisError: could not connect, connection lost, error reply), ``pending`` (the
    connection the command went out on, still owing its reply: only with ``keep_pending``; else
    such a connection is closed), or nothing (the round was over before the command could be
    sent). ``sent`` tells whether the command left; it is final once the round's gate is closed.
    """

    def __init__(self, client, args, gate, results, keep_pending=False):
        self.client = client
        self.args = args
        self.gate = gate
        self.deadline = gate.deadline
        self.results = results
        self.keep_pending = keep_pending
        self.sent = False
        self.reply = self.error = self.pending = None
        self.done = threading.Event()
        threading.Thread(target=self._run, name=f"redlock {args[0]}", daemon=True).start()

    def _run(self):
        pool = self.client.connection_pool
        conn = None
        try:
            conn = _get_connection(pool)  # a new connection: bounded by the client's timeouts
            with self.gate.lock:
                if not self.gate.open or time.monotonic() >= self.gate.deadline:
                    return
                conn.send_command(*self.args)
                self.sent = True
            if conn.can_read(timeout=max(self.deadline - time.monotonic(), 0.0)):
                self.reply = conn.read_response()
            elif self.keep_pending:
                self.pending, conn = conn, None  # kept out of the pool until settled
            else:
                conn.disconnect()
        except ResponseError as exc:
            self.error = exc  # the connection is fine
        except Exception as exc:  # a RedisError, or the client was closed under us
            self.error = exc
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.disconnect()
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    pool.release(conn)
            self.done.set()
            self.results.put(self)

    def granted(self):
        """The command was answered OK (LOCK.ACQUIRE) or 1 (LOCK.RELEASE, LOCK.RENEW)."""
        return self.error is None and _text(self.reply) in ("OK", 1)


class _Round:
    """One command sent to every server at once; ``wait`` collects the replies."""

    def __init__(self, clients, args, timeout, keep_pending=False, skip=()):
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.gate = _Gate(self.deadline)
        self.results = queue.SimpleQueue()
        self.requests = [
            None if i in skip
            else _Request(c, args, self.gate, self.results, keep_pending)
            for i, c in enumerate(clients)
        ]

    def wait(self, quorum=None):
        """Wait until every request is done or the deadline passed, or (with ``quorum``) until
        ``quorum`` requests were granted or so many failed that it cannot be reached. Returns
        the number granted. Requests not done go on (until the deadline) unless the round is
        closed."""
        todo = sum(r is not None for r in self.requests)
        granted = failed = 0
        while granted + failed < todo:
            if quorum is not None and (granted >= quorum or todo - failed < quorum):
                break
            try:
                request = self.results.get(timeout=max(self.deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if request.granted():
                granted += 1
            else:
                failed += 1
                if request.error is not None:
                    log.debug("redlock: %s failed on a server: %r", request.args[0], request.error)
        return granted

    def close(self):
        """No request of this round sends its command from now on."""
        self.gate.close()


class Redlock:
    """A lock named ``name`` over independent rlock servers, held when a majority granted it.

    :param clients: the servers, each a ``redis.Redis`` (standalone, not a cluster client) or a
        URL (made into a client with ``socket_timeout`` and ``socket_connect_timeout`` equal to
        ``server_timeout``). Use an odd number; 3 or 5 typically.
    :param name: the lock's name (key ``lock:<name>`` on each server).
    :param ttl: the lease in whole seconds on each server.
    :param server_timeout: seconds to wait for the servers' replies in one attempt; keep it
        small next to ``ttl`` (the spec suggests 5-50 ms for a 10 s TTL on a LAN).
    :param retry_count: attempts ``acquire()`` makes in all.
    :param retry_delay: the pause between attempts is random in ``[0, retry_delay]`` seconds.
    :param clock_drift_factor: the share of ``ttl`` assumed lost to clock drift.
    :param token: the token to hold the lock with; by default a fresh random one per attempt
        (safer: a late command of an earlier attempt can never touch a later one). Give your own
        to make the owner recognisable in ``LOCK.OWNER``; it must be unique to this holder.

    A Redlock object holds at most one acquisition at a time and is not meant to be shared by
    threads; make one per holder.
    """

    def __init__(
        self,
        clients: Sequence[Union[redis.Redis, str]],
        name: str,
        ttl: int,
        *,
        server_timeout: float = 0.1,
        retry_count: int = 3,
        retry_delay: float = 0.2,
        clock_drift_factor: float = 0.01,
        token: Optional[str] = None,
    ):
        if not clients:
            raise ValueError("Redlock needs at least one server")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
            raise ValueError("ttl must be a positive whole number of seconds")
        if server_timeout <= 0 or retry_count < 1 or retry_delay < 0 or clock_drift_factor < 0:
            raise ValueError("server_timeout must be > 0, retry_count >= 1, the others >= 0")
        if token is not None and not token:
            raise ValueError("token must not be empty")
        self.clients: List[redis.Redis] = [
            redis.Redis.from_url(c, socket_timeout=server_timeout, socket_connect_timeout=server_timeout)
            if isinstance(c, str) else c
            for c in clients
        ]
        for c in self.clients:
            if not hasattr(c, "connection_pool") or not hasattr(c.connection_pool, "get_connection"):
                raise TypeError(f"Redlock needs standalone redis.Redis clients or URLs, not {c!r}")
        self.name = name
        self.ttl = ttl
        self.server_timeout = server_timeout
        self.retry_count = retry_count
        self.retry_delay = retry_delay
        self.clock_drift_factor = clock_drift_factor
        self.quorum = len(self.clients) // 2 + 1
        self._token = token
        self.held: Optional[Acquired] = None  # the acquisition in force, if any
        self._acquire_round: Optional[_Round] = None  # the round that got it

    def _drift(self, ttl):
        return ttl * self.clock_drift_factor + DRIFT_CONSTANT

    def acquire(self) -> Optional[Acquired]:
        """Try to take the lock, up to ``retry_count`` attempts; never waits for a holder.

        An attempt ends as soon as a majority granted the lock (the other servers are still sent
        it until ``server_timeout``), as soon as a majority can no longer be reached, or after
        ``server_timeout``. Returns an :class:`Acquired` (validity in seconds, token, servers)
        or None when not acquired; an attempt that failed has already been released everywhere.
        Raises :class:`rlock.ModuleRequired` when an attempt failed and a server answered that it
        has no ``LOCK.ACQUIRE`` (the module is not loaded there).
        """
        if self.held is not None:
            raise RedlockError(f"lock {self.name!r} is already acquired by this Redlock")
        for attempt in range(self.retry_count):
            if attempt:
                time.sleep(random.uniform(0, self.retry_delay))
            token = self._token or new_token()
            rnd = _Round(self.clients, ("LOCK.ACQUIRE", self.name, token, self.ttl),
                         self.server_timeout, keep_pending=True)
            granted = rnd.wait(quorum=self.quorum)
            validity = self.ttl - (time.monotonic() - rnd.start) - self._drift(self.ttl)
            if granted >= self.quorum and validity > 0:
                # The servers not heard from yet may still be sent the acquire, until the
                # round's deadline: the more servers hold it, the more failures it survives.
                self.held = Acquired(validity, token, granted)
                self._acquire_round = rnd
                return self.held
            self._release_everywhere(rnd, token)
            lacking = [r.client for r in rnd.requests if r is not None and is_unknown_command(r.error)]
            if lacking:
                raise module_required(f"Redlock (server {lacking[0]!r})")
        return None

    def release(self) -> int:
        """Give the lock up: ``LOCK.RELEASE`` on every server. Returns how many servers replied
        1 (still held it with our token). Waits for the replies at most ``server_timeout`` (plus
        what is left of the acquire's ``server_timeout`` when called right after it): with
        every server up that is about a round trip, with one down the whole timeout. A stopped
        server that had been sent our acquire releases when it resumes. RedlockError if not
        held."""
        if self.held is None:
            raise RedlockError(f"lock {self.name!r} is not acquired by this Redlock")
        token, rnd = self.held.token, self._acquire_round
        self.held = self._acquire_round = None
        return self._release_everywhere(rnd, token)

    def extend(self, ttl: Optional[int] = None) -> Optional[float]:
        """Renew the lease to ``ttl`` seconds (default: the Redlock's ttl) with ``LOCK.RENEW``
        on every server. Returns the new validity in seconds if a majority renewed it in time,
        else None: the lock must then be taken as lost when the previous validity runs out.
        RedlockError if not held."""
        if self.held is None:
            raise RedlockError(f"lock {self.name!r} is not acquired by this Redlock")
        ttl = self.ttl if ttl is None else ttl
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
            raise ValueError("ttl must be a positive whole number of seconds")
        # A server whose LOCK.ACQUIRE is still unanswered is left out: a LOCK.RENEW on another
        # connection could overtake it there.
        self._acquire_round.close()
        pending = {i for i, r in enumerate(self._acquire_round.requests) if self._settle(r)}
        rnd = _Round(self.clients, ("LOCK.RENEW", self.name, self.held.token, ttl),
                     self.server_timeout, skip=pending)
        granted = rnd.wait(quorum=self.quorum)
        rnd.close()
        validity = ttl - (time.monotonic() - rnd.start) - self._drift(ttl)
        if granted >= self.quorum and validity > 0:
            self.held = self.held._replace(validity=validity, servers=granted)
            return validity
        return None

    def _settle(self, request) -> bool:
        """Wait for an acquire request that was sent to be done (bounded by its round's
        deadline), and take in a late reply. True if it is still unanswered."""
        if request is None or not request.sent:
            return False
        request.done.wait(max(request.deadline - time.monotonic(), 0.0) + self.server_timeout)
        conn = request.pending
        if conn is not None:
            try:
                if not conn.can_read(timeout=0):
                    return True
                request.reply = conn.read_response()  # answered late: the connection is clean
            except RedisError as exc:
                request.error = exc
                conn.disconnect()
            request.pending = None
            request.client.connection_pool.release(conn)
        return False

    def _release_everywhere(self, rnd: _Round, token: str) -> int:
        """LOCK.RELEASE on every server; on a connection still owing the reply to our
        LOCK.ACQUIRE, piped behind it (then the connection is closed), elsewhere as a request.
        Returns the number of servers that replied 1."""
        rnd.close()
        piped = set()
        for i, request in enumerate(rnd.requests):
            if self._settle(request):
                conn, request.pending = request.pending, None
                try:
                    conn.send_command("LOCK.RELEASE", self.name, token)
                except RedisError as exc:
                    log.debug("redlock: could not pipe LOCK.RELEASE: %r", exc)
                finally:
                    conn.disconnect()
                    request.client.connection_pool.release(conn)
                piped.add(i)
        release = _Round(self.clients, ("LOCK.RELEASE", self.name, token),
                         self.server_timeout, skip=piped)
        released = release.wait()
        release.close()
        return released

    def __enter__(self):
        if not self.acquire():
            raise RedlockError(f"could not acquire lock {self.name!r} on a majority of servers")
        return self

    def __exit__(self, *exc):
        self.release()
