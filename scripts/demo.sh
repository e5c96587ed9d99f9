#!/usr/bin/env bash
# The demo: what ember does on this host. Run by `make demo` (which builds
# bin/ember, bin/ember-agent and the guest kernel first).
set -euo pipefail
cd "$(dirname "$0")/.."
ember=bin/ember
echo "== ember check"
native=yes
$ember check || true
$ember check --json | grep -q '"native_kernels": true' || native=no
echo
echo "== a test guest fills and sums 62 MiB of its memory (CPL3: runs natively on any KVM)"
$ember testguest --program fill --mem 64
echo
echo "== a test guest talks to an MMIO device"
$ember testguest --program mmio
echo
echo "== a guest that writes outside its memory is stopped with a clear error"
$ember testguest --program wild || echo "(exit status $?, as expected)"
echo
echo "== VMM core benchmark"
$ember bench --runs 10 core
echo
kernel=$(images/kernel/build.sh)/vmlinux
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -o "$work/init" ./images/placeholder-init
$ember image initrd --init "$work/init" --busybox /bin/busybox --out "$work/initrd.gz" >/dev/null
cmd='-- echo; echo hello from a Linux microVM run by ember; uname -sr; nproc; free -m | head -2'
if [ "$native" = yes ]; then
  echo "== boot Linux in a microVM (native KVM)"
  $ember boot --kernel "$kernel" --initrd "$work/initrd.gz" --mem 256 --vcpus 2 --cmdline "$cmd" </dev/null
else
  echo "== boot Linux in a microVM: this host's KVM cannot run guest kernels (see ember check),"
  echo "   so ember runs inside the nested lab (an L1 Linux under QEMU TCG with emulated SVM)."
  echo "   Times inside the lab are emulation times: compare them only with each other."
  $ember lab run --timeout 5m \
    --file "$kernel:/demo/vmlinux" --file "$work/initrd.gz:/demo/initrd.gz" -- \
    ember boot --kernel /demo/vmlinux --initrd /demo/initrd.gz --mem 256 --vcpus 2 --cmdline "$cmd"
fi
echo
echo "== a container through containerd: ctr run with the ember shim (io.containerd.ember.v2)"
if [ "$native" = no ]; then
  echo "   (in the nested lab, like the boot above; the first run on a machine also builds"
  echo "   containerd 2.4, which takes minutes once and is cached after)"
fi
go run ./benchmarks/ctr/cmd -demo
