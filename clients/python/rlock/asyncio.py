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
import weakref

from redis.asyncio import StrictRedis
from redis.exceptions import ResponseError

from ._base import AlreadyAcquired
from ._base import AlreadyStarted
from ._base import InvalidTimeout
from ._base import LockBase
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
]


class Lock(LockBase):
    """:class:`rlock.Lock` for ``redis.asyncio.Redis``. ``await lock.acquire()``,
    ``await lock.release()``, ``async with lock:``; the same arguments and exceptions."""

    client_class = StrictRedis

    async def _owner(self):
        return await self._client.execute_command(*self._owner_args())

    async def get_owner_id(self):
        return self._owner_text(await self._owner())

    async def locked(self):
        return await self._owner() is not None

    async def acquire(self, blocking=True, timeout=None):
        logger_for_acquire.debug('Acquiring Lock(%r) ...', self._name)
        timeout = self._checked_timeout(blocking, timeout)
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
        if not self._took(reply):
            if not blocking:
                logger_for_acquire.warning('Failed to acquire Lock(%r).', self._name)
            return False

        logger_for_acquire.info('Acquired Lock(%r).', self._name)
        if self._lock_renewal_interval is not None:
            self._start_lock_renewer()
        return True

    async def _give_back(self):
        try:
            await self._client.execute_command(*self._release_args())
        except Exception:
            pass

    async def extend(self, expire=None):
        expire = self._checked_expire(expire, self._expire)
        self._check_renewable(await self._client.execute_command(*self._info_args()))
        self._renewed(await self._client.execute_command(*self._renew_args(expire)))

    async def release(self):
        if self._lock_renewal_thread is not None:
            await self._stop_lock_renewer()
        logger_for_release.debug('Releasing Lock(%r).', self._name)
        self._released(await self._client.execute_command(*self._release_args()))

    async def reset(self):
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
    """``LOCK.RESETALL`` on an asyncio client."""
    return await redis_client.execute_command('LOCK.RESETALL')
