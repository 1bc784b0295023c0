"""What the blocking and the asyncio ``Lock`` share: arguments checked as python-redis-lock checks
them, the ``LOCK.*`` calls they make, and what the replies mean. No I/O here.

The module commands (README of the repository, section *Commands*)::

    LOCK.ACQUIRE name token ttl [BLOCK ms] [FENCE] [BIND]   -> OK | fence | nil
    LOCK.RELEASE name token                                 -> 1 | 0
    LOCK.RENEW name token ttl                               -> 1 | 0
    LOCK.OWNER name                                         -> token | nil
    LOCK.INFO name                                          -> owner, ttl (ms), waiters, ...
    LOCK.RESETALL                                           -> number of locks removed

Where the module is not loaded (a managed service, a server you may not load modules into), the
same classes speak python-redis-lock 4.0's own protocol on the same keys instead: ``SET NX``, the
Lua scripts below and the signal list ``lock-signal:<name>``. Which one a client speaks is
decided once per connection pool (:func:`probe_args`, :func:`read_probe`) and asked again after
a connection error. What only the module can do (``fence``, ``bind``, Redlock) raises
:class:`ModuleRequired` there.
"""

from base64 import b64encode
from logging import getLogger
from os import urandom

# The loggers and messages of python-redis-lock, under this package's name.
logger_for_acquire = getLogger('rlock.acquire')
logger_for_refresh_thread = getLogger('rlock.refresh.thread')
logger_for_refresh_start = getLogger('rlock.refresh.start')
logger_for_refresh_shutdown = getLogger('rlock.refresh.shutdown')
logger_for_refresh_exit = getLogger('rlock.refresh.exit')
logger_for_release = getLogger('rlock.release')

#: The module gives every lock a lease. A ``Lock`` without ``expire`` (python-redis-lock: "never
#: expires") takes this one: 1,000 years.
NO_EXPIRY_SECONDS = 1000 * 365 * 24 * 3600

#: ``extend()`` treats a lock with more than this left (or no TTL at all, as python-redis-lock's own
#: ``expire=None`` locks have) as one that does not expire, and raises ``NotExpirable``.
NOT_EXPIRABLE_ABOVE_MS = NO_EXPIRY_SECONDS // 2 * 1000


# python-redis-lock 4.0.1's scripts (src/redis_lock/__init__.py; BSD 2-Clause, (c) Ionel Cristian
# Mărieș), byte for byte: without the module, rlock speaks its protocol on the same keys.
UNLOCK_SCRIPT = b"""
    if redis.call("get", KEYS[1]) ~= ARGV[1] then
        return 1
    else
        redis.call("del", KEYS[2])
        redis.call("lpush", KEYS[2], 1)
        redis.call("pexpire", KEYS[2], ARGV[2])
        redis.call("del", KEYS[1])
        return 0
    end
"""

EXTEND_SCRIPT = b"""
    if redis.call("get", KEYS[1]) ~= ARGV[1] then
        return 1
    elseif redis.call("ttl", KEYS[1]) < 0 then
        return 2
    else
        redis.call("expire", KEYS[1], ARGV[2])
        return 0
    end
"""

RESET_SCRIPT = b"""
    redis.call('del', KEYS[2])
    redis.call('lpush', KEYS[2], 1)
    redis.call('pexpire', KEYS[2], ARGV[2])
    return redis.call('del', KEYS[1])
"""

RESET_ALL_SCRIPT = b"""
    local locks = redis.call('keys', 'lock:*')
    local signal
    for _, lock in pairs(locks) do
        signal = 'lock-signal:' .. string.sub(lock, 6)
        redis.call('del', signal)
        redis.call('lpush', signal, 1)
        redis.call('expire', signal, 1)
        redis.call('del', lock)
    end
    return #locks
"""


class ModuleRequired(RuntimeError):
    """What was asked needs the rlock Redis module (``LOCK.*`` commands), and the server does not
    have it loaded."""


class AlreadyAcquired(RuntimeError):
    pass


class NotAcquired(RuntimeError):
    pass


