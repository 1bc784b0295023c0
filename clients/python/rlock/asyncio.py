"""``rlock.asyncio.Lock``: the same lock for ``redis.asyncio``; every method that talks to the
server is a coroutine, and ``auto_renewal`` is a task instead of a thread.

.. code-block:: python

    import redis.asyncio
    import rlock.asyncio

    conn = redis.asyncio.Redis()
    async with rlock.asyncio.Lock(conn, "orders", expire=60):
        ...
"""

import asyncio
import functools
import weakref

from redis.asyncio import StrictRedis
from redis.exceptions import ConnectionError
from redis.exceptions import RedisError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError

from ._base import EXTEND_SCRIPT
from ._base import RESET_ALL_SCRIPT
from ._base import RESET_SCRIPT
from ._base import UNLOCK_SCRIPT
from ._base import AlreadyAcquired
from ._base import AlreadyStarted
from ._base import InvalidTimeout
from ._base import LockBase
from ._base import ModuleRequired
from ._base import forget_state
from ._base import is_unknown_command
from ._base import known_state
from ._base import probe_args
from ._base import read_probe
from ._base import remember_state
from ._base import NotAcquired
from ._base import NotExpirable
from ._base import TimeoutNotUsable
from ._base import TimeoutTooLarge
from ._base import logger_for_acquire
from ._base import logger_for_refresh_exit
from ._base import logger_for_refresh_shutdown
from ._base import logger_for_refresh_start
from ._base import logger_for_refresh_thread
from ._base import logger_for_release

__all__ = [
    'Lock',
    'reset_all',
    'AlreadyAcquired',
    'AlreadyStarted',
    'InvalidTimeout',
    'NotAcquired',
    'NotExpirable',
    'TimeoutNotUsable',
    'TimeoutTooLarge',
    'ModuleRequired',
]


async def module_loaded(client):
    """:func:`rlock.lock.module_loaded` for an asyncio client: one probe per connection pool."""
    state = known_state(client)
    if state is None:
        try:
            await client.execute_command(*probe_args())
            state = True
        except (ConnectionError, TimeoutError):
            raise
        except RedisError as exc:
            state = read_probe(error=exc)
        remember_state(client, state)
    return state


