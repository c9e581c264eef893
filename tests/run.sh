#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit tests, integration tests against the simulated Graph tenant
# over real HTTP on 127.0.0.1. Installs what it needs; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found; installing it from crates.io" >&2
  cargo install cargo-nextest --locked
fi

cargo nextest run --no-fail-fast "$@"
# Doc tests are not run by nextest.
cargo test --doc --quiet
