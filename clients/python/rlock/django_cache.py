"""python-redis-lock's Django cache backend (``redis_lock.django_cache.RedisCache``) with
:class:`rlock.Lock`: ``CACHES = {"default": {"BACKEND": "rlock.django_cache.RedisCache", ...}}``.
Needs django-redis (``pip install ./clients/python[django]``)."""

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django_redis.cache import RedisCache as PlainRedisCache

from . import Lock
from . import reset_all


class RedisCache(PlainRedisCache):
    @property
    def __client(self):
        try:
            return self.client.get_client()
        except Exception as exc:
            raise NotImplementedError(
                f"RedisCache doesn't have a raw client: {exc}. Use 'redis_cache.client.DefaultClient' as the CLIENT_CLASS !"
            )

    def lock(self, key, expire=None, id=None, auto_renewal=False, **options):
        """An :class:`rlock.Lock` on the cache's client; ``options``: ``bind``, ``fence``."""
        return Lock(self.__client, key, expire=expire, id=id, auto_renewal=auto_renewal, **options)

    def locked_get_or_set(self, key, value_creator, version=None, expire=None, id=None, lock_key=None, timeout=DEFAULT_TIMEOUT):
        """The cached value of ``key``; on a miss ``value_creator()`` runs under the lock
        ``get_or_set:<key>``, once, while the other callers wait for it (python-redis-lock's
        recipe)."""
        if lock_key is None:
            lock_key = 'get_or_set:' + key

        val = self.get(key, version=version)
        if val is not None:
            return val

        with self.lock(lock_key, expire=expire, id=id):
            # Was the value set while we were waiting for the lock?
            val = self.get(key, version=version)
            if val is not None:
                return val

            val = value_creator()
            if val is None:
                raise ValueError('`value_creator` must return a value')

            self.set(key, val, timeout=timeout, version=version)
            return val

    def reset_all(self):
        """Forcibly delete every lock (``LOCK.RESETALL``). Use this with care."""
        reset_all(self.__client)