def _watched(method):
    @functools.wraps(method)
    async def call(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except ConnectionError:
            forget_state(self._client)
            raise
        except ResponseError as exc:
            if not is_unknown_command(exc) or known_state(self._client) is not True:
                raise
            # The pool reconnected to a server without the module: an unknown command did
            # nothing, so do it again in python-redis-lock's protocol.
            forget_state(self._client)
        try:
            return await method(self, *args, **kwargs)
        except ConnectionError:
            forget_state(self._client)
            raise

    return call


class Lock(LockBase):
    """:class:`rlock.Lock` for ``redis.asyncio.Redis``. ``await lock.acquire()``,
    ``await lock.release()``, ``async with lock:``; the same arguments and exceptions."""

    client_class = StrictRedis

    async def _module(self):
        return await module_loaded(self._client)

    async def _script(self, source, keys, args):
        return await self._client.register_script(source)(keys=keys, args=args, client=self._client)

    async def _owner(self):
        if await self._module():
            return await self._client.execute_command(*self._owner_args())
        return await self._client.get(self._name)

    @_watched
    async def get_owner_id(self):
        return self._owner_text(await self._owner())

    @_watched
    async def locked(self):
        if await self._module():
            return await self._owner() is not None
        return await self._client.exists(self._name) == 1

    @_watched
    async def acquire(self, blocking=True, timeout=None):
        logger_for_acquire.debug('Acquiring Lock(%r) ...', self._name)
        timeout = self._checked_timeout(blocking, timeout)
        loaded = await self._module()
        if not loaded and (self._fence or self._bind):
            # Only the module can do it: make sure it is still missing (loaded since the probe,
            # or the pool reconnected to another server) before saying so.
            forget_state(self._client)
            loaded = await self._module()
        self._check_needs(loaded)
        if loaded:
            took = await self._module_acquire(blocking, timeout)
        else:
            took = await self._plain_acquire(blocking, timeout)
        if not took:
            if not blocking:
                logger_for_acquire.warning('Failed to acquire Lock(%r).', self._name)
            return False

        logger_for_acquire.info('Acquired Lock(%r).', self._name)
        if self._lock_renewal_interval is not None:
            self._start_lock_renewer()
        return True

    async def _plain_acquire(self, blocking, timeout):
        """python-redis-lock 4.0.1's acquire (see :meth:`rlock.Lock._plain_acquire`)."""
        if self._is_mine(await self._owner()):
            raise AlreadyAcquired('Already acquired from this Lock instance.')
        blpop_timeout = timeout or self._expire or 0
        timed_out = False
        try:
            while not await self._client.set(self._name, self._id, nx=True, ex=self._expire):
                if timed_out or not blocking:
                    return False
                timed_out = not await self._client.blpop(self._signal, blpop_timeout) and timeout
        except ResponseError:
            raise  # an error reply changed nothing
        except BaseException:
            await asyncio.shield(self._give_back())
            raise
        return True

    async def _module_acquire(self, blocking, timeout):
        if self._ask_owner_first and self._is_mine(await self._owner()):
            raise AlreadyAcquired('Already acquired from this Lock instance.')

        try:
            if self._ask_owner_first:
                reply = await self._client.execute_command(*self._acquire_args(blocking, timeout))
            else:
                pipe = self._client.pipeline(transaction=False)
                pipe.execute_command(*self._owner_args())
                pipe.execute_command(*self._acquire_args(blocking, timeout))
                owner, reply = await pipe.execute()
                if self._is_mine(owner):
                    raise AlreadyAcquired('Already acquired from this Lock instance.')
        except (AlreadyAcquired, ResponseError):
            raise  # an error reply changed nothing
        except BaseException:
            # Cancelled (asyncio.timeout, task.cancel()) or the connection failed: the lock may
            # have been taken, or handed over, just before; give it back.
            await asyncio.shield(self._give_back())
            raise
        return self._took(reply)

    async def _give_back(self):
        try:
            if known_state(self._client) is False:
                await self._script(UNLOCK_SCRIPT, self._script_keys(), (self._id, self._signal_expire))
            else:
                await self._client.execute_command(*self._release_args())
        except Exception:
            pass

    @_watched
    async def extend(self, expire=None):
        expire = self._checked_expire(expire, self._expire)
        if not await self._module():
            self._plain_extended(await self._script(EXTEND_SCRIPT, self._script_keys(), (self._id, expire)))
            return
        self._check_renewable(await self._client.execute_command(*self._info_args()))
        self._renewed(await self._client.execute_command(*self._renew_args(expire)))

    @_watched
    async def release(self):
        if self._lock_renewal_thread is not None:
            await self._stop_lock_renewer()
        logger_for_release.debug('Releasing Lock(%r).', self._name)
        if not await self._module():
            self._plain_released(await self._script(UNLOCK_SCRIPT, self._script_keys(), (self._id, self._signal_expire)))
            return
        self._released(await self._client.execute_command(*self._release_args()))

    @_watched
    async def reset(self):
        if not await self._module():
            await self._script(RESET_SCRIPT, self._script_keys(), (self._id, self._signal_expire))
            return
        await self._client.execute_command(*self._reset_args())

    # --- auto_renewal: a task (kept in ``_lock_renewal_thread`` for symmetry) --------------------

    @staticmethod
    async def _lock_renewer(name, lockref, interval, stop):
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                break
            except asyncio.TimeoutError:
                pass
            logger_for_refresh_thread.debug('Refreshing Lock(%r).', name)
            lock = lockref()
            if lock is None:
                logger_for_refresh_thread.debug('Stopping loop because Lock(%r) was garbage collected.', name)
                break
            await lock.extend(expire=lock._expire)
            del lock
        logger_for_refresh_thread.debug('Exiting renewal thread for Lock(%r).', name)

    def _start_lock_renewer(self):
        if self._lock_renewal_thread is not None:
            raise AlreadyStarted('Lock refresh thread already started')
        logger_for_refresh_start.debug(
            'Starting renewal thread for Lock(%r). Refresh interval: %s seconds.', self._name, self._lock_renewal_interval
        )
        self._lock_renewal_stop = asyncio.Event()
        self._lock_renewal_thread = asyncio.get_running_loop().create_task(
            self._lock_renewer(self._name, weakref.ref(self), self._lock_renewal_interval, self._lock_renewal_stop)
        )

    async def _stop_lock_renewer(self):
        task = self._lock_renewal_thread
        if task is None or task.done():
            return
        logger_for_refresh_shutdown.debug('Signaling renewal thread for Lock(%r) to exit.', self._name)
        self._lock_renewal_stop.set()
        await task
        self._lock_renewal_thread = None
        logger_for_refresh_exit.debug('Renewal thread for Lock(%r) exited.', self._name)

    # --- context manager --------------------------------------------------------------------

    async def __aenter__(self):
        if not await self.acquire(blocking=self.blocking):
            raise self._not_entered()
        return self

    async def __aexit__(self, exc_type=None, exc_value=None, traceback=None):
        await self.release()


async def reset_all(redis_client):
    """``LOCK.RESETALL`` on an asyncio client (without the module, python-redis-lock's
    reset-all script)."""
    try:
        if not await module_loaded(redis_client):
            return await redis_client.register_script(RESET_ALL_SCRIPT)(client=redis_client)
        return await redis_client.execute_command('LOCK.RESETALL')
    except ConnectionError:
        forget_state(redis_client)
        raise
