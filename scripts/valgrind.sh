#!/usr/bin/env bash
# Run the Rust integration suites with every redis-server under valgrind memcheck, then scan
# the logs: definitely-lost blocks and invalid accesses whose stack is in the module
# (librlock / rlock::) are reported apart from those inside redis-server itself.
#
#   scripts/valgrind.sh                    all suites: commands blocking replication model
#   SUITES="blocking model" scripts/valgrind.sh
#   scripts/valgrind.sh --scan DIR         only scan the logs of an earlier run
#
# Knobs (environment):
#   SUITES                  test files under tests/ to run (default: commands blocking replication model
#                           replies defects hardening)
#   VALGRIND_OUT            where logs and the report go (default: target/valgrind)
#   RLOCK_TEST_DEADLINE_SECS  the harness's deadline for every wait (default here: 120)
#   TEST_THREADS            cargo test --test-threads (default: 1)
#   RLOCK_MODEL_SEEDS       seeds of tests/model.rs (default here: 20, as in `make test`)
#   SKIP_TESTS              extra test names to skip (space-separated, passed as --skip)
#   VALGRIND_EXTRA          extra valgrind options
#   VALGRIND_TARGET_DIR     cargo target dir for the test binaries (default: target/valgrind-build)
#
# Exit status: non-zero if a suite failed or a module leak / invalid access was found.
# Leaks inside redis-server itself are listed but do not fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$PATH:$HOME/.cargo/bin"

OUT=${VALGRIND_OUT:-target/valgrind}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# ---- log scanner ----
scan() {
    python3 - "$1" <<'PY'
import collections, glob, os, re, sys

root = sys.argv[1]
MOD = re.compile(r"librlock|\brlock::")
HEADER_ERR = re.compile(
    r"^(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|"
    r"Mismatched free|Source and destination overlap|Argument '.*' of function|"
    r"Process terminating|Jump to the invalid address)"
)
LEAK = re.compile(r"^[\d,]+ (\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ blocks are definitely lost")

def records(path):
    """Yield (pid, lines) per record: the lines between blank `==pid== ` separators."""
    cur, pid = [], None
    for raw in open(path, errors="replace"):
        m = re.match(r"^==(\d+)== ?(.*)$", raw.rstrip("\n"))
        if not m:
            continue
        pid, text = m.group(1), m.group(2)
        if text.strip() == "":
            if cur:
                yield pid, cur
            cur = []
        else:
            cur.append(text)
    if cur:
        yield pid, cur

suites = collections.OrderedDict()
module_leaks, redis_leaks, module_errors, redis_errors = [], [], [], []
no_report = []
for suite_dir in sorted(glob.glob(os.path.join(root, "logs", "*"))):
    suite = os.path.basename(suite_dir)
    st = suites.setdefault(suite, collections.Counter())
    for path in sorted(glob.glob(os.path.join(suite_dir, "vg-*.log"))):
        name = os.path.basename(path)
        st["servers"] += 1
        text = open(path, errors="replace").read()
        if "HEAP SUMMARY" not in text:
            # Killed (SIGKILL) or still running: no leak check was made.
            no_report.append(f"{suite}/{name}")
            st["no_report"] += 1
        for kind in ("definitely lost", "indirectly lost", "possibly lost", "still reachable"):
            m = re.search(kind + r": ([\d,]+) bytes in ([\d,]+) blocks", text)
            if m:
                st[kind + " bytes"] += int(m.group(1).replace(",", ""))
                st[kind + " blocks"] += int(m.group(2).replace(",", ""))
        m = re.search(r"ERROR SUMMARY: ([\d,]+) errors", text)
        if m:
            st["errors"] += int(m.group(1).replace(",", ""))
        for pid, rec in records(path):
            head = rec[0].strip()
            body = "\n".join("    " + l for l in rec)
            where = f"{suite}/{name}"
            in_module = any(MOD.search(l) for l in rec)
            if LEAK.match(head):
                (module_leaks if in_module else redis_leaks).append((where, head, body))
            elif HEADER_ERR.match(head):
                (module_errors if in_module else redis_errors).append((where, head, body))

def section(title, items, full):
    print(f"\n## {title}: {len(items)}")
    groups = collections.OrderedDict()
    for where, head, body in items:
        # Same stack, same record: group (valgrind repeats them per server).
        key = re.sub(r"0x[0-9A-F]+", "0x", re.sub(r"^[\d,]+ .*?bytes in [\d,]+ blocks", "N bytes", body))
        key = re.sub(r"loss record [\d,]+ of [\d,]+", "loss record", key)
        groups.setdefault(key, []).append((where, head, body))
    shown = list(groups.items())
    if len(shown) > 15:
        print(f"(the first 15 of {len(shown)} distinct records; all are in the logs)")
        shown = shown[:15]
    for key, hits in shown:
        where, head, body = hits[0]
        others = len(hits) - 1
        print(f"\n- {head}\n  in {where}" + (f" and {others} more log(s)" if others else ""))
        if full:
            print(body)
        else:
            print("\n".join(body.splitlines()[:8]))

print("# valgrind scan of", root)
KINDS = ("definitely lost", "indirectly lost", "possibly lost", "still reachable")
print("\nLeak summaries added up over each suite's servers (bytes / blocks). Possibly lost and still")
print("reachable are data still live at exit (Redis's and the module's static state), for information.\n")
print("| suite | servers | " + " | ".join(KINDS) + " | errors | logs without leak report |")
print("|---" * (len(KINDS) + 4) + "|")
for suite, st in suites.items():
    cells = " | ".join(f"{st[k + ' bytes']:,} / {st[k + ' blocks']:,}" for k in KINDS)
    print(f"| {suite} | {st['servers']} | {cells} | {st['errors']} | {st['no_report']} |")
section("Module (librlock / rlock::) definitely-lost records", module_leaks, True)
section("Module (librlock / rlock::) invalid accesses and other errors", module_errors, True)
section("redis-server's own definitely-lost records (not the module)", redis_leaks, False)
section("redis-server's own errors (not the module)", redis_errors, False)
if no_report:
    print(f"\n## Logs with no leak report (server killed with SIGKILL, e.g. restart tests): {len(no_report)}")
    for n in no_report:
        print("-", n)
sys.exit(1 if module_leaks or module_errors else 0)
PY
}

