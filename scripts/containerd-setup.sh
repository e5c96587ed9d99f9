#!/usr/bin/env bash
# Installs containerd 2.4.2, ctr and containerd-shim-runc-v2 (same release:
# Debian's 1.6 runc shim cannot speak containerd 2.4's start protocol) into
# a cache directory, the CNI plugins bridge, host-local and loopback
# (v1.9.0) into its cni/ subdirectory, and crictl (cri-tools v1.37.0, the
# CRI end-to-end test's client) beside containerd, with go install.
# Idempotent: a binary already built at its version is kept. Prints the
# directory on the last line.
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

cni_version=${CNI_PLUGINS_VERSION:-v1.9.0}
cni_mod=github.com/containernetworking/plugins
have_cni() { # have_cni PLUGIN: true if cni/PLUGIN was built from $cni_version
  [[ -x "$dir/cni/$1" ]] && go version -m "$dir/cni/$1" 2>/dev/null |
    grep -q "mod[[:space:]]*$cni_mod[[:space:]]*$cni_version"
}
todo=()
for p in main/bridge ipam/host-local main/loopback; do
  have_cni "${p#*/}" || todo+=("$cni_mod/plugins/$p@$cni_version")
done
if ((${#todo[@]})); then
  echo "containerd-setup: building ${todo[*]}" >&2
  mkdir -p "$dir/cni"
  GOBIN="$dir/cni" CGO_ENABLED=0 go install "${todo[@]}"
fi
for p in bridge host-local loopback; do
  have_cni "$p" || { echo "containerd-setup: $dir/cni/$p is not $cni_version" >&2; exit 1; }
done

crictl_version=${CRICTL_VERSION:-v1.37.0}
crictl_mod=sigs.k8s.io/cri-tools
have_crictl() { # true if crictl was built from $crictl_version
  [[ -x "$dir/crictl" ]] && go version -m "$dir/crictl" 2>/dev/null |
    grep -q "mod[[:space:]]*$crictl_mod[[:space:]]*$crictl_version"
}
if ! have_crictl; then
  echo "containerd-setup: building $crictl_mod/cmd/crictl@$crictl_version" >&2
  # Stripped: it is copied into every shim e2e lab run.
  GOBIN="$dir" CGO_ENABLED=0 go install -ldflags="-s -w" "$crictl_mod/cmd/crictl@$crictl_version"
fi
have_crictl || { echo "containerd-setup: $dir/crictl is not $crictl_version" >&2; exit 1; }
echo "$dir"
