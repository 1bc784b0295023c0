"""The release tarball of ``make dist`` (scripts/dist.sh): its librlock.so needs no glibc newer
than 2.17, its files are there and its sha256 matches, and the packaged .so loads into the server
under test ($REDIS_SERVER: ``make test-matrix`` runs this on every server of the matrix) and
serves LOCK.*.

``make dist`` is not part of ``make test`` (the first build takes minutes): without a tarball in
dist/ these tests are skipped, saying so, unless ``RLOCK_REQUIRE_DIST=1`` (set by .ci/run, which
runs ``make dist`` first): then a missing tarball fails.
"""

import hashlib
import os
import re
import subprocess
import tarfile

import pytest
import redis
from conftest import REPO
from conftest import start_server

GLIBC_MAX = (2, 17)


def _version():
    text = (REPO / 'Cargo.toml').read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


@pytest.fixture(scope='module')
def unpacked(tmp_path_factory):
    name = f'rlock-{_version()}-linux-x86_64'
    tarball = REPO / 'dist' / f'{name}.tar.gz'
    if not tarball.is_file():
        if os.environ.get('RLOCK_REQUIRE_DIST') == '1':
            pytest.fail(f'RLOCK_REQUIRE_DIST=1 but there is no {tarball}: `make dist` failed or did not run', pytrace=False)
        pytest.skip(f'no {tarball.relative_to(REPO)}: run `make dist` to test the release tarball')
    listed = (REPO / 'dist' / f'{name}.tar.gz.sha256').read_text().split()
    assert listed[0] == hashlib.sha256(tarball.read_bytes()).hexdigest(), 'the tarball does not match its .sha256'
    out = tmp_path_factory.mktemp('dist')
    with tarfile.open(tarball) as tar:
        members = tar.getnames()
        assert all(m == name or m.startswith(name + '/') for m in members), members
        if hasattr(tarfile, 'data_filter'):
            tar.extractall(out, filter='data')
        else:  # Python before 3.11.4; the names were checked above
            tar.extractall(out)
    return out / name


def glibc_versions_needed(so):
    """Every GLIBC_x.y version the .so's dynamic symbols refer to, as tuples."""
    dump = subprocess.run(['objdump', '-T', str(so)], check=True, capture_output=True, text=True).stdout
    return sorted({tuple(int(p) for p in v.split('.')) for v in re.findall(r'GLIBC_([0-9]+(?:\.[0-9]+)+)', dump)})


def test_the_tarball_has_the_so_its_sha256_the_license_and_install(unpacked):
    for f in ('librlock.so', 'SHA256SUMS', 'LICENSE', 'INSTALL', 'THIRD-PARTY'):
        assert (unpacked / f).is_file(), f
    digest, name = (unpacked / 'SHA256SUMS').read_text().split()
    assert name == 'librlock.so'
    assert digest == hashlib.sha256((unpacked / 'librlock.so').read_bytes()).hexdigest()
    assert 'loadmodule ' in (unpacked / 'INSTALL').read_text()
    assert (unpacked / 'LICENSE').read_text() == (REPO / 'LICENSE').read_text()


def test_the_so_needs_no_glibc_newer_than_2_17(unpacked):
    needed = glibc_versions_needed(unpacked / 'librlock.so')
    assert needed, 'no GLIBC_ versions found: not a glibc-linked .so?'
    assert max(needed) <= GLIBC_MAX, f'needs GLIBC_{".".join(map(str, max(needed)))}'


def test_the_so_needs_only_the_libraries_every_linux_has(unpacked):
    dump = subprocess.run(['objdump', '-p', str(unpacked / 'librlock.so')], check=True,
                          capture_output=True, text=True).stdout
    needed = set(re.findall(r'NEEDED\s+(\S+)', dump))
    assert needed <= {'libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'librt.so.1',
                      'libgcc_s.so.1', 'ld-linux-x86-64.so.2'}, needed


def test_the_packaged_so_loads_into_the_server_and_serves_locks(unpacked):
    server = start_server(unpacked / 'librlock.so', 2)
    try:
        c = server.client(socket_timeout=10)
        assert c.execute_command('LOCK.ACQUIRE', 'dist', 'token-1', 10) in (b'OK', 'OK')
        assert c.get('lock:dist') == b'token-1'
        assert c.execute_command('LOCK.ACQUIRE', 'dist', 'token-2', 10) is None
        assert c.execute_command('LOCK.RELEASE', 'dist', 'token-1') == 1
        fence = c.execute_command('LOCK.ACQUIRE', 'dist', 'token-2', 10, 'FENCE')
        assert isinstance(fence, int)
        modules = c.execute_command('MODULE', 'LIST')
        assert any(b'rlock' in (m[1] if isinstance(m, list) else m.get(b'name', b'')) for m in modules), modules
        c.close()
        assert server.alive()
    finally:
        server.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(unix_socket_path=server.socket).ping()
