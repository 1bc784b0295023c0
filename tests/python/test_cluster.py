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
  wakes a module waiter and a module release wakes its waiter;
* resharding (CLUSTER SETSLOT + MIGRATE by hand, and ``redis-cli --cluster reshard`` under lock
  traffic): a lock held and awaited while its slot moves stays exclusive, every waiter gets one
  answer (-TRYAGAIN sends it to the lock's new node), the migration completes, the holder's
  release works after the move; a lease ending on the migrating source is not granted there; a
  fence counter that moved ahead of its lock is never read as missing; waiters on a node that
  loses the slot without an event are answered; Valkey 9's atomic slot migration (CLUSTER
  MIGRATESLOTS) alike, by hand and under traffic.

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
import threading
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


# --- resharding -----------------------------------------------------------------------------
#
# A slot moves from a source node to a target: the target is set IMPORTING, the source
# MIGRATING, the slot's keys are MIGRATEd, and every node is told the slot's new owner. The
# server routes LOCK.* by lock:<name> (the module's filter puts it in front of the name), so a
# lock is served where it is: on the source while lock:<name> is there, on the target (by -ASK)
# once it has left. What must hold throughout: never two holders, exactly one answer for every
# waiter (a -TRYAGAIN that sends its client to the lock's new node is one), and the migration
# completing.


def node_id(cluster, port):
    return text(cluster.direct[port].execute_command("CLUSTER", "MYID"))


def other_port(cluster, port):
    return next(p for p in cluster.direct if p != port)


def open_slot(cluster, slot, source, target):
    """CLUSTER SETSLOT IMPORTING on the target, then MIGRATING on the source (as redis-cli)."""
    cluster.direct[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(cluster, source))
    cluster.direct[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(cluster, target))


def migrate_keys(cluster, slot, source, target):
    """MIGRATE every key of `slot` from source to target, as redis-cli does (no REPLACE)."""
    client = cluster.direct[source]
    moved = []
    while True:
        keys = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            return sorted(text(k) for k in moved)
        client.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        moved += keys


def close_slot(cluster, slot, target):
    """Every node: the slot is the target's now (target first, as redis-cli)."""
    owner = node_id(cluster, target)
    for port in sorted(cluster.direct, key=lambda p: p != target):
        cluster.direct[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)


def rlock_info(client):
    return {k[len("rlock_"):]: v for k, v in client.info("rlock").items()}


@pytest.fixture
def slots(cluster, rc):
    """Slots a test opens: closed on the target at teardown whatever happened (keys dropped)."""
    opened = []  # (slot, target)
    yield opened

    def closed():
        for client in cluster.direct.values():
            free_blocked(client)
        for slot, target in opened:
            close_slot(cluster, slot, target)
        return True

    _deadline_poll("slots closed", CLUSTER_TIMEOUT, closed)
    _deadline_poll("one slot map on every node", CLUSTER_TIMEOUT, cluster._converged)


class Waiter:
    """A blocking LOCK.ACQUIRE in a thread, through its own RedisCluster client (which follows
    -ASK, -MOVED and -TRYAGAIN): its final reply, or the error it raised."""

    def __init__(self, cluster, name, token, *options, block_ms=20000, ttl=60):
        self.client = _cluster_client(cluster, socket_timeout=None)
        self.args = ("LOCK.ACQUIRE", name, token, ttl, "BLOCK", block_ms, *options)
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.future = self.pool.submit(self._run)

    def _run(self):
        try:
            return text(self.client.execute_command(*self.args))
        finally:
            self.client.close()

    def result(self, seconds, what):
        return result_within(self.future, seconds, what)


def wait_blocked_on(cluster, want, what):
    """Wait until blocked_clients per node is `want` ({port: n}; others 0)."""
    want = {p: want.get(p, 0) for p in cluster.direct}
    deadline = time.monotonic() + BLOCKED_TIMEOUT
    while True:
        now = blocked_per_node(cluster)
        if now == want:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: blocked_clients per node {now}, expected {want}")
        time.sleep(0.005)


