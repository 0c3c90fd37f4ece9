#!/usr/bin/env bash
# The main job: build casesync and run its demo (a relay and three devices on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -q -p casesync-node --bin casesync
exec ./target/release/casesync demo "$@"
