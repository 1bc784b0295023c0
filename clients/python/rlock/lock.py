"""``rlock.Lock``: python-redis-lock's ``Lock`` on redis-py's blocking client, over ``LOCK.*``."""

import threading
import weakref

from redis import StrictRedis
from redis.exceptions import ResponseError

from ._base import AlreadyAcquired
from ._base import AlreadyStarted
from ._base import LockBase
from ._base import logger_for_acquire
from ._base import logger_for_refresh_exit
from ._base import logger_for_refresh_shutdown
from ._base import logger_for_refresh_start
from ._base import logger_for_refresh_thread
from ._base import logger_for_release


class Lock(LockBase):
    """A lock held in the rlock module: ``LOCK.ACQUIRE`` / ``LOCK.RELEASE`` on ``lock:<name>``.

    Same arguments, methods, exceptions and logging as ``redis_lock.Lock`` (python-redis-lock
    4.0), plus ``bind`` and ``fence`` (see :class:`rlock._base.LockBase`). A blocking
    ``acquire()`` is one ``LOCK.ACQUIRE ... BLOCK`` call: the server queues the caller, first come
    first served, and answers when it has handed it the lock or the timeout has passed.
    """

    client_class = StrictRedis

    @property
    def _held(self):
        return self._is_mine(self._client.execute_command(*self._owner_args()))

    def get_owner_id(self):
        return self._owner_text(self._client.execute_command(*self._owner_args()))

    def locked(self):
        """True if anyone holds the lock (as python-redis-lock: whatever its id)."""
        return self._client.execute_command(*self._owner_args()) is not None

    def acquire(self, blocking=True, timeout=None):
        """
        :param blocking: wait for the lock (``False``: one try).
        :param timeout: wait at most this many whole seconds (``None`` or ``0``: no limit).
        :return: ``True`` when acquired, ``False`` when not (no wait, or the timeout passed).
        """
        logger_for_acquire.debug('Acquiring Lock(%r) ...', self._name)
        timeout = self._checked_timeout(blocking, timeout)
        if self._ask_owner_first and self._held:
            raise AlreadyAcquired('Already acquired from this Lock instance.')

        try:
            if self._ask_owner_first:
                reply = self._client.execute_command(*self._acquire_args(blocking, timeout))
            else:
                pipe = self._client.pipeline(transaction=False)
                pipe.execute_command(*self._owner_args())
                pipe.execute_command(*self._acquire_args(blocking, timeout))
                owner, reply = pipe.execute()
                if self._is_mine(owner):
                    raise AlreadyAcquired('Already acquired from this Lock instance.')
        except (AlreadyAcquired, ResponseError):
            raise  # an error reply changed nothing
        except BaseException:
            self._give_back()
            raise
        if not self._took(reply):
            if not blocking:
                logger_for_acquire.warning('Failed to acquire Lock(%r).', self._name)
            return False

        logger_for_acquire.info('Acquired Lock(%r).', self._name)
        if self._lock_renewal_interval is not None:
            self._start_lock_renewer()
        return True

    def _give_back(self):
        """An acquire that ended in an error other than an error reply (the connection dropped, a
        socket timeout, Ctrl-C) may have taken the lock, or been handed it, just before: release
        it, if the server can be reached. (A Lock that already held the lock loses it too.)"""
        try:
            self._client.execute_command(*self._release_args())
        except Exception:
            pass

    def extend(self, expire=None):
        """Set the lease to ``expire`` seconds from now (default: the Lock's ``expire``).

        Raises ``NotAcquired`` when this id does not hold the lock, ``NotExpirable`` when the
        lock was taken without ``expire``."""
        expire = self._checked_expire(expire, self._expire)
        self._check_renewable(self._client.execute_command(*self._info_args()))
        self._renewed(self._client.execute_command(*self._renew_args(expire)))

    def release(self):
        """Release the lock held by this id; the first waiter gets it at once.

        Raises ``NotAcquired`` when this id does not hold it (any more)."""
        if self._lock_renewal_thread is not None:
            self._stop_lock_renewer()
        logger_for_release.debug('Releasing Lock(%r).', self._name)
        self._released(self._client.execute_command(*self._release_args()))

    def reset(self):
        """Forcibly delete the lock, whoever holds it. Use this with care."""
        self._client.execute_command(*self._reset_args())

    # --- auto_renewal: python-redis-lock's renewal thread -----------------------------------

    @staticmethod
    def _lock_renewer(name, lockref, interval, stop):
        while not stop.wait(timeout=interval):
            logger_for_refresh_thread.debug('Refreshing Lock(%r).', name)
            lock = lockref()
            if lock is None:
                logger_for_refresh_thread.debug('Stopping loop because Lock(%r) was garbage collected.', name)
                break
            lock.extend(expire=lock._expire)
            del lock
        logger_for_refresh_thread.debug('Exiting renewal thread for Lock(%r).', name)

    def _start_lock_renewer(self):
        if self._lock_renewal_thread is not None:
            raise AlreadyStarted('Lock refresh thread already started')
        logger_for_refresh_start.debug(
            'Starting renewal thread for Lock(%r). Refresh interval: %s seconds.', self._name, self._lock_renewal_interval
        )
        self._lock_renewal_stop = threading.Event()
        self._lock_renewal_thread = threading.Thread(
            target=self._lock_renewer,
            kwargs={
                'name': self._name,
                'lockref': weakref.ref(self),
                'interval': self._lock_renewal_interval,
                'stop': self._lock_renewal_stop,
            },
            daemon=True,
        )
        self._lock_renewal_thread.start()

    def _stop_lock_renewer(self):
        if self._lock_renewal_thread is None or not self._lock_renewal_thread.is_alive():
            return
        logger_for_refresh_shutdown.debug('Signaling renewal thread for Lock(%r) to exit.', self._name)
        self._lock_renewal_stop.set()
        self._lock_renewal_thread.join()
        self._lock_renewal_thread = None
        logger_for_refresh_exit.debug('Renewal thread for Lock(%r) exited.', self._name)

    # --- context manager --------------------------------------------------------------------

    def __enter__(self):
        if not self.acquire(blocking=self.blocking):
            raise self._not_entered()
        return self

    def __exit__(self, exc_type=None, exc_value=None, traceback=None):
        self.release()


def reset_all(redis_client):
    """Forcibly delete every lock of the client's database (``LOCK.RESETALL``), waking their
    waiters. Use this with care."""
    return redis_client.execute_command('LOCK.RESETALL')