def test_reshard_by_hand_moves_a_held_and_awaited_lock(cluster, rc, slots):
    name = "{mig1}"
    slot = rc.keyslot(name)
    source = cluster.owner_port(slot)
    target = other_port(cluster, source)
    first = int(text(rc.execute_command("LOCK.ACQUIRE", name, "holder", 60, "FENCE")))
    assert first > 0
    redirected = rlock_info(cluster.direct[source]).get("waiters_redirected", 0)
    waiter = Waiter(cluster, name, "w1")
    wait_blocked_on(cluster, {source: 1}, "waiter on the source")

    open_slot(cluster, slot, source, target)
    slots.append((slot, target))
    # The lock is still on the source: served there. A rival gets nil (not -ASK to the
    # target, where it would find the lock free), the holder keeps it.
    assert cluster.direct[source].execute_command("LOCK.ACQUIRE", name, "rival", 60) is None
    assert rc.execute_command("LOCK.ACQUIRE", name, "rival", 60) is None
    assert text(rc.execute_command("LOCK.OWNER", name)) == "holder"
    assert rc.execute_command("LOCK.RENEW", name, "holder", 60) == 1
    assert cluster.direct[target].keys("*") == []

    # MIGRATE moves every key of the slot; nothing is in its way on the target.
    moved = migrate_keys(cluster, slot, source, target)
    assert moved == [f"lock-fence:{name}", f"lock:{name}"]
    assert cluster.direct[source].keys("*") == []
    # The waiter was answered -TRYAGAIN on the source (the lock left; not handed a lock that
    # is now the target's), retried, was sent on by -ASK, and now waits on the target.
    wait_blocked_on(cluster, {target: 1}, "waiter retried on the target")
    assert rlock_info(cluster.direct[source]).get("waiters_redirected", 0) == redirected + 1
    assert cluster.direct[source].keys("*") == []
    assert rc.execute_command("LOCK.ACQUIRE", name, "rival", 60) is None
    assert text(rc.execute_command("LOCK.OWNER", name)) == "holder"

    # The holder's release reaches the lock on the target and hands it to the waiter.
    assert rc.execute_command("LOCK.RELEASE", name, "holder") == 1
    assert waiter.result(WAKE, "waiter after the release on the target") == "OK"
    assert text(rc.execute_command("LOCK.OWNER", name)) == "w1"
    # The fence counter moved with the lock: the next fence is above the first.
    assert rc.execute_command("LOCK.RELEASE", name, "w1") == 1
    assert rc.execute_command("LOCK.ACQUIRE", name, "next", 60, "FENCE") > first

    close_slot(cluster, slot, target)
    slots.clear()
    _deadline_poll("one slot map on every node", CLUSTER_TIMEOUT, cluster._converged)
    assert cluster.owner_port(slot) == target
    assert text(rc.execute_command("LOCK.OWNER", name)) == "next"
    assert rc.execute_command("LOCK.RELEASE", name, "next") == 1
    assert blocked_per_node(cluster) == {p: 0 for p in cluster.direct}
    assert cluster.direct[source].keys("*") == []


def test_lock_expiring_on_a_migrating_source_is_not_granted_there(cluster, rc, slots):
    name = "{mig2}"
    slot = rc.keyslot(name)
    source = cluster.owner_port(slot)
    target = other_port(cluster, source)
    assert text(rc.execute_command("LOCK.ACQUIRE", name, "holder", 2)) == "OK"
    redirected = rlock_info(cluster.direct[source]).get("waiters_redirected", 0)
    waiter = Waiter(cluster, name, "w1", block_ms=10000)
    wait_blocked_on(cluster, {source: 1}, "waiter on the source")
    open_slot(cluster, slot, source, target)
    slots.append((slot, target))

    # The lease ends on the source while the slot migrates. Writing the lock there for the
    # waiter would make a second holder: a rival asking now is sent to the target (-ASK, the
    # lock is not on the source), where it would find the lock free. The waiter is answered
    # -TRYAGAIN instead, retries, is sent to the target and takes the lock there.
    assert text(cluster.direct[source].get(f"lock:{name}")) == "holder"  # still held: set up in time
    reply = waiter.result(6, "waiter after the holder's lease ended")
    assert reply == "OK"
    assert cluster.direct[source].keys("*") == []
    assert text(rc.execute_command("LOCK.OWNER", name)) == "w1"
    assert rc.execute_command("LOCK.ACQUIRE", name, "rival", 60) is None
    assert rlock_info(cluster.direct[source]).get("waiters_redirected", 0) == redirected + 1
    assert migrate_keys(cluster, slot, source, target) == []
    close_slot(cluster, slot, target)
    slots.clear()
    _deadline_poll("one slot map on every node", CLUSTER_TIMEOUT, cluster._converged)
    assert text(rc.execute_command("LOCK.OWNER", name)) == "w1"
    assert rc.execute_command("LOCK.RELEASE", name, "w1") == 1


