#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit tests, integration tests against the simulated Graph tenant
# over real HTTP on 127.0.0.1, a real Kafka-protocol broker (tansu) and the Python Standard Webhooks
# verifier. Installs what it needs; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# rdkafka's `ssl` feature builds against the system OpenSSL.
if ! dpkg -s libssl-dev >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1; then
  echo "libssl-dev/pkg-config missing; installing them with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found; installing it from crates.io" >&2
  cargo install cargo-nextest --locked
fi

# tansu: a Kafka-protocol broker in Rust (~15 min to build once; skipped when already on PATH).
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
  echo "tansu not found; installing it from crates.io (takes a while, once)" >&2
  cargo install tansu --locked --features dynostore
fi

# The reference Standard Webhooks verifier for the interoperability test.
if ! python3 -c 'import standardwebhooks' >/dev/null 2>&1; then
  echo "installing the standardwebhooks Python package" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  fi
  # A Debian system Python refuses plain installs (PEP 668); the package is test-only, so allow it there.
  python3 -m pip install --quiet --disable-pip-version-check standardwebhooks 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages standardwebhooks
fi

# Start a shared tansu broker on a free port with in-memory storage; stop it whatever happens.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tansu_log=$(mktemp -t tansu.XXXXXX.log)
tansu broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >"$tansu_log" 2>&1 &
tansu_pid=$!
trap 'kill "$tansu_pid" 2>/dev/null || true; wait "$tansu_pid" 2>/dev/null || true' EXIT
listening=
for _ in $(seq 1 400); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then listening=1; break; fi
  if ! kill -0 "$tansu_pid" 2>/dev/null; then
    echo "tansu exited; its log:" >&2
    cat "$tansu_log" >&2
    exit 1
  fi
  sleep 0.05
done
if [ -z "$listening" ]; then
  echo "tansu did not listen on 127.0.0.1:$port within 20 s; its log:" >&2
  cat "$tansu_log" >&2
  exit 1
fi
export GROUPWATCH_TEST_KAFKA="127.0.0.1:$port"
export GROUPWATCH_TEST_TANSU_BIN="$(command -v tansu)"
# Every service above is present: a test that finds one missing fails instead of skipping.
export GROUPWATCH_TEST_STRICT=1
echo "tansu broker on $GROUPWATCH_TEST_KAFKA (pid $tansu_pid)" >&2

cargo nextest run --no-fail-fast "$@"
# Doc tests are not run by nextest.
cargo test --doc --quiet
# The benches are not tests, but they must keep compiling (dev profile: no release build here).
cargo test --benches --no-run --quiet
