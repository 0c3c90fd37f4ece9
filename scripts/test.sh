#!/usr/bin/env bash
# The whole test suite: unit, property, integration and crash tests of every crate, plus the
# formatting check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo test --workspace --all-targets
