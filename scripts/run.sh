#!/usr/bin/env bash
# Build rlock and run a redis-server with it loaded, in the foreground (Ctrl-C to stop).
#
#   scripts/run.sh [--redis-option value ...]      (make run ARGS='--maxmemory 100mb')
#
# Listens on 127.0.0.1:6379 (PORT=... to change). Extra arguments are passed to redis-server as
# `--option value` pairs; later ones win, so `--port 6380` works too. The server's working
# directory (dump.rdb, appendonly files) is target/run, not the source tree.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

"$repo/scripts/setup.sh"
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

echo "run: cargo build --release"
cargo build --release

module="$repo/target/release/librlock.so"
if [[ ! -f $module ]]; then
    echo "run: $module was not built" >&2
    exit 1
fi

port="${PORT:-6379}"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    cat >&2 <<EOF
run: port $port on 127.0.0.1 is already in use (another redis-server?).
run: stop it (e.g. 'service redis-server stop' or 'redis-cli -p $port shutdown nosave'),
run: or pick another port: make run PORT=6380
EOF
    exit 1
fi

mkdir -p "$repo/target/run"
echo "run: redis-server on 127.0.0.1:$port with $module (Ctrl-C to stop)"
exec redis-server --bind 127.0.0.1 --port "$port" --dir "$repo/target/run" "$@" \
    --loadmodule "$module"
