#!/usr/bin/env bash
# Installs what ember's build, tests and demo need on Debian 12, as root.
# Idempotent: installs only what is missing. Slow artifacts (the lab's L1
# kernel, the guest kernel build) are cached by the tools themselves under
# ${XDG_CACHE_HOME:-~/.cache}/ember.
set -euo pipefail

pkgs=(
  qemu-system-x86   # the nested lab (L1 under TCG with emulated SVM)
  busybox-static    # the lab's and guest images' userland
  cpio              # checking initramfs archives in tests
  e2fsprogs         # mkfs.ext4 -d for disk images
  binutils          # objdump: checks the test-guest assembler
  build-essential bc flex bison libelf-dev libssl-dev  # guest kernel build
  linux-source-6.1  # guest kernel source
  runc              # the ctr benchmark's baseline runtime (benchmarks/ctr)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The lab fetches Debian's cloud kernel with apt-get download, which needs
# package lists.
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi
command -v go >/dev/null || { echo "setup: Go 1.26 is required (https://go.dev/dl)"; exit 1; }
echo "setup: ok"
