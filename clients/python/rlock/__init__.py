"""rlock: python-redis-lock's interface over the rlock Redis module.

Moving over is one line::

    import rlock as redis_lock        # was: import redis_lock

    with redis_lock.Lock(conn, "orders", expire=60):
        ...

``Lock`` has python-redis-lock's arguments, methods, exceptions and logging, and speaks the
module's ``LOCK.*`` commands: a blocking ``acquire()`` is one ``LOCK.ACQUIRE ... BLOCK`` call,
first come first served, the token is checked in the server, ``bind=True`` ties the lock to the
connection, ``fence=True`` gives a fencing number. python-redis-lock clients on the same server
share the same locks. ``rlock.asyncio.Lock`` is the same for ``redis.asyncio``;
``rlock.django_cache.RedisCache`` is python-redis-lock's Django cache backend on this ``Lock``.

Where the module is not loaded (managed services), ``Lock``, ``reset_all``, the Django backend
and ``cached`` speak python-redis-lock 4.0's own protocol on the same keys instead (``SET NX``, its
Lua scripts, its signal list): decided once per connection pool with one ``LOCK.OWNER`` probe,
probed again after a connection error. ``fence``, ``bind`` and ``Redlock`` need the module and
raise :class:`ModuleRequired` there.

Beyond python-redis-lock: ``rlock.Redlock`` (one lock over N independent rlock servers, held on a
majority) and ``rlock.cached`` (get-or-compute with one computation per missing value).
"""

from ._base import NO_EXPIRY_SECONDS
from ._base import AlreadyAcquired
from ._base import AlreadyStarted
from ._base import InvalidTimeout
from ._base import ModuleRequired
from ._base import NotAcquired
from ._base import NotExpirable
from ._base import TimeoutNotUsable
from ._base import TimeoutTooLarge
from .cache import cached
from .lock import Lock
from .lock import reset_all
from .redlock import Acquired
from .redlock import Redlock
from .redlock import RedlockError

__version__ = '0.1.0'

__all__ = [
    'Lock',
    'reset_all',
    'Redlock',
    'RedlockError',
    'Acquired',
    'cached',
    'NO_EXPIRY_SECONDS',
    'AlreadyAcquired',
    'AlreadyStarted',
    'InvalidTimeout',
    'ModuleRequired',
    'NotAcquired',
    'NotExpirable',
    'TimeoutNotUsable',
    'TimeoutTooLarge',
]