class AlreadyStarted(RuntimeError):
    pass


class TimeoutNotUsable(RuntimeError):
    pass


class InvalidTimeout(RuntimeError):
    pass


class TimeoutTooLarge(RuntimeError):
    pass


class NotExpirable(RuntimeError):
    pass


def _text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else value


def _seconds(expire):
    """An ``expire`` as python-redis-lock reads it: whole seconds, ``None`` for a falsy one."""
    if not expire:
        return None
    expire = int(expire)
    if expire < 0:
        raise ValueError('A negative expire is not acceptable.')
    return expire


# --- is the module loaded? once per connection pool ---------------------------------------------

#: Where the answer is kept: an attribute of the client's connection pool (of the client itself
#: when it has none, e.g. a cluster client), so every Lock on that pool shares one probe.
_STATE = '_rlock_module_loaded'


def _holder(client):
    return getattr(client, 'connection_pool', None) or client


def known_state(client):
    """``True``/``False`` once the pool's server was probed, ``None`` before."""
    return getattr(_holder(client), _STATE, None)


def remember_state(client, loaded):
    try:
        setattr(_holder(client), _STATE, loaded)
    except (AttributeError, TypeError):
        pass


def forget_state(client):
    """After a connection error (the server may have been restarted, or failed over, with or
    without the module) the next call probes again."""
    try:
        delattr(_holder(client), _STATE)
    except (AttributeError, TypeError):
        pass


def probe_args():
    """The probe: ``LOCK.OWNER`` on a key no lock uses. Every user can run it to the point that
    answers the question, whatever its ACL: the server looks the command up before it checks
    permissions, so a server without the module says "unknown command" to everyone, and one
    with it answers, or refuses with NOPERM (the user may not use the module: the module's
    commands then tell the user so). ``MODULE LIST`` needs admin rights, ``COMMAND INFO`` is
    often denied to restricted users."""
    return ['LOCK.OWNER', 'rlock:probe']


def is_unknown_command(exc):
    """Whether an error means the server has no such command (no module loaded): its error
    reply, or redis-py's cluster client refusing a command the servers' ``COMMAND`` lacks."""
    from redis.exceptions import ConnectionError
    from redis.exceptions import NoPermissionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError

    if not isinstance(exc, RedisError) or isinstance(exc, (NoPermissionError, ConnectionError, TimeoutError)):
        return False
    text = str(exc).lower()
    return 'unknown command' in text or "command doesn't exist in redis commands" in text


def read_probe(reply=None, error=None):
    """The probe's answer as ``True`` (module loaded) or ``False``; other errors are raised and
    nothing is remembered."""
    from redis.exceptions import NoPermissionError

    if error is None or isinstance(error, NoPermissionError):
        return True
    if is_unknown_command(error):
        return False
    raise error


def module_required(what):
    return ModuleRequired(
        f'{what} needs the rlock Redis module (LOCK.* commands), which this server does not have '
        'loaded; load it (loadmodule /path/to/librlock.so) or do without it'
    )


def new_id():
    return b64encode(urandom(18)).decode('ascii')


def info_fields(reply):
    """``LOCK.INFO``'s reply as a dict with str keys: RESP3 gives a map, RESP2 a flat array."""
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    return {_text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}


