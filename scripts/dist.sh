#!/usr/bin/env bash
# make dist: the release tarball dist/rlock-<version>-linux-x86_64.tar.gz (and its .sha256): a
# librlock.so that needs glibc 2.17 or later (any x86-64 Linux since 2012), its sha256
# (SHA256SUMS), LICENSE, THIRD-PARTY (the crates it is built from) and INSTALL (the loadmodule line).
#
#   scripts/dist.sh            build and pack
#   scripts/dist.sh --check F  only check the .so F: the highest GLIBC_ version it needs
#
# The .so is built with `cargo zigbuild --target x86_64-unknown-linux-gnu.2.17`: zig links it
# against glibc 2.17's symbol versions. cargo-zigbuild and zig come from PyPI (the packages
# cargo-zigbuild and ziglang, pinned below) into target/dist-tools, installed on first use.
# Takes a few minutes the first time (a build of every crate for that target).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { echo "dist: $*"; }

GLIBC_MAX=2.17
TARGET=x86_64-unknown-linux-gnu
ZIGBUILD_VERSION=0.24.0
ZIGLANG_VERSION=0.17.0

# The highest GLIBC_x.y the .so needs, from its dynamic symbol table.
glibc_needed() {
    objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1
}

check() {
    local so="$1" need
    need="$(glibc_needed "$so")"
    if [[ -z $need ]]; then
        say "$so: no GLIBC_ symbol versions found (objdump -T)" >&2
        return 1
    fi
    if [[ "$(printf '%s\n%s\n' "$need" "$GLIBC_MAX" | sort -V | tail -n1)" != "$GLIBC_MAX" ]]; then
        say "$so needs GLIBC_$need, newer than $GLIBC_MAX" >&2
        return 1
    fi
    say "$so needs glibc $need at most (limit $GLIBC_MAX)"
}

if [[ ${1:-} == --check ]]; then
    check "$2"
    exit
fi

scripts/setup.sh  # clang and libclang for bindgen, cargo (idempotent, quick when present)
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
for tool in cargo objdump objcopy python3; do
    command -v "$tool" >/dev/null 2>&1 || { say "$tool not found (scripts/setup.sh installs what rlock needs)" >&2; exit 1; }
done

# --- the tools: cargo-zigbuild and zig, from PyPI, in their own venv --------------------------
tools=target/dist-tools
want="cargo-zigbuild==$ZIGBUILD_VERSION ziglang==$ZIGLANG_VERSION"
if [[ ! -x $tools/bin/cargo-zigbuild || "$(cat "$tools/.rlock-dist-tools" 2>/dev/null)" != "$want" ]]; then
    say "installing $want into $tools"
    rm -rf "$tools"
    python3 -m venv "$tools"
    # shellcheck disable=SC2086
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check $want
    echo "$want" >"$tools/.rlock-dist-tools"
fi
# cargo-zigbuild runs zig as `python3 -m ziglang`: the venv's python3 first on PATH.
export PATH="$repo/$tools/bin:$PATH"
zig_lib="$("$tools/bin/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "lib"))')"

# --- build --------------------------------------------------------------------------------------
# redis-module's build script runs bindgen (libclang) on redismodule.h. cargo-zigbuild hands
# bindgen zig's libc headers, but with this zig's layout it names a directory that is not there
# (x86_64-linux-gnu) and bindgen finds no <sys/types.h>: name the ones that are. bindgen only
# reads the declarations; the C and Rust code are compiled and linked by zig for glibc 2.17.
inc="$zig_lib/libc/include"
export BINDGEN_EXTRA_CLANG_ARGS="-isystem $zig_lib/include -isystem $inc/x86-linux-gnu -isystem $inc/generic-glibc -isystem $inc/x86-linux-any -isystem $inc/any-linux-any"
# The same .so from any checkout: no build paths in its strings (panic locations).
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$repo=rlock --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=cargo"
say "cargo zigbuild --release --target $TARGET.$GLIBC_MAX"
cargo zigbuild --release --target "$TARGET.$GLIBC_MAX"
built="target/$TARGET/release/librlock.so"
check "$built"

# --- pack ---------------------------------------------------------------------------------------
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)"
name="rlock-$version-linux-x86_64"
stage="target/dist/$name"
rm -rf "$stage"
mkdir -p "$stage" dist
objcopy --strip-debug "$built" "$stage/librlock.so"
check "$stage/librlock.so"
cp LICENSE "$stage/LICENSE"
{
    echo "rlock $version is built from these crates of crates.io (name version license):"
    cargo metadata --format-version 1 --filter-platform "$TARGET" --locked 2>/dev/null |
        python3 -c '
import json, sys
meta = json.load(sys.stdin)
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
pkgs = {p["id"]: p for p in meta["packages"]}
root = meta["resolve"]["root"]
seen, todo = set(), [root]
while todo:  # normal (not build or dev) dependencies of the library, transitively
    node = nodes[todo.pop()]
    for dep in node["deps"]:
        if any(k["kind"] is None for k in dep["dep_kinds"]) and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])
for pid in sorted(seen, key=lambda p: (pkgs[p]["name"], pkgs[p]["version"])):
    p = pkgs[pid]
    print(p["name"], p["version"], p.get("license") or "see the crate")
'
} >"$stage/THIRD-PARTY"
cat >"$stage/INSTALL" <<EOF
rlock $version: distributed locks inside Redis (a Redis module), for x86-64 Linux with glibc
$GLIBC_MAX or later; Redis 7.0 or later, or Valkey 8 or later.

1. Check the file:      sha256sum -c SHA256SUMS
2. Put librlock.so where the server can read it, e.g. /usr/local/lib/redis/librlock.so
3. Load it, in redis.conf (or valkey.conf):

       loadmodule /usr/local/lib/redis/librlock.so

   or when starting the server:   redis-server --loadmodule /usr/local/lib/redis/librlock.so
   or at run time:                redis-cli MODULE LOAD /usr/local/lib/redis/librlock.so
4. Check:  redis-cli LOCK.ACQUIRE demo token-1 10    (OK)
           redis-cli LOCK.RELEASE demo token-1       (1)

The Python client (python-redis-lock's API) is clients/python in the source repository; it also
works on servers without the module (managed services), in python-redis-lock's own protocol.
EOF
(cd "$stage" && sha256sum librlock.so >SHA256SUMS)
tarball="dist/$name.tar.gz"
# Reproducible: fixed order, owners and times (the commit's time when there is one).
epoch="$(git log -1 --format=%ct 2>/dev/null || echo 0)"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -C target/dist -cf - "$name" | gzip -n >"$tarball"
(cd dist && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
say "$tarball ($(du -h "$tarball" | cut -f1)); sha256 $(cut -d' ' -f1 "dist/$name.tar.gz.sha256")"