def moving_slots_under_lock_traffic(cluster, rc, move):
    """`move(source, target, slots)` moves `slots` (a source's lowest) while four clients keep
    taking three locks in them (BLOCK), checking each grant against the others, and releasing
    them. Returns what `move` returned once the clients are done."""
    source = cluster.nodes[0].port
    target = cluster.nodes[1].port
    owned = sorted(s for s, p in cluster._slot_map(cluster.direct[source]).items() if p == source)
    count = 64
    moving = set(owned[:count])  # redis-cli takes a source's lowest slots first
    names = []
    for i in range(200_000):
        name = f"{{busy{i}}}"
        if rc.keyslot(name) in moving and rc.keyslot(name) not in {rc.keyslot(n) for n in names}:
            names.append(name)
            if len(names) == 3:
                break
    assert len(names) == 3

    holders = {}  # name -> token, as the clients see it
    guard = threading.Lock()
    violations, errors, grants = [], [], {}
    stop = threading.Event()

    def worker(index):
        client = _cluster_client(cluster, socket_timeout=None)
        token = f"t{index}"
        grants[token] = 0
        try:
            n = 0
            while not stop.is_set():
                name = names[n % len(names)]
                n += 1
                try:
                    reply = client.execute_command("LOCK.ACQUIRE", name, token, 30, "BLOCK", 3000)
                except (redis.ResponseError, redis.exceptions.ClusterError) as exc:
                    errors.append(repr(exc))  # e.g. TRYAGAIN retried until redis-py gave up
                    continue
                if reply is None:
                    continue
                with guard:
                    if holders.get(name) is not None:
                        violations.append((name, holders[name], token))
                    holders[name] = token
                grants[token] += 1
                owner_now = text(client.execute_command("LOCK.OWNER", name))
                if owner_now != token:
                    violations.append((name, "owner", owner_now, token))
                with guard:
                    holders[name] = None
                for _ in range(20):
                    try:
                        released = client.execute_command("LOCK.RELEASE", name, token)
                        break
                    except (redis.ResponseError, redis.exceptions.ClusterError) as exc:
                        errors.append(repr(exc))
                else:
                    released = None
                if released != 1:
                    violations.append((name, "release", released, token))
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        _deadline_poll("clients taking the locks", 10, lambda: all(grants.get(f"t{i}", 0) > 3 for i in range(4)))
        before = dict(grants)
        redirected = rlock_info(cluster.direct[source]).get("waiters_redirected", 0)
        moved = move(source, target, sorted(moving))
        during = {t: grants[t] - before[t] for t in grants}
        _deadline_poll("clients taking the moved locks", 10,
                       lambda: all(grants[t] - before[t] > during[t] + 3 for t in grants))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "a client never got its answer"
    assert violations == []
    _deadline_poll("one slot map on every node", CLUSTER_TIMEOUT, cluster._converged)
    for name in names:
        assert cluster.owner_port(rc.keyslot(name)) == target
        assert rc.execute_command("LOCK.OWNER", name) is None
    for port, client in cluster.direct.items():
        assert lock_keys(client) == [], f"node {port}"
    assert blocked_per_node(cluster) == {p: 0 for p in cluster.direct}
    redirected = rlock_info(cluster.direct[source]).get("waiters_redirected", 0) - redirected
    print(f"grants {grants}, during reshard {during}, waiters redirected {redirected}, "
          f"errors {len(errors)}: {errors[:5]}")
    return moved


