"""rlock in a real Redis Cluster: three masters on loopback, each with the module loaded.

What a cluster user relies on, checked end to end with redis-py's ``RedisCluster``:

* routing: redis-py learns from ``COMMAND`` that LOCK.* take their key (the lock name) at
  argument 1 and sends each call straight to the node owning the name's slot -- no ``MOVED``
  detour (each node's ``rejected_calls`` stays 0) -- and the lock's keys land on that node;
  locks on ~60 hashtags spread over all three masters and acquire / owner / renew / release work;
* a waiter blocked with ``LOCK.ACQUIRE ... BLOCK`` blocks on the node owning the lock and is
  woken by the release there;
* a name without a usable hashtag is refused (the error says so) and nothing is written;
* python-redis-lock on the same cluster with hashtag names interoperates both ways: its release
  wakes a module waiter and a module release wakes its waiter.

The cluster is built once for the file: ``redis-server --cluster-enabled yes`` x3 on OS-assigned
free ports (bus port = port + 10000, both checked free), ``redis-cli --cluster create``, then
wait until every node reports ``cluster_state:ok`` and the same slot map. Servers are killed on
teardown. Nothing waits by sleeping: every wait polls a condition with a deadline.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest
import redis
import redis_lock
from redis.cluster import RedisCluster
from helpers import free_blocked

import rlock

REPO = Path(__file__).resolve().parents[2]
NODES = 3
START_TIMEOUT = 10.0  # s for a node to answer PING
CLUSTER_TIMEOUT = 30.0  # s for cluster_state:ok with one slot map on every node
BLOCKED_TIMEOUT = 5.0  # s for a blocking call to show up in blocked_clients
WAKE = 2.0  # s within which a waiter must get a freed lock
SLOTS = 16384


# --- locating binaries ----------------------------------------------------------------------

def _module_path():
    env = os.environ.get("RLOCK_MODULE")
    path = Path(env) if env else REPO / "target" / "release" / "librlock.so"
    if not path.is_file():
        pytest.fail(f"rlock module not found at {path} (build it, or set RLOCK_MODULE)", pytrace=False)
    return path.resolve()


def _binary(name, env):
    found = os.environ.get(env) or shutil.which(name)
    if not found and os.environ.get("REDIS_SERVER"):
        sibling = Path(os.environ["REDIS_SERVER"]).with_name(name)
        found = str(sibling) if sibling.exists() else None
    if not found or not os.access(found, os.X_OK):
        pytest.fail(f"{name} not found (set {env} or put it on PATH)", pytrace=False)
    return found


# --- ports ----------------------------------------------------------------------------------

def _can_bind(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count):
    """`count` client ports p (< 55535) whose bus ports p + 10000 are free too; all distinct."""
    chosen, used = [], set()
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 55535 or {port, port + 10000} & used:
            continue
        if not (_can_bind(port) and _can_bind(port + 10000)):
            continue
        chosen.append(port)
        used |= {port, port + 10000}
        if len(chosen) == count:
            return chosen
    raise RuntimeError("could not find free port pairs for the cluster")


# --- the cluster ----------------------------------------------------------------------------

def _deadline_poll(what, timeout, check, interval=0.01):
    """Poll `check()` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached within {timeout} s (last error: {last!r})")
        time.sleep(interval)


class Node:
    def __init__(self, binary, module, port, base):
        self.port = port
        self.dir = os.path.join(base, str(port))
        os.makedirs(self.dir)
        self.logfile = os.path.join(self.dir, "redis.log")
        args = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", os.path.join(self.dir, "nodes.conf"),
            "--cluster-node-timeout", "5000",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--logfile", self.logfile,
        ] + (["--loadmodule", str(module)] if module is not None else [])
        with open(os.path.join(self.dir, "console.log"), "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def client(self, socket_timeout=10):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=socket_timeout)

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, lines=25):
        try:
            with open(self.logfile, errors="replace") as f:
                return f"--- node {self.port} ---\n" + "\n".join(f.read().splitlines()[-lines:])
        except OSError:
            return f"--- node {self.port}: no log ---"

    def stop(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)


