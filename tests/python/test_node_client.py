"""LOCK.* from Node with ioredis: runs tests/node/lock.test.js (node's built-in test runner)
against conftest's module-loaded server, once per RESP version (ioredis ``protocol`` 2 and 3).

Needs ``node`` (20 or later) and tests/node/node_modules (``scripts/setup.sh --python``, run by
``make test``, installs ioredis when node 20+ and npm are there). Without node 20+ the test is
skipped with the reason (a plain Debian 12 has Node 18), unless ``RLOCK_REQUIRE_NODE=1`` (.ci/run
sets it): then it fails. With node 20+, a missing ioredis is a failure, never a skip.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "node"
TEST_FILE = NODE_DIR / "lock.test.js"
NODE_TIMEOUT = 120  # seconds for the whole node run
MIN_TESTS = 7  # tests the file has that run under either protocol


MIN_NODE = 20


def _node_or_skip():
    """node's path; skipped (failed with RLOCK_REQUIRE_NODE=1) when there is no node 20+."""
    node = shutil.which("node")
    why = None
    if not node:
        why = "node not found on PATH"
    else:
        version = subprocess.run([node, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=30).stdout.strip()
        major = re.match(r"v(\d+)\.", version)
        if not major or int(major.group(1)) < MIN_NODE:
            why = f"node {version or '?'} is older than {MIN_NODE}"
    if why is None:
        return node
    why += f": the Node client tests need Node.js {MIN_NODE}+ (ioredis 6); install it and run scripts/setup.sh --python"
    if os.environ.get("RLOCK_REQUIRE_NODE") == "1":
        pytest.fail(why + " (RLOCK_REQUIRE_NODE=1)", pytrace=False)
    pytest.skip(why)


def test_ioredis(redis_server, r):
    node = _node_or_skip()
    if not (NODE_DIR / "node_modules" / "ioredis" / "package.json").is_file():
        pytest.fail(
            f"ioredis is not installed in {NODE_DIR / 'node_modules'}: run scripts/setup.sh --python "
            "(npm ci in tests/node)",
            pytrace=False,
        )
    env = dict(os.environ, RLOCK_SOCKET=redis_server.socket, RLOCK_PROTOCOL=str(redis_server.protocol))
    env.pop("RLOCK_PORT", None)
    try:
        done = subprocess.run(
            [node, "--test", "--test-reporter=tap", str(TEST_FILE)],
            cwd=NODE_DIR, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=NODE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.output or b"").decode(errors="replace")
        pytest.fail(f"node --test did not finish within {NODE_TIMEOUT} s; its output so far:\n{out}", pytrace=False)
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        pytest.fail(f"node --test exited {done.returncode}; its output:\n{out}", pytrace=False)
    # exit 0 with no test run (a renamed file, a filter) must not pass
    counts = {k: int(v) for k, v in re.findall(r"^# (pass|fail) (\d+)$", out, re.M)}
    if counts.get("fail", 1) != 0 or counts.get("pass", 0) < MIN_TESTS:
        pytest.fail(f"node --test ran fewer tests than expected ({counts}); its output:\n{out}", pytrace=False)
