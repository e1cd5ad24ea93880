#!/usr/bin/env bash
# Runs the whole test suite: unit and property tests of every crate, and the
# integration and fault tests that start real ringkv processes on 127.0.0.1.
# Some fault tests mount a small tmpfs (disk full) and need root; without it
# they print SKIP and pass.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --no-fail-fast "$@"
