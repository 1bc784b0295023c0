"""python-redis-lock 4.0.1's own test suite against rlock's Python client (scripts/prl-suite.sh:
its tests with ``redis_lock`` swapped for ``rlock``, on a server with the module loaded).

The same suite runs a second time on a server without the module (``scripts/prl-suite.sh
--no-module``), where rlock's client speaks python-redis-lock's own protocol: there every test
runs, the two of deselected.txt included. And a third time unmodified, testing python-redis-lock
itself on a server with the module (``--original``).

One test per mode here, so that ``make test`` and ``make test-matrix`` run the suite on every server: it
passes when the suite passes whole, with nothing skipped and only the tests that
tests/python-redis-lock/deselected.txt lists (python-redis-lock's private protocol) left out.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 900  # seconds; the suite takes about 2 minutes


def _left_out():
    lines = (REPO / 'tests' / 'python-redis-lock' / 'deselected.txt').read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


# python-redis-lock's test_signal_expiration sleeps exactly signal_expire after its release and
# then asserts the signal list has expired: it samples the server at the very millisecond of the
# expiry (a key expires once the clock is *past* its time). It fails now and then with or without
# the module: seen in CI on a plain redis-server 7.0.15 with rlock's client speaking
# python-redis-lock's own protocol (--no-module), and by hand while a build loaded the machine;
# 960 of 960 passes in a quiet loop with the module. Its cases alone get one second try; any
# other failure fails at once.
RACES_THE_CLOCK = 'test_signal_expiration'


def _only_clock_races(out):
    """The ids of the failed tests if every one is a RACES_THE_CLOCK case, else None."""
    failed = re.findall(r'^(?:FAILED|ERROR) (\S+)', out, re.M)
    return failed if failed and all(RACES_THE_CLOCK in f for f in failed) else None


def _second_try(mode, failed, first_out):
    retry = _suite(mode, *failed)
    assert retry.returncode == 0, (
        f'{RACES_THE_CLOCK} failed twice:\n{first_out[-5000:]}\n{retry.stdout[-5000:]}'
    )
    print(f'{len(failed)} {RACES_THE_CLOCK} case(s) passed on their second try')


def _suite(mode, *args):
    """scripts/prl-suite.sh in `mode` ([], ['--no-module'] or ['--original']), run to its end."""
    return subprocess.run(
        [str(REPO / 'scripts' / 'prl-suite.sh'), *mode, '-q', '-rfEs', '--color=no', *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=DEADLINE,
        env=dict(os.environ),
    )


def _judge(mode, returncode, out, what, at_least, not_in_summary):
    """The suite passed whole: at least `at_least` tests, none of `not_in_summary` (a regex) in
    its summary; its clock races alone get a second try."""
    if returncode != 0 and (failed := _only_clock_races(out)):
        _second_try(mode, failed, out)
        return
    summary = out.strip().splitlines()[-1] if out.strip() else ''
    assert returncode == 0, f'python-redis-lock\'s suite failed {what}:\n{out[-20000:]}'
    passed = re.search(r'(\d+) passed', summary)
    assert passed and int(passed.group(1)) >= at_least, f'too few tests ran: {summary!r}\n{out[-5000:]}'
    assert not re.search(not_in_summary, summary), f'not every test ran and passed: {summary!r}'
    print(summary)


def test_python_redis_lock_suite_passes_against_rlock():
    proc = _suite([])
    assert len(_left_out()) == 2
    _judge([], proc.returncode, proc.stdout, 'against rlock', 150, r'skipped|xfail|xpass|error')


def test_python_redis_lock_itself_passes_on_a_module_server():
    """The same suite, unmodified, testing python-redis-lock 4.0.1 itself against a server with
    the module loaded (``scripts/prl-suite.sh --original``): its clients behave as without the
    module (PROTOCOL.md, promise 6). Nothing is left out."""
    proc = _suite(['--original'])
    _judge(['--original'], proc.returncode, proc.stdout, 'on a module server', 170,
           r'skipped|xfail|xpass|error|deselected')


@pytest.fixture(scope='module', autouse=True)
def without_the_module(tmp_path_factory):
    """The no-module run, started before the first test so that it runs alongside the module run
    (both mostly wait on python-redis-lock's timeouts: together they take the time of one)."""
    log = tmp_path_factory.mktemp('prl-no-module') / 'out.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen(
            [str(REPO / 'scripts' / 'prl-suite.sh'), '--no-module', '-q', '-rfEs', '--color=no'],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env=dict(os.environ),
        )
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_python_redis_lock_suite_passes_against_rlock_without_the_module(without_the_module):
    proc, log = without_the_module
    try:
        proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f'the suite without the module did not finish within {DEADLINE} s:\n{log.read_text()[-5000:]}')
    # Nothing deselected: the tests deselected.txt leaves out with the module ran too.
    _judge(['--no-module'], proc.returncode, log.read_text(), 'against rlock without the module', 150,
           r'skipped|xfail|xpass|error|deselected')
