#!/usr/bin/env bash
# Installs containerd 2.4.2, ctr and containerd-shim-runc-v2 (same release:
# Debian's 1.6 runc shim cannot speak containerd 2.4's start protocol) into
# a cache directory, with go install. Idempotent: a binary already built at
# this version is kept. Prints the directory on the last line.
#
#   scripts/containerd-setup.sh            # -> ~/.cache/ember/bin
#   EMBER_BIN_DIR=/opt/x scripts/containerd-setup.sh
set -euo pipefail

version=${CONTAINERD_VERSION:-v2.4.2}
dir=${EMBER_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ember/bin}
mkdir -p "$dir"

command -v go >/dev/null || { echo "containerd-setup: Go is required" >&2; exit 1; }

have() { # have BINARY: true if BINARY exists and was built from $version
  [[ -x "$dir/$1" ]] && go version -m "$dir/$1" 2>/dev/null |
    grep -q "mod[[:space:]]*github.com/containerd/containerd/v2[[:space:]]*$version"
}

todo=()
for b in containerd ctr containerd-shim-runc-v2; do
  have "$b" || todo+=("github.com/containerd/containerd/v2/cmd/$b@$version")
done
if ((${#todo[@]})); then
  echo "containerd-setup: building ${todo[*]} (several minutes)" >&2
  GOBIN="$dir" CGO_ENABLED=0 go install "${todo[@]}"
fi
for b in containerd ctr containerd-shim-runc-v2; do
  have "$b" || { echo "containerd-setup: $dir/$b is not $version" >&2; exit 1; }
done
echo "$dir"