def test_redis_cli_reshard_under_lock_traffic(cluster, rc):
    cli = _binary("redis-cli", "REDIS_CLI")

    def reshard(source, target, slots):
        return subprocess.run(
            [cli, "--cluster", "reshard", f"127.0.0.1:{source}",
             "--cluster-from", node_id(cluster, source), "--cluster-to", node_id(cluster, target),
             "--cluster-slots", str(len(slots)), "--cluster-yes"],
            capture_output=True, text=True, timeout=120,
        )

    done = moving_slots_under_lock_traffic(cluster, rc, reshard)
    assert done.returncode == 0, f"reshard failed:\n{done.stdout[-3000:]}\n{done.stderr}"


def test_fence_counter_moved_ahead_of_its_lock(cluster, rc, slots):
    """MIGRATE takes a slot's keys in any order: the fence counter may reach the target while
    the lock is still held on the source. No fence is then issued from a counter that is not
    there (it would repeat one): a fenced waiter is answered -TRYAGAIN, retries, and gets its
    fence where the counter is."""
    name = "{mig3}"
    slot = rc.keyslot(name)
    source = cluster.owner_port(slot)
    target = other_port(cluster, source)
    first = rc.execute_command("LOCK.ACQUIRE", name, "holder", 60, "FENCE")
    assert first > 0
    waiter = Waiter(cluster, name, "w1")
    wait_blocked_on(cluster, {source: 1}, "first waiter on the source")
    fenced = _cluster_client(cluster, socket_timeout=None)
    try:
        pool = ThreadPoolExecutor(max_workers=1)
        future = pool.submit(lambda: fenced.execute_command("LOCK.ACQUIRE", name, "w2", 60, "BLOCK", 20000, "FENCE"))
        wait_blocked_on(cluster, {source: 2}, "two waiters on the source")
        open_slot(cluster, slot, source, target)
        slots.append((slot, target))
        cluster.direct[source].execute_command("MIGRATE", "127.0.0.1", target, f"lock-fence:{name}", 0, 5000)
        # The holder's retry with FENCE would need the counter: try again later.
        with pytest.raises(redis.ResponseError, match="^TRYAGAIN"):
            cluster.direct[source].execute_command("LOCK.ACQUIRE", name, "holder", 60, "FENCE")
        keys_on_source = lambda: sorted(text(k) for k in cluster.direct[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10))
        assert keys_on_source() == [f"lock:{name}"]
        # The release hands the lock to the first waiter (no fence asked) on the source.
        assert rc.execute_command("LOCK.RELEASE", name, "holder") == 1
        assert waiter.result(WAKE, "unfenced waiter") == "OK"
        assert rc.execute_command("LOCK.RELEASE", name, "w1") == 1
        # Its release cannot give the fenced waiter a fence on the source: -TRYAGAIN, and
        # redis-py retries: -ASK to the target (the lock is free and has left the source),
        # where the counter is.
        assert result_within(future, WAKE, "fenced waiter") > first
        assert keys_on_source() == []
        assert text(rc.execute_command("LOCK.OWNER", name)) == "w2"
        assert rc.execute_command("LOCK.ACQUIRE", name, "rival", 60) is None
        assert rc.execute_command("LOCK.RELEASE", name, "w2") == 1
    finally:
        fenced.close()


def test_fenced_hand_over_on_the_importing_target_outside_a_command(cluster, rc, slots):
    """On the importing target the server serves a key only to a client that sent ASKING: the
    module's own calls from a timer or callback (reading the fence counter for a hand-over
    when a BIND holder's connection goes) are refused there. The fenced waiter is answered
    -TRYAGAIN (not an error about the counter), retries, and gets its fence."""
    name = "{mig4}"
    slot = rc.keyslot(name)
    source = cluster.owner_port(slot)
    target = other_port(cluster, source)
    first = rc.execute_command("LOCK.ACQUIRE", name, "holder", 60, "FENCE")
    assert first > 0
    open_slot(cluster, slot, source, target)
    slots.append((slot, target))
    assert migrate_keys(cluster, slot, source, target) == [f"lock-fence:{name}", f"lock:{name}"]
    binder = redis.Redis(host="127.0.0.1", port=target, socket_timeout=10)
    binder.execute_command("ASKING")
    assert text(binder.execute_command("LOCK.ACQUIRE", name, "holder", 60, "BIND")) == "OK"
    waiter = Waiter(cluster, name, "w1", "FENCE")
    wait_blocked_on(cluster, {target: 1}, "fenced waiter on the target")
    binder.close()  # the bound holder goes: the lock is handed on from outside a command
    assert waiter.result(WAKE, "fenced waiter after the holder left") > first
    assert text(rc.execute_command("LOCK.OWNER", name)) == "w1"
    assert rc.execute_command("LOCK.RELEASE", name, "w1") == 1


