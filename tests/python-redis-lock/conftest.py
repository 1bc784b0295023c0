"""Replaces python-redis-lock 4.0.1's tests/conftest.py when its suite runs against rlock
(scripts/prl-suite.sh). Theirs starts a bare ``redis-server`` from PATH for every test; this one
starts the same server (``--port 0 --save '' --appendonly yes`` on a unix socket in the test's
tmp dir) with the rlock module loaded, from ``$REDIS_SERVER`` (else PATH) and ``$RLOCK_MODULE``;
with ``RLOCK_PRL_NO_MODULE=1`` (``scripts/prl-suite.sh --no-module``) without it, as theirs: then
rlock's client speaks python-redis-lock's own protocol.
The fixtures keep their names and meaning: ``redis_socket`` (the socket's path) and
``redis_server`` (the running server). The server is stopped at once after the test (theirs,
a ``process_tests.TestProcess``, first waits a second for it to exit by itself)."""

import os
import shutil
import subprocess
import time

import pytest
import redis


@pytest.fixture
def redis_socket(tmp_path):
    return str(tmp_path.joinpath('redis.sock'))


@pytest.fixture
def redis_server(tmp_path, redis_socket):
    binary = os.environ.get('REDIS_SERVER') or shutil.which('redis-server')
    module = os.environ.get('RLOCK_MODULE')
    no_module = os.environ.get('RLOCK_PRL_NO_MODULE') == '1'
    if not binary or (not no_module and (not module or not os.path.isfile(module))):
        pytest.fail(f'need REDIS_SERVER (or redis-server on PATH) and RLOCK_MODULE: {binary!r}, {module!r}', pytrace=False)
    log = tmp_path / 'redis.log'
    with open(log, 'wb') as out:
        proc = subprocess.Popen(
            [binary, '--port', '0', '--save', '', '--appendonly', 'yes', '--dir', str(tmp_path),
             '--unixsocket', redis_socket] + ([] if no_module else ['--loadmodule', module]),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f'redis-server exited ({proc.returncode}):\n{log.read_text(errors="replace")}', pytrace=False)
            try:
                with redis.Redis(unix_socket_path=redis_socket, socket_timeout=1) as probe:
                    if no_module:
                        probe.ping()
                    else:
                        probe.execute_command('LOCK.OWNER', 'probe')
                break
            except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
                if time.monotonic() > deadline:
                    pytest.fail(f'redis-server did not answer within 10 s:\n{log.read_text(errors="replace")}', pytrace=False)
                time.sleep(0.01)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
