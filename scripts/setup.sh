#!/usr/bin/env bash
# Installs what building casesync needs on a fresh Debian machine of this kind: libclang for the
# rocksdb crate's bindgen, and a C++ compiler. Rust itself comes with the machine (rustup).
set -euo pipefail
need=()
if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.]'; then need+=(libclang-dev); fi
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v g++ >/dev/null 2>&1 || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