class LockBase:
    """A lock's name, token and options, checked as python-redis-lock checks them, and the
    ``LOCK.*`` calls made for it. Subclasses do the I/O: :class:`rlock.Lock` (blocking) and
    :class:`rlock.asyncio.Lock`."""

    #: For ``strict=True``: the client class ``redis_client`` must be an instance of.
    client_class = None

    def __init__(
        self,
        redis_client,
        name,
        expire=None,
        id=None,
        auto_renewal=False,
        strict=True,
        signal_expire=1000,
        blocking=True,
        *,
        bind=False,
        fence=False,
    ):
        """
        The arguments of python-redis-lock's ``Lock``, two more, and what differs:

        :param expire: the lease in seconds. ``None`` (python-redis-lock: never expires): the
            module requires a lease, so the lock is taken for :data:`NO_EXPIRY_SECONDS`
            (1,000 years); ``extend()`` still raises ``NotExpirable`` for it. Without the module,
            as python-redis-lock: the key gets no TTL.
        :param signal_expire: without the module, how long (ms) the signal list of a release
            lasts, as in python-redis-lock; with it, ignored: the module signals
            python-redis-lock's waiters itself.
        :param bind: take the lock with ``BIND``: the server also lets it go (and hands it to the
            next waiter) when the connection that acquired it closes, so a crashed process frees
            it at once instead of after ``expire``. With ``expire=None`` this is the lock that is
            held for as long as its holder lives, with no renewal thread. The binding is to the
            pool connection that ran ``LOCK.ACQUIRE``: a client that drops that connection drops
            the lock.
        :param fence: take the lock with ``FENCE``: after ``acquire()`` returns ``True``,
            :attr:`fence` holds a number greater than every fence given out before for this name.
        """
        if strict and self.client_class is not None and not isinstance(redis_client, self.client_class):
            raise ValueError(
                f"redis_client must be instance of {self.client_class.__name__}. "
                "Use strict=False if you know what you're doing."
            )
        if auto_renewal and expire is None:
            raise ValueError('Expire may not be None when auto_renewal is set')

        self._client = redis_client

        self._expire = _seconds(expire)

        self._signal_expire = signal_expire
        # A random id is this Lock's alone: acquire() may then ask LOCK.OWNER and LOCK.ACQUIRE in
        # one round trip (see ``_ask_owner_first``).
        self._id_is_own = id is None
        if id is None:
            self._id = new_id()
        elif isinstance(id, bytes):
            try:
                self._id = id.decode('ascii')
            except UnicodeDecodeError:
                self._id = b64encode(id).decode('ascii')
        elif isinstance(id, str):
            self._id = id
        else:
            raise TypeError(f'Incorrect type for `id`. Must be bytes/str not {type(id)}.')
        self.name = name
        self._name = 'lock:' + name
        self._signal = 'lock-signal:' + name
        self._lock_renewal_interval = float(expire) * 2 / 3 if auto_renewal else None
        self._lock_renewal_thread = None
        self.blocking = blocking
        self._bind = bind
        self._fence = fence
        #: The fence of the last ``acquire()`` with ``fence=True`` that returned ``True``.
        self.fence = None

    @property
    def id(self):
        return self._id

    # --- arguments --------------------------------------------------------------------------

    def _checked_timeout(self, blocking, timeout):
        """python-redis-lock's checks on ``acquire``'s arguments; the timeout as an int or None."""
        if not blocking and timeout is not None:
            raise TimeoutNotUsable('Timeout cannot be used if blocking=False')
        if timeout:
            timeout = int(timeout)
            if timeout < 0:
                raise InvalidTimeout(f'Timeout ({timeout}) cannot be less than or equal to 0')
            if self._expire and not self._lock_renewal_interval and timeout > self._expire:
                raise TimeoutTooLarge(f'Timeout ({timeout}) cannot be greater than expire ({self._expire})')
        return timeout or None

    @staticmethod
    def _checked_expire(expire, default):
        expire = _seconds(expire)
        if expire is not None:
            return expire
        if default is not None:
            return default
        raise TypeError("To extend a lock 'expire' must be provided as an argument to extend() method or at initialization time.")

    # --- the calls --------------------------------------------------------------------------

    @property
    def _ask_owner_first(self):
        """Whether ``acquire()`` must learn the owner before it sends ``LOCK.ACQUIRE``.

        python-redis-lock raises ``AlreadyAcquired`` when the lock's owner is this Lock's id, and
        then changes nothing. ``LOCK.ACQUIRE`` by the owner's own token renews the lease. With a
        random id only this Lock can hold the lock under it, so ``LOCK.OWNER`` and
        ``LOCK.ACQUIRE`` go together in one round trip: on a second ``acquire()`` of a Lock that
        holds the lock, ``AlreadyAcquired`` is still raised, and the lease has been renewed to
        this Lock's ``expire``. With an id given by the caller, other Lock objects may share it
        (python-redis-lock's way to release elsewhere), possibly with another ``expire``: then
        ``LOCK.OWNER`` is asked first and nothing changes."""
        return not self._id_is_own

    def _acquire_args(self, blocking, timeout):
        """``LOCK.ACQUIRE``: one call that waits, first come first served, ``timeout`` seconds at
        most (``BLOCK 0``: no limit, as python-redis-lock's ``timeout=None`` or ``0``)."""
        args = ['LOCK.ACQUIRE', self.name, self._id, self._expire or NO_EXPIRY_SECONDS]
        if blocking:
            args += ['BLOCK', (timeout or 0) * 1000]
        if self._fence:
            args.append('FENCE')
        if self._bind:
            args.append('BIND')
        return args

    def _release_args(self):
        return ['LOCK.RELEASE', self.name, self._id]

    def _owner_args(self):
        return ['LOCK.OWNER', self.name]

    def _info_args(self):
        return ['LOCK.INFO', self.name]

    def _renew_args(self, expire):
        return ['LOCK.RENEW', self.name, self._id, expire]

    def _reset_args(self):
        # A foreign DEL frees the lock: the module hands it to its first waiter, or signals
        # python-redis-lock's waiters, as python-redis-lock's reset script would.
        return ['DEL', self._name]

    def _check_needs(self, loaded):
        """Raise :class:`ModuleRequired` when an option needs the module and it is not loaded."""
        if not loaded:
            if self._fence:
                raise module_required('Lock(fence=True)')
            if self._bind:
                raise module_required('Lock(bind=True)')

    # --- python-redis-lock's protocol (no module): keys, arguments, script replies -------------

    def _script_keys(self):
        return (self._name, self._signal)

    def _plain_extended(self, error):
        if error == 1:
            raise NotAcquired(f'Lock {self._name} is not acquired or it already expired.')
        elif error == 2:
            raise NotExpirable(f'Lock {self._name} has no assigned expiration time')
        elif error:
            raise RuntimeError(f'Unsupported error code {error} from EXTEND script')

    def _plain_released(self, error):
        if error == 1:
            raise NotAcquired(f'Lock({self._name}) is not acquired or it already expired.')
        elif error:
            raise RuntimeError(f'Unsupported error code {error} from EXTEND script.')

    # --- the replies ------------------------------------------------------------------------

    def _is_mine(self, owner):
        if isinstance(owner, bytes):
            return owner == self._id.encode('utf-8')
        return owner == self._id

    def _took(self, reply):
        """``LOCK.ACQUIRE``'s reply: ``True`` when taken (the fence kept when asked for)."""
        if reply is None:
            return False
        self.fence = int(reply) if self._fence else None
        return True

    def _check_renewable(self, info):
        """Raise what python-redis-lock's extend script would for ``LOCK.INFO``'s reply."""
        fields = info_fields(info)
        if not self._is_mine(fields.get('owner')):
            raise NotAcquired(f'Lock {self._name} is not acquired or it already expired.')
        ttl = int(fields.get('ttl', -2))
        if ttl == -1 or ttl > NOT_EXPIRABLE_ABOVE_MS:
            raise NotExpirable(f'Lock {self._name} has no assigned expiration time')

    def _released(self, reply):
        if not reply:
            raise NotAcquired(f'Lock({self._name}) is not acquired or it already expired.')

    def _renewed(self, reply):
        if not reply:
            raise NotAcquired(f'Lock {self._name} is not acquired or it already expired.')

    @staticmethod
    def _owner_text(owner):
        if isinstance(owner, bytes):
            owner = owner.decode('ascii', 'replace')
        return owner

    def _not_entered(self):
        if self.blocking:
            return AssertionError(f"Lock({self._name}) wasn't acquired, but blocking=True was used!")
        return NotAcquired(f'Lock({self._name}) is not acquired or it already expired.')

    def __repr__(self):
        return f'<{type(self).__module__}.{type(self).__name__} {self.name!r} id={self._id!r}>'
