"""``rlock.Lock``: python-redis-lock's ``Lock`` on redis-py's blocking client, over ``LOCK.*``
where the module is loaded, over python-redis-lock's own protocol where it is not."""

import functools
import threading
import weakref

from redis import StrictRedis
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
from ._base import LockBase
from ._base import forget_state
from ._base import is_unknown_command
from ._base import known_state
from ._base import probe_args
from ._base import read_probe
from ._base import remember_state
from ._base import logger_for_acquire
from ._base import logger_for_refresh_exit
from ._base import logger_for_refresh_shutdown
from ._base import logger_for_refresh_start
from ._base import logger_for_refresh_thread
from ._base import logger_for_release


def module_loaded(client):
    """Whether the server of ``client``'s connection pool has the rlock module: probed once per
    pool (one ``LOCK.OWNER``), asked again after a connection error."""
    state = known_state(client)
    if state is None:
        try:
            client.execute_command(*probe_args())
            state = True
        except (ConnectionError, TimeoutError):
            raise
        except RedisError as exc:
            state = read_probe(error=exc)
        remember_state(client, state)
    return state


def _watched(method):
    """A connection error makes the pool's next call probe the server again; an "unknown
    command" reply to a module command (the pool reconnected to a server without the module)
    does too, and the call is made once more. (The other way round, python-redis-lock's
    protocol works with the module too, and ``fence``/``bind`` probe again before they raise.)"""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except ConnectionError:
            forget_state(self._client)
            raise
        except ResponseError as exc:
            if not is_unknown_command(exc) or known_state(self._client) is not True:
                raise
            # The pool reconnected to a server without the module (a restart, a failover that
            # redis-py hid): an unknown command did nothing, so do it again, probed anew.
            forget_state(self._client)
        try:
            return method(self, *args, **kwargs)
        except ConnectionError:
            forget_state(self._client)
            raise

    return call


class Lock(LockBase):
    """A lock held in the rlock module: ``LOCK.ACQUIRE`` / ``LOCK.RELEASE`` on ``lock:<name>``.

    Same arguments, methods, exceptions and logging as ``redis_lock.Lock`` (python-redis-lock
    4.0), plus ``bind`` and ``fence`` (see :class:`rlock._base.LockBase`). A blocking
    ``acquire()`` is one ``LOCK.ACQUIRE ... BLOCK`` call: the server queues the caller, first come
    first served, and answers when it has handed it the lock or the timeout has passed.
    """

    client_class = StrictRedis

    def _module(self):
        return module_loaded(self._client)

    def _script(self, source, keys, args):
        return self._client.register_script(source)(keys=keys, args=args, client=self._client)

    def _owner(self):
        if self._module():
            return self._client.execute_command(*self._owner_args())
        return self._client.get(self._name)

    @property
    def _held(self):
        return self._is_mine(self._owner())

    @_watched
    def get_owner_id(self):
        return self._owner_text(self._owner())

    @_watched
    def locked(self):
        """True if anyone holds the lock (as python-redis-lock: whatever its id)."""
        if self._module():
            return self._client.execute_command(*self._owner_args()) is not None
        return self._client.exists(self._name) == 1

    @_watched
    def acquire(self, blocking=True, timeout=None):
        """
        :param blocking: wait for the lock (``False``: one try).
        :param timeout: wait at most this many whole seconds (``None`` or ``0``: no limit).
        :return: ``True`` when acquired, ``False`` when not (no wait, or the timeout passed).
        :raises ModuleRequired: ``fence`` or ``bind`` on a server without the module.
        """
        logger_for_acquire.debug('Acquiring Lock(%r) ...', self._name)
        timeout = self._checked_timeout(blocking, timeout)
        loaded = self._module()
        if not loaded and (self._fence or self._bind):
            # Only the module can do it: make sure it is still missing (loaded since the probe,
            # or the pool reconnected to another server) before saying so.
            forget_state(self._client)
            loaded = self._module()
        self._check_needs(loaded)
        if not loaded:
            took = self._plain_acquire(blocking, timeout)
        else:
            took = self._module_acquire(blocking, timeout)
        if not took:
            if not blocking:
                logger_for_acquire.warning('Failed to acquire Lock(%r).', self._name)
            return False

        logger_for_acquire.info('Acquired Lock(%r).', self._name)
        if self._lock_renewal_interval is not None:
            self._start_lock_renewer()
        return True

    def _plain_acquire(self, blocking, timeout):
        """python-redis-lock 4.0.1's acquire: ``SET NX`` (with ``EX expire``), and between tries
        ``BLPOP`` on the signal list, for ``timeout`` (else ``expire``, else no limit) seconds."""
        if self._held:
            raise AlreadyAcquired('Already acquired from this Lock instance.')
        blpop_timeout = timeout or self._expire or 0
        timed_out = False
        try:
            while not self._client.set(self._name, self._id, nx=True, ex=self._expire):
                if timed_out or not blocking:
                    return False
                timed_out = not self._client.blpop(self._signal, blpop_timeout) and timeout
        except ResponseError:
            raise  # an error reply changed nothing
        except BaseException:
            self._give_back()
            raise
        return True

    def _module_acquire(self, blocking, timeout):
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
        return self._took(reply)

    def _give_back(self):
        """An acquire that ended in an error other than an error reply (the connection dropped, a
        socket timeout, Ctrl-C) may have taken the lock, or been handed it, just before: release
        it, if the server can be reached. (A Lock that already held the lock loses it too.)"""
        try:
            if known_state(self._client) is False:
                self._script(UNLOCK_SCRIPT, self._script_keys(), (self._id, self._signal_expire))
            else:
                self._client.execute_command(*self._release_args())
        except Exception:
            pass

    @_watched
    def extend(self, expire=None):
        """Set the lease to ``expire`` seconds from now (default: the Lock's ``expire``).

        Raises ``NotAcquired`` when this id does not hold the lock, ``NotExpirable`` when the
        lock was taken without ``expire``."""
        expire = self._checked_expire(expire, self._expire)
        if not self._module():
            self._plain_extended(self._script(EXTEND_SCRIPT, self._script_keys(), (self._id, expire)))
            return
        self._check_renewable(self._client.execute_command(*self._info_args()))
        self._renewed(self._client.execute_command(*self._renew_args(expire)))

    @_watched
    def release(self):
        """Release the lock held by this id; the first waiter gets it at once.

        Raises ``NotAcquired`` when this id does not hold it (any more)."""
        if self._lock_renewal_thread is not None:
            self._stop_lock_renewer()
        logger_for_release.debug('Releasing Lock(%r).', self._name)
        if not self._module():
            self._plain_released(self._script(UNLOCK_SCRIPT, self._script_keys(), (self._id, self._signal_expire)))
            return
        self._released(self._client.execute_command(*self._release_args()))

    @_watched
    def reset(self):
        """Forcibly delete the lock, whoever holds it. Use this with care."""
        if not self._module():
            self._script(RESET_SCRIPT, self._script_keys(), (self._id, self._signal_expire))
            return
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
    """Forcibly delete every lock of the client's database (``LOCK.RESETALL``; without the
    module, python-redis-lock's reset-all script), waking their waiters. Use this with care."""
    try:
        if not module_loaded(redis_client):
            return redis_client.register_script(RESET_ALL_SCRIPT)(client=redis_client)
        return redis_client.execute_command('LOCK.RESETALL')
    except ConnectionError:
        forget_state(redis_client)
        raise
