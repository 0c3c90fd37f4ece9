#!/usr/bin/env bash
# Builds `casesync` and `replay-tool` optimised (one RocksDB build for both) and copies them to
# ${CASESYNC_BIN_DIR:-$HOME/.local/bin}, which should be on your PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin_dir="${CASESYNC_BIN_DIR:-$HOME/.local/bin}"
cargo build --release --locked -p casesync-node -p replay-tool
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$bin_dir"
install -m 0755 "$target/release/casesync" "$target/release/replay-tool" "$bin_dir/"
echo "installed casesync and replay-tool in $bin_dir"
case ":$PATH:" in *":$bin_dir:"*) ;; *) echo "add $bin_dir to your PATH" ;; esac
