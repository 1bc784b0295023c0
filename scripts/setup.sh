#!/usr/bin/env bash
# Make sure everything needed to build, run and test rlock is present.
#
#   scripts/setup.sh            system packages (redis-server, clang, libclang-dev, binutils) and cargo
#   scripts/setup.sh --python   the same, plus the Python test venv at .venv (with rlock's client,
#                               clients/python, installed editable), python-redis-lock's sdist (its
#                               test suite) and the Node test packages in tests/node/node_modules
#                               (tests/python/test_node_client.py; with node 20+ and npm on PATH,
#                               else skipped, unless RLOCK_REQUIRE_NODE=1: then an error)
#
# Idempotent and quick when everything is already installed: it only calls apt-get, pip or npm
# when something is missing or tests/python/requirements.txt or tests/node/package-lock.json has
# changed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

want_python=0
for arg in "$@"; do
    case "$arg" in
        --python) want_python=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (expected --python)" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*"; }

# --- system packages ------------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v clang >/dev/null 2>&1 || missing+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v objdump >/dev/null 2>&1 || missing+=(binutils)  # make dist's glibc check, test_dist.py

if ((${#missing[@]})); then
    say "missing: ${missing[*]}; installing with apt-get"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            say "not root and no sudo: install ${missing[*]} by hand" >&2
            exit 1
        fi
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y "${missing[@]}"
    # The Debian package starts a redis-server on port 6379; stop it so `make run` and the tests
    # get the port. There may be no init system at all (containers), so failures are fine.
    "${sudo[@]}" service redis-server stop >/dev/null 2>&1 \
        || "${sudo[@]}" systemctl stop redis-server >/dev/null 2>&1 \
        || true
fi

# --- Rust -----------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'EOF'
setup: cargo not found (looked in PATH and ~/.cargo/bin).
setup: rlock needs Rust stable; install it with rustup (https://rustup.rs), e.g.
setup:   curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
setup: then open a new shell or run: source "$HOME/.cargo/env"
EOF
    exit 1
fi

# --- Python test environment ----------------------------------------------------------------
if ((want_python)); then
    req=tests/python/requirements.txt
    venv=.venv
    marker="$venv/.rlock-requirements.sha256"
    if [[ ! -f $req ]]; then
        say "$req not found" >&2
        exit 1
    fi
    python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        say "$python not found; the Python tests need Python 3 with the venv module" >&2
        exit 1
    fi
    pyver() { "$1" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true; }
    # A venv from another interpreter version is rebuilt; the marker records the requirements
    # file it was last installed from.
    if [[ -x $venv/bin/python && "$(pyver "$venv/bin/python")" != "$(pyver "$python")" ]]; then
        say "$venv was made by another Python; recreating it"
        rm -rf "$venv"
    fi
    if [[ ! -x $venv/bin/python ]]; then
        say "creating $venv with $python"
        rm -rf "$venv"
        "$python" -m venv "$venv"
    fi
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ ! -f $marker || "$(cat "$marker")" != "$want" ]]; then
        say "installing $req into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
        echo "$want" >"$marker"
    fi
    # python-redis-lock's own test suite, run against rlock's client by scripts/prl-suite.sh:
    # it is in the source distribution only (not in the wheel).
    sdist="$venv/sdist/python_redis_lock-4.0.1.tar.gz"
    sdist_sha256=57995e13dce196301138d710d4f132d667c200cd814718e081bf299d6cf11d70
    if [[ ! -f $sdist ]] || [[ "$(sha256sum "$sdist" | cut -d' ' -f1)" != "$sdist_sha256" ]]; then
        say "fetching python-redis-lock 4.0.1's source distribution (its tests; scripts/prl-suite.sh)"
        rm -f "$sdist"
        "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
            --no-binary :all: -d "$venv/sdist" python-redis-lock==4.0.1
        if [[ "$(sha256sum "$sdist" | cut -d' ' -f1)" != "$sdist_sha256" ]]; then
            say "$sdist: not the sha256 expected ($sdist_sha256)" >&2
            exit 1
        fi
    fi
fi

# --- Node test packages (tests/node, run by tests/python/test_node_client.py) -----------------
if ((want_python)); then
    nodedir=tests/node
    lock="$nodedir/package-lock.json"
    marker="$nodedir/node_modules/.rlock-package-lock.sha256"
    if [[ ! -f $lock ]]; then
        say "$lock not found" >&2
        exit 1
    fi
    # Not installed from apt when missing: Debian 12's nodejs is 18, and ioredis 6 needs 20+.
    # Without Node 20+ and npm the Node tests are skipped (tests/python/test_node_client.py says
    # why), unless RLOCK_REQUIRE_NODE=1 (.ci/run sets it): then that is an error.
    node_skip=""
    if ! command -v node >/dev/null 2>&1; then
        node_skip="node not found"
    elif ! command -v npm >/dev/null 2>&1; then
        node_skip="npm not found"
    else
        node_major="$(node -p 'process.versions.node.split(".")[0]')"
        if ((node_major < 20)); then
            node_skip="node $(node --version) is too old"
        fi
    fi
    if [[ -n $node_skip ]]; then
        if [[ ${RLOCK_REQUIRE_NODE:-} == 1 ]]; then
            say "$node_skip; the Node client tests (tests/node, ioredis 6) need Node.js 20 or later with npm, and RLOCK_REQUIRE_NODE=1" >&2
            exit 1
        fi
        say "$node_skip: the Node client tests (tests/node) will be skipped; they need Node.js 20 or later with npm"
    fi
fi
if ((want_python)) && [[ -z $node_skip ]]; then
    # The marker records the lockfile (and node's major version) node_modules was installed from.
    want="$(sha256sum "$lock" | cut -d' ' -f1) node$node_major"
    if [[ ! -f $marker || "$(cat "$marker")" != "$want" ]]; then
        say "installing $lock into $nodedir/node_modules (npm ci)"
        (cd "$nodedir" && npm ci --no-audit --no-fund --loglevel=error)
        echo "$want" >"$marker"
    fi
fi
