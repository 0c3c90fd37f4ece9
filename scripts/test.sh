#!/usr/bin/env bash
# The whole test suite: formatting, lints, then the unit, property, integration and crash tests
# of every crate (the engine's layering check among them: engine/src/tidy.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
