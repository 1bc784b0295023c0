"""python-redis-lock 4.0.1's own test suite against rlock's Python client (scripts/prl-suite.sh:
its tests with ``redis_lock`` swapped for ``rlock``, on a server with the module loaded).

One test here, so that ``make test`` and ``make test-matrix`` run the suite on every server: it
passes when the suite passes whole, with nothing skipped and only the tests that
tests/python-redis-lock/deselected.txt lists (python-redis-lock's private protocol) left out.
"""

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 900  # seconds; the suite takes about 2 minutes


def _left_out():
    lines = (REPO / 'tests' / 'python-redis-lock' / 'deselected.txt').read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


def test_python_redis_lock_suite_passes_against_rlock():
    proc = subprocess.run(
        [str(REPO / 'scripts' / 'prl-suite.sh'), '-q', '-rfEs', '--color=no'],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=DEADLINE,
        env=dict(os.environ),
    )
    out = proc.stdout
    summary = out.strip().splitlines()[-1] if out.strip() else ''
    assert proc.returncode == 0, f'python-redis-lock\'s suite failed against rlock:\n{out[-20000:]}'
    passed = re.search(r'(\d+) passed', summary)
    assert passed and int(passed.group(1)) >= 150, f'too few tests ran: {summary!r}\n{out[-5000:]}'
    assert not re.search(r'skipped|xfail|xpass|error', summary), f'not every test ran and passed: {summary!r}'
    assert len(_left_out()) == 2
    print(summary)


def test_python_redis_lock_itself_passes_on_a_module_server():
    """The same suite, unmodified, testing python-redis-lock 4.0.1 itself against a server with
    the module loaded (``scripts/prl-suite.sh --original``): its clients behave as without the
    module (PROTOCOL.md, promise 6). Nothing is left out."""
    proc = subprocess.run(
        [str(REPO / 'scripts' / 'prl-suite.sh'), '--original', '-q', '-rfEs', '--color=no'],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=DEADLINE,
        env=dict(os.environ),
    )
    out = proc.stdout
    summary = out.strip().splitlines()[-1] if out.strip() else ''
    assert proc.returncode == 0, f'python-redis-lock\'s own suite failed on a module server:\n{out[-20000:]}'
    passed = re.search(r'(\d+) passed', summary)
    assert passed and int(passed.group(1)) >= 170, f'too few tests ran: {summary!r}\n{out[-5000:]}'
    assert not re.search(r'skipped|xfail|xpass|error|deselected', summary), f'not every test ran and passed: {summary!r}'
    print(summary)