if [[ ${1:-} == --scan ]]; then
    scan "${2:-$OUT}"
    exit
fi

if ! command -v valgrind >/dev/null; then
    echo "valgrind not found: installing it (apt-get)"
    SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get install -y valgrind || { $SUDO apt-get update && $SUDO apt-get install -y valgrind; }
fi

SUITES=${SUITES:-"commands blocking replication model replies defects hardening"}
export RLOCK_TEST_DEADLINE_SECS=${RLOCK_TEST_DEADLINE_SECS:-120}
export RLOCK_MODEL_SEEDS=${RLOCK_MODEL_SEEDS:-20}
export RLOCK_MODULE=${RLOCK_MODULE:-$ROOT/target/release/librlock.so}
TEST_THREADS=${TEST_THREADS:-1}

cargo build --release
# The test binaries are built with RLOCK_TEST_DEADLINE_SECS baked in: build them in a target
# directory of their own, so that the normal `cargo test` builds are left alone.
export CARGO_TARGET_DIR=${VALGRIND_TARGET_DIR:-$ROOT/target/valgrind-build}

rm -rf "$OUT/logs"
mkdir -p "$OUT/logs"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "valgrind: $(valgrind --version)"
    echo "redis-server: $(redis-server --version)"
    echo "module: $RLOCK_MODULE"
    echo "deadline: ${RLOCK_TEST_DEADLINE_SECS}s, test threads: $TEST_THREADS, model seeds: $RLOCK_MODEL_SEEDS"
} > "$OUT/run.txt"

failed=()
for suite in $SUITES; do
    dir="$OUT/logs/$suite"
    mkdir -p "$dir"
    # Debian's redis-server allocates through the shared libjemalloc: make sure memcheck
    # replaces that malloc too (valgrind 3.19 already does by default).
    export RLOCK_SERVER_WRAPPER="valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=40 --child-silent-after-fork=yes --soname-synonyms=somalloc=*jemalloc* --log-file=$dir/vg-{test}-%p.log ${VALGRIND_EXTRA:-}"
    skip=()
    for t in ${SKIP_TESTS:-}; do skip+=(--skip "$t"); done
    echo "== $suite (valgrind) =="
    start=$(date +%s)
    set +e
    cargo test --release --test "$suite" -- --test-threads="$TEST_THREADS" "${skip[@]}" \
        > "$OUT/$suite.test.log" 2>&1
    rc=$?
    set -e
    secs=$(( $(date +%s) - start ))
    result=$(grep -E '^test result:' "$OUT/$suite.test.log" | tail -1 || true)
    echo "$suite: exit $rc in ${secs}s: ${result:-no result (see $OUT/$suite.test.log)}" | tee -a "$OUT/run.txt"
    if [[ $rc != 0 ]]; then
        failed+=("$suite")
        grep -E '^test .* FAILED$|^    [a-z_]+$' "$OUT/$suite.test.log" | sed 's/^/    /' | tee -a "$OUT/run.txt" || true
    fi
done

set +e
scan "$OUT" > "$OUT/report.md"
scan_rc=$?
set -e
cat "$OUT/run.txt"
cat "$OUT/report.md"
echo
echo "logs: $OUT/logs, report: $OUT/report.md"
if (( ${#failed[@]} )); then
    echo "FAILED suites: ${failed[*]}"
    exit 1
fi
exit $scan_rc