def _cluster_info(client):
    raw = client.execute_command("CLUSTER", "INFO")
    if isinstance(raw, dict):
        return {text(k): text(v) for k, v in raw.items()}
    return dict(line.split(":", 1) for line in text(raw).splitlines() if ":" in line)


class Cluster:
    def __init__(self, base):
        self.base = base
        self.nodes = []
        self.direct = {}  # port -> plain redis.Redis on that node

    def start(self, server, cli, module):
        self.nodes = [Node(server, module, port, self.base) for port in _free_ports(NODES)]
        for node in self.nodes:
            probe = node.client(socket_timeout=1)

            def ping():
                if not node.alive():
                    raise RuntimeError(f"node {node.port} exited with status {node.proc.returncode}")
                return probe.ping()

            try:
                _deadline_poll(f"PING on {node.port}", START_TIMEOUT, ping)
                modules = [text(m[b"name"] if b"name" in m else m["name"]) for m in probe.module_list()]
                if module is not None and "rlock" not in modules:
                    raise RuntimeError(f"node {node.port} runs without the rlock module: {modules}")
            finally:
                probe.close()
        create = subprocess.run(
            [cli, "--cluster", "create", *[n.addr for n in self.nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
        self.direct = {n.port: n.client() for n in self.nodes}
        _deadline_poll("cluster_state:ok and one slot map on every node", CLUSTER_TIMEOUT, self._converged)

    def _slot_map(self, client):
        owners = {}
        for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            port = master[1]
            for slot in range(start, end + 1):
                owners[slot] = port
        return owners

    def _converged(self):
        maps = []
        for node in self.nodes:
            info = _cluster_info(self.direct[node.port])
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != NODES:
                return False
            maps.append(self._slot_map(self.direct[node.port]))
        return len(maps[0]) == SLOTS and all(m == maps[0] for m in maps)

    def owner_port(self, slot):
        """The port of the master owning `slot`, from the server's own CLUSTER SLOTS."""
        return self._slot_map(self.direct[self.nodes[0].port])[slot]

    def stop(self):
        for client in self.direct.values():
            client.close()
        for node in self.nodes:
            node.stop()

    def logs(self):
        return "\n".join(n.log_tail() for n in self.nodes)


def _start_cluster(module):
    server = _binary("redis-server", "REDIS_SERVER")
    cli = _binary("redis-cli", "REDIS_CLI")
    base = tempfile.mkdtemp(prefix="rlock-cluster-")
    cl = None
    try:
        error = None
        for _attempt in range(3):  # a port taken between the check and the bind: new ports
            cl = Cluster(tempfile.mkdtemp(dir=base))
            try:
                cl.start(server, cli, module)
                error = None
                break
            except Exception as exc:  # noqa: BLE001 - reported below with the logs
                error = f"{exc!r}\n{cl.logs()}"
                cl.stop()
                cl = None
        if error:
            pytest.fail(f"could not start a 3-node cluster (module {module}): {error}", pytrace=False)
        yield cl
    finally:
        if cl is not None:
            cl.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    yield from _start_cluster(_module_path())


def _cluster_client(cluster, **kwargs):
    first = cluster.nodes[0]
    return RedisCluster(host="127.0.0.1", port=first.port, **kwargs)


def _free_blocked(cluster):
    """Make every blocked client return (used after a test so that a failure never hangs)."""
    for client in cluster.direct.values():
        free_blocked(client)


@pytest.fixture
def rc(cluster):
    """A RedisCluster client on empty nodes with reset command statistics."""
    for node in cluster.nodes:
        if not node.alive():
            pytest.fail(f"node {node.port} died before this test\n{cluster.logs()}", pytrace=False)
        cluster.direct[node.port].flushall()
        cluster.direct[node.port].config_resetstat()
    client = _cluster_client(cluster, socket_timeout=10)
    yield client
    client.close()
    dead = [n.port for n in cluster.nodes if not n.alive()]
    if dead:
        pytest.fail(f"node(s) {dead} died during this test\n{cluster.logs()}", pytrace=False)


@pytest.fixture
def spawn(cluster, rc):
    """Run blocking calls in threads; leftovers are freed after the test (FLUSHALL + UNBLOCK)."""
    pool = ThreadPoolExecutor(max_workers=4)
    futures = []

    def submit(fn, *args):
        future = pool.submit(fn, *args)
        futures.append(future)
        return future

    yield submit
    deadline = time.monotonic() + 15
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        _free_blocked(cluster)
        time.sleep(0.02)
    pool.shutdown(wait=False, cancel_futures=True)


# --- helpers --------------------------------------------------------------------------------

def text(value):
    return value.decode() if isinstance(value, bytes) else value


def lock_keys(client):
    return sorted(text(k) for k in client.scan_iter(match="lock:*", count=1000))


def blocked_per_node(cluster):
    return {p: c.info("clients")["blocked_clients"] for p, c in cluster.direct.items()}


def wait_blocked(cluster, port, what):
    """Wait until exactly one client is blocked on `port` and none elsewhere."""
    want = {p: (1 if p == port else 0) for p in cluster.direct}
    deadline = time.monotonic() + BLOCKED_TIMEOUT
    while True:
        now = blocked_per_node(cluster)
        if now == want:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: blocked_clients per node {now}, expected {want}")
        time.sleep(0.005)


def result_within(future, seconds, what):
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        pytest.fail(f"{what}: no result within {seconds} s")


def command_stats(client, command):
    """(calls, rejected_calls) of `command` on one node; (0, 0) if never called."""
    for key, value in client.info("commandstats").items():
        if key.lower() == f"cmdstat_{command.lower()}":
            return int(value["calls"]), int(value.get("rejected_calls", 0))
    return 0, 0


def name_on(rc, cluster, port, prefix):
    """A hashtag name whose slot is owned by the node on `port`."""
    for i in range(10_000):
        name = f"{{{prefix}{i}}}"
        if cluster.owner_port(rc.keyslot(name)) == port:
            return name
    raise AssertionError(f"no name for node {port}")


# --- tests ----------------------------------------------------------------------------------

def test_locks_spread_over_all_masters_and_route_directly(cluster, rc):
    names = [f"{{h{i}}}" for i in range(60)]
    tokens = {n: uuid.uuid4().hex for n in names}
    expected = {n.port: set() for n in cluster.nodes}
    for name in names:
        slot = rc.keyslot(name)
        # redis-py must route by the name (argument 1, from COMMAND's key positions) to the owner.
        assert rc.determine_slot("LOCK.ACQUIRE", name, "t", 10) == slot
        port = cluster.owner_port(slot)
        assert rc.get_node_from_key(name).port == port
        expected[port].add(f"lock:{name}")

    for name in names:
        assert text(rc.execute_command("LOCK.ACQUIRE", name, tokens[name], 30)) == "OK"
        assert rc.execute_command("LOCK.ACQUIRE", name, "other", 30) is None  # held: nil at once

    # Every master holds some of the locks, each exactly the ones in its slots, with the token.
    for port, client in cluster.direct.items():
        held = set(lock_keys(client))
        assert held, f"node {port} holds no lock:* key; the names were not spread"
        assert held == expected[port], f"node {port}"
        for key in held:
            assert text(client.get(key)) == tokens[key[len("lock:"):]]
    assert sum(len(v) for v in expected.values()) == len(names)

    for name in names:
        assert text(rc.execute_command("LOCK.OWNER", name)) == tokens[name]
        assert rc.execute_command("LOCK.RENEW", name, "other", 100) == 0
        assert rc.execute_command("LOCK.RENEW", name, tokens[name], 100) == 1
        port = cluster.owner_port(rc.keyslot(name))
        assert 90_000 < cluster.direct[port].pttl(f"lock:{name}") <= 100_000
        assert rc.execute_command("LOCK.RELEASE", name, "other") == 0
        assert text(rc.execute_command("LOCK.OWNER", name)) == tokens[name]
        assert rc.execute_command("LOCK.RELEASE", name, tokens[name]) == 1
        assert rc.execute_command("LOCK.OWNER", name) is None
        assert rc.execute_command("LOCK.RELEASE", name, tokens[name]) == 0

    for port, client in cluster.direct.items():
        assert lock_keys(client) == [], f"node {port} still holds locks after release"
        # Every LOCK.ACQUIRE reached its slot's owner directly: no MOVED (rejected) calls.
        calls, rejected = command_stats(client, "LOCK.ACQUIRE")
        assert (calls, rejected) == (2 * len(expected[port]), 0), f"node {port}"
        for cmd in ("LOCK.OWNER", "LOCK.RELEASE", "LOCK.RENEW"):
            assert command_stats(client, cmd)[1] == 0, f"{cmd} was redirected on node {port}"


def test_wrong_node_answers_moved(cluster, rc):
    name = "{orders}"
    owner = cluster.owner_port(rc.keyslot(name))
    wrong = next(p for p in cluster.direct if p != owner)
    with pytest.raises(redis.ResponseError, match=rf"^MOVED {rc.keyslot(name)} 127\.0\.0\.1:{owner}$"):
        cluster.direct[wrong].execute_command("LOCK.ACQUIRE", name, "t", 10)
    assert all(c.dbsize() == 0 for c in cluster.direct.values())


def test_blocked_waiter_woken_by_release_on_its_node(cluster, rc, spawn):
    for node in cluster.nodes:  # one waiter per master, one at a time
        name = name_on(rc, cluster, node.port, "wake")
        assert text(rc.execute_command("LOCK.ACQUIRE", name, "holder", 60)) == "OK"
        waiter = _cluster_client(cluster, socket_timeout=None, cluster_error_retry_attempts=0)
        try:
            def block():
                reply = waiter.execute_command("LOCK.ACQUIRE", name, "w", 60, "BLOCK", 10000)
                return text(reply), time.monotonic()

            future = spawn(block)
            wait_blocked(cluster, node.port, f"waiter on {name}")
            assert not future.done()
            released = time.monotonic()
            assert rc.execute_command("LOCK.RELEASE", name, "holder") == 1
            reply, at = result_within(future, WAKE, f"waiter on node {node.port}")
            assert reply == "OK"
            assert at - released < WAKE
            assert text(rc.execute_command("LOCK.OWNER", name)) == "w"
            assert text(cluster.direct[node.port].get(f"lock:{name}")) == "w"
            assert 55_000 < cluster.direct[node.port].pttl(f"lock:{name}") <= 60_000
            assert blocked_per_node(cluster) == {p: 0 for p in cluster.direct}
            assert rc.execute_command("LOCK.RELEASE", name, "w") == 1
        finally:
            waiter.close()


@pytest.mark.parametrize("name", ["nohashtag", "{}x", "x{}", "{unclosed"])
def test_name_without_hashtag_refused(cluster, rc, name):
    calls = [
        ("LOCK.ACQUIRE", name, "t", 10),
        ("LOCK.ACQUIRE", name, "t", 10, "BLOCK", 100),  # refused at once, never blocks
        ("LOCK.RELEASE", name, "t"),
        ("LOCK.RENEW", name, "t", 10),
    ]
    for call in calls:
        # An error reply (not nil after 100 ms) also shows that the BLOCK form never waited.
        with pytest.raises(redis.ResponseError, match="hashtag"):
            rc.execute_command(*call)
    for port, client in cluster.direct.items():
        assert client.dbsize() == 0, f"node {port} got keys: {client.keys('*')}"
        assert command_stats(client, "LOCK.ACQUIRE")[1] == 0  # refused by the owner, not MOVED
    assert blocked_per_node(cluster) == {p: 0 for p in cluster.direct}


def test_python_redis_lock_release_wakes_module_waiter(cluster, rc, spawn):
    name = "{job}"
    port = cluster.owner_port(rc.keyslot(name))
    py = redis_lock.Lock(rc, name, id="py-holder", expire=60, strict=False)
    assert py.acquire(blocking=False)
    assert text(rc.execute_command("LOCK.OWNER", name)) == "py-holder"
    assert text(cluster.direct[port].get(f"lock:{name}")) == "py-holder"

    waiter = _cluster_client(cluster, socket_timeout=None, cluster_error_retry_attempts=0)
    try:
        future = spawn(lambda: text(waiter.execute_command("LOCK.ACQUIRE", name, "mod", 30, "BLOCK", 10000)))
        wait_blocked(cluster, port, "module waiter")
        py.release()
        assert result_within(future, WAKE, "module waiter after python release") == "OK"
        assert py.get_owner_id() in ("mod", b"mod")
        assert not redis_lock.Lock(rc, name, id="py2", expire=5, strict=False).acquire(blocking=False)
        assert rc.execute_command("LOCK.RELEASE", name, "mod") == 1
        assert not py.locked()
    finally:
        waiter.close()


def test_module_release_wakes_python_waiter(cluster, rc, spawn):
    name = "{job}"
    port = cluster.owner_port(rc.keyslot(name))
    assert text(rc.execute_command("LOCK.ACQUIRE", name, "mod", 60)) == "OK"

    waiter_client = _cluster_client(cluster, socket_timeout=None, cluster_error_retry_attempts=0)
    try:
        waiter = redis_lock.Lock(waiter_client, name, id="py-waiter", expire=30, strict=False)

        def block():
            got = waiter.acquire(blocking=True, timeout=10)
            return got, time.monotonic()

        future = spawn(block)
        wait_blocked(cluster, port, "python waiter (BLPOP lock-signal)")
        released = time.monotonic()
        assert rc.execute_command("LOCK.RELEASE", name, "mod") == 1
        got, at = result_within(future, WAKE, "python waiter after LOCK.RELEASE")
        assert got is True
        assert at - released < WAKE
        assert text(rc.execute_command("LOCK.OWNER", name)) == "py-waiter"
        assert rc.execute_command("LOCK.RELEASE", name, "mod") == 0
        waiter.release()
        assert rc.execute_command("LOCK.OWNER", name) is None
    finally:
        waiter_client.close()


# --- a cluster without the module ---------------------------------------------------------------


def test_without_the_module_rlock_speaks_python_redis_lock_s_protocol_in_a_cluster():
    """On a cluster without the module (a managed cluster), redis-py's cluster client refuses
    the probe itself (LOCK.OWNER is not in the servers' COMMAND): rlock then speaks
    python-redis-lock's protocol, which in a cluster needs the name in a {hashtag}, as
    python-redis-lock does (its scripts touch lock:<name> and lock-signal:<name>)."""
    gen = _start_cluster(None)
    cl = next(gen)
    try:
        client = _cluster_client(cl, socket_timeout=10)
        try:
            theirs = redis_lock.Lock(client, "{orders}", expire=60, strict=False)
            assert theirs.acquire()
            ours = rlock.Lock(client, "{orders}", expire=60, strict=False)
            assert ours.acquire(blocking=False) is False
            theirs.release()
            assert ours.acquire(blocking=False) is True
            assert text(client.get("lock:{orders}")) == ours.id
            ours.extend(30)
            with pytest.raises(rlock.ModuleRequired):
                rlock.Lock(client, "{f}", expire=60, fence=True, strict=False).acquire()
            ours.release()
            assert client.get("lock:{orders}") is None
        finally:
            client.close()
    finally:
        gen.close()
