"""Fixtures for the python-redis-lock interop suite.

A real ``redis-server`` is started with the rlock module loaded, listening only on a unix socket in a
private temporary directory. The module is taken from ``$RLOCK_MODULE`` or else
``<repo>/target/release/librlock.so``; the server binary from ``$REDIS_SERVER`` or else
``redis-server`` on ``PATH``. If either is missing the suite fails loudly (it never skips), so CI
cannot pass without actually testing the module.
"""

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from helpers import free_blocked
from redis.backoff import NoBackoff
from redis.retry import Retry

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0  # seconds for redis-server to answer PING
CLEANUP_TIMEOUT = 15.0  # seconds for a test's leftover threads to be freed


def _module_path():
    env = os.environ.get("RLOCK_MODULE")
    path = Path(env) if env else REPO / "target" / "release" / "librlock.so"
    if not path.is_file():
        how = "RLOCK_MODULE points to" if env else "RLOCK_MODULE is unset and there is no"
        pytest.fail(
            f"rlock module not found: {how} {path}. Build it with `cargo build --release` "
            "or set RLOCK_MODULE to the .so to test.",
            pytrace=False,
        )
    return path


def _server_binary():
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail(
            f"redis-server not found (REDIS_SERVER={os.environ.get('REDIS_SERVER')!r}, PATH lookup failed)",
            pytrace=False,
        )
    return binary


class RedisServer:
    """One redis-server process with the module loaded, on a unix socket in a temp dir."""

    def __init__(self, binary, module, protocol, socket=None):
        """``module=None``: a server without the module (rlock's client then speaks
        python-redis-lock's protocol); ``socket``: listen there instead of in the temp dir."""
        self.protocol = protocol
        self.module = module
        self.dir = tempfile.mkdtemp(prefix="rlock-pytest-")
        self.socket = socket or os.path.join(self.dir, "redis.sock")
        self.logfile = os.path.join(self.dir, "redis.log")
        self.console = os.path.join(self.dir, "console.log")
        args = [
            binary,
            "--port", "0",
            "--unixsocket", self.socket,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--logfile", self.logfile,
        ] + (["--loadmodule", str(module)] if module is not None else [])
        with open(self.console, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def client(self, socket_timeout=None):
        """A client with settings pinned rather than left to redis-py's version-dependent defaults:
        RESP version from the fixture's parameter, no socket timeout by default (redis-py 8 would
        cut a 10 s blocking call after 5 s), and no silent retries (a retried blocking command
        would re-queue the waiter and hide what really happened)."""
        return redis.Redis(
            unix_socket_path=self.socket,
            protocol=self.protocol,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, lines=30):
        """The end of the server's output; for a crash, the start of its bug report instead."""
        parts = []
        for path in (self.console, self.logfile):
            try:
                with open(path, errors="replace") as f:
                    text = f.read().splitlines()
            except OSError:
                continue
            crash = next(
                (i for i, line in enumerate(text)
                 if "BUG REPORT START" in line or "ASSERTION FAILED" in line or "crashed by signal" in line),
                None,
            )
            shown = text[max(crash - 5, 0):crash + lines] if crash is not None else text[-lines:]
            if shown:
                parts.append(f"--- {os.path.basename(path)} ---\n" + "\n".join(shown))
        return "\n".join(parts) or "(no server output)"

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        probe = self.client(socket_timeout=1)
        try:
            while True:
                if not self.alive():
                    raise RuntimeError(f"redis-server exited with status {self.proc.returncode}")
                try:
                    if probe.ping():
                        break
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT} s")
                time.sleep(0.01)
            if self.module is None:
                return
            try:
                probe.execute_command("LOCK.OWNER", "rlock-pytest-probe")
            except redis.ResponseError as exc:
                raise RuntimeError(f"the server runs but LOCK.OWNER fails ({exc}): module not loaded?") from exc
        finally:
            probe.close()

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module", params=[2, 3], ids=["resp2", "resp3"])
def redis_server(request):
    """One server per test module and RESP version; every test runs with both RESP2 and RESP3
    clients (RESP3 is redis-py 8's default, RESP2 that of older redis-py and most other clients)."""
    server = RedisServer(_server_binary(), _module_path(), request.param)
    try:
        server.wait_ready()
    except Exception as exc:
        log = server.log_tail()
        server.stop()
        pytest.fail(f"could not start redis-server with the rlock module: {exc!r}\n{log}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def start_server(module, protocol, socket=None):
    """A running server (``module``: the .so to load, or None), or the test fails."""
    server = RedisServer(_server_binary(), module, protocol, socket)
    try:
        server.wait_ready()
    except Exception as exc:
        log = server.log_tail()
        server.stop()
        pytest.fail(f"could not start redis-server (module {module}): {exc!r}\n{log}", pytrace=False)
    return server


@pytest.fixture(scope="module", params=[(True, 2), (True, 3), (False, 2), (False, 3)],
                ids=["module-resp2", "module-resp3", "plain-resp2", "plain-resp3"])
def any_server(request):
    """Both kinds of server, each with RESP2 and RESP3 clients: with the module, and without it
    (``any_server.module`` is None there), as on a managed service."""
    with_module, protocol = request.param
    server = start_server(_module_path() if with_module else None, protocol)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def r(redis_server):
    """A client on an empty database (FLUSHALL before each test); checks the server survived."""
    if not redis_server.alive():
        pytest.fail(f"redis-server died before this test\n{redis_server.log_tail()}", pytrace=False)
    client = redis_server.client(socket_timeout=10)  # never blocks; a hung server fails the test
    client.flushall()
    yield client
    client.close()
    if not redis_server.alive():
        pytest.fail(f"redis-server died during this test\n{redis_server.log_tail()}", pytrace=False)


@pytest.fixture
def new_client(redis_server):
    """Factory for extra clients (one per thread that blocks); all are closed after the test."""
    made = []

    def make():
        client = redis_server.client()
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def spawn(r, new_client):
    """Run a function in a worker thread and get a Future.

    After the test, threads still blocked (because the test failed early) are released with
    FLUSHALL + CLIENT UNBLOCK so that a failure never hangs the suite.
    """
    pool = ThreadPoolExecutor(max_workers=16)
    futures = []

    def submit(fn, *args, **kwargs):
        future = pool.submit(fn, *args, **kwargs)
        futures.append(future)
        return future

    yield submit
    deadline = time.monotonic() + CLEANUP_TIMEOUT
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        free_blocked(r)
        time.sleep(0.02)
    pool.shutdown(wait=False, cancel_futures=True)