def test_multi_and_scripts_in_cluster_mode(cluster, rc):
    name = "{tx}"
    port = cluster.owner_port(rc.keyslot(name))
    node = cluster.direct[port]
    # Clients route by the name (argument 1, from COMMAND INFO: they see no filter).
    assert rc.determine_slot("LOCK.ACQUIRE", name, "t", 10) == rc.keyslot(name)
    # Queued in MULTI (the filter runs at queue time), run at EXEC.
    pipe = node.pipeline(transaction=True)
    pipe.execute_command("LOCK.ACQUIRE", name, "t1", 10)
    pipe.execute_command("LOCK.OWNER", name)
    assert [text(r) for r in pipe.execute()] == ["OK", "t1"]
    # From a script (the filter sees its calls).
    script = "return redis.call('LOCK.RELEASE', KEYS[1], ARGV[1])"
    assert node.eval(script, 1, name, "t1") == 1
    # The arguments as sent are checked as always.
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'LOCK.RELEASE'"):
        rc.execute_command("LOCK.RELEASE", name)
    with pytest.raises(redis.ResponseError, match="ttl must be a positive"):
        rc.execute_command("LOCK.ACQUIRE", name, "t", "x")


def test_waiters_answered_when_their_node_loses_the_slot_silently(cluster, rc):
    """A node that loses a slot to another's higher epoch (an operator's forced SETSLOT NODE +
    BUMPEPOCH, or a failover's claim) deletes the slot's keys without a keyspace event. Its
    waiters must still be answered (at most about a second later, not at the end of the
    holder's 1000 s lease), and sent where the slot is now."""
    name = "{dirty}"
    slot = rc.keyslot(name)
    source = cluster.owner_port(slot)
    target = other_port(cluster, source)
    assert text(rc.execute_command("LOCK.ACQUIRE", name, "holder", 1000)) == "OK"
    waiter = Waiter(cluster, name, "w1", block_ms=30000)
    wait_blocked_on(cluster, {source: 1}, "waiter on the source")
    cluster.direct[target].execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(cluster, target))
    cluster.direct[target].execute_command("CLUSTER", "BUMPEPOCH")
    _deadline_poll("the source sees the target's claim", CLUSTER_TIMEOUT,
                   lambda: cluster._slot_map(cluster.direct[source])[slot] == target)
    _deadline_poll("the source dropped the slot's keys", 5,
                   lambda: cluster.direct[source].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0)
    # The lock went with the source's copy of the slot; the waiter, sent to the target, takes it.
    assert waiter.result(5, "waiter after its node lost the slot") == "OK"
    _deadline_poll("one slot map on every node", CLUSTER_TIMEOUT, cluster._converged)
    assert text(rc.execute_command("LOCK.OWNER", name)) == "w1"
    assert rc.execute_command("LOCK.RELEASE", name, "w1") == 1
    assert blocked_per_node(cluster) == {p: 0 for p in cluster.direct}


def migrate_slots_atomically(cluster, source, target, slots):
    """Valkey 9's CLUSTER MIGRATESLOTS, until every node sees the slots on the target; skips
    the test on servers without it."""
    args = []
    for first, last in slot_ranges(slots):
        args += [first, last]
    try:
        cluster.direct[source].execute_command(
            "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", *args, "NODE", node_id(cluster, target))
    except redis.ResponseError as exc:
        if "unknown subcommand" in str(exc).lower():
            pytest.skip("no atomic slot migration on this server")
        raise
    _deadline_poll("every node sees the slots moved", CLUSTER_TIMEOUT,
                   lambda: all(cluster._slot_map(c)[s] == target
                               for c in cluster.direct.values() for s in slots))


