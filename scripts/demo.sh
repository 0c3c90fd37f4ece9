#!/usr/bin/env bash
# The main job: build casesync and run its demo (a relay and three devices on 127.0.0.1).
# Built with the dev profile (dependencies, RocksDB included, optimised: Cargo.toml), the same
# build of RocksDB the test suite uses: a fresh machine compiles it once for both commands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run -q -p casesync-node --bin casesync -- demo "$@"
