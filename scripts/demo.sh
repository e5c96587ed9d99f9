#!/usr/bin/env bash
# The demo: what ember does on this host today.
set -euo pipefail
cd "$(dirname "$0")/.."
ember=bin/ember
echo "== ember check"
$ember check || true
echo
echo "== a test guest sums 62 MiB of its memory (CPL3, runs natively on KVM)"
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