def test_atomic_slot_migration_moves_a_held_and_awaited_lock(cluster, rc):
    """Valkey 9's atomic slot migration (rlock declares that it copes with it: the server
    refuses CLUSTER MIGRATESLOTS while a module has not). The source serves the lock until the
    cut-over, then drops the slot's keys; its waiter is answered -TRYAGAIN and follows the lock
    to the target, where the holder's release hands it over; the fence counter goes on."""
    name = "{asm}"
    slot = rc.keyslot(name)
    source = cluster.owner_port(slot)
    target = other_port(cluster, source)
    first = rc.execute_command("LOCK.ACQUIRE", name, "holder", 60, "FENCE")
    assert first > 0
    waiter = Waiter(cluster, name, "w1")
    wait_blocked_on(cluster, {source: 1}, "waiter on the source")
    migrate_slots_atomically(cluster, source, target, [slot])
    wait_blocked_on(cluster, {target: 1}, "waiter on the target")
    assert cluster.direct[source].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert text(rc.execute_command("LOCK.OWNER", name)) == "holder"
    assert rc.execute_command("LOCK.ACQUIRE", name, "rival", 60) is None
    assert rc.execute_command("LOCK.RELEASE", name, "holder") == 1
    assert waiter.result(WAKE, "waiter after the release on the target") == "OK"
    assert rc.execute_command("LOCK.RELEASE", name, "w1") == 1
    assert rc.execute_command("LOCK.ACQUIRE", name, "next", 60, "FENCE") > first
    assert rc.execute_command("LOCK.RELEASE", name, "next") == 1
    assert blocked_per_node(cluster) == {p: 0 for p in cluster.direct}

def slot_ranges(slots):
    """Sorted slots as (first, last) runs."""
    runs = []
    for slot in slots:
        if runs and runs[-1][1] == slot - 1:
            runs[-1][1] = slot
        else:
            runs.append([slot, slot])
    return runs


def test_atomic_slot_migration_under_lock_traffic(cluster, rc):
    """Valkey 9's CLUSTER MIGRATESLOTS moves the slots of three busy locks: the source serves
    them until the cut-over (the module's writes reach the target with the slot's own), then
    drops them; its waiters are answered -TRYAGAIN and follow the locks."""
    moving_slots_under_lock_traffic(
        cluster, rc, lambda source, target, slots: migrate_slots_atomically(cluster, source, target, slots))


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


def test_lock_command_held_back_by_a_pause_runs_as_sent(cluster, rc):
    """Review: a LOCK.* call held back by CLIENT PAUSE (as a manual CLUSTER FAILOVER or FAILOVER
    pauses writes) runs once the pause ends as the client sent it. Redis 7.0 runs command
    filters again when a postponed command is reprocessed: the routing key went in twice, and
    the call failed ('unknown option', arity errors); the filter now knows its own key."""
    name = "{paused}"
    port = cluster.owner_port(rc.keyslot(name))
    node = cluster.direct[port]
    node.delete(f"lock:{name}")
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    try:
        for pause in ("WRITE", "ALL"):
            node.execute_command("CLIENT", "PAUSE", 200, pause)
            assert client.execute_command("LOCK.ACQUIRE", name, "tok", 10) == b"OK", pause
            assert node.execute_command("LOCK.OWNER", name) == b"tok", pause
            node.execute_command("CLIENT", "PAUSE", 200, pause)
            assert client.execute_command("LOCK.RELEASE", name, "tok") == 1, pause
            assert node.execute_command("LOCK.OWNER", name) is None, pause
            node.execute_command("CLIENT", "PAUSE", 200, pause)
            assert client.execute_command("LOCK.OWNER", name) is None, pause
    finally:
        node.execute_command("CLIENT", "UNPAUSE")
        client.close()
        node.delete(f"lock:{name}")
