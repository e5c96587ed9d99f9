#!/usr/bin/env bash
# Builds ember's guest kernel (vmlinux and bzImage) from Debian's
# linux-source-6.1 package with the config fragment next to this script, and
# caches the result.
#
# Usage: images/kernel/build.sh [--hash]
#   prints the cache directory holding vmlinux, bzImage, config, build.log
#   and manifest on stdout (progress goes to stderr). --hash prints the
#   directory that a build would use, without building.
#
# Environment:
#   EMBER_KERNEL_FRAGMENT  config fragment (default: ember-guest.config here)
#   XDG_CACHE_HOME         cache root (default: $HOME/.cache)
#   EMBER_KERNEL_JOBS      make -j (default: $(nproc))
#
# Cache key: sha256 over the fragment, the linux-source-6.1 package version,
# this script and the compiler version; the first 24 hex digits name
# ${XDG_CACHE_HOME:-$HOME/.cache}/ember/kernel/<hash>/. A build runs in a
# temporary directory under the cache root, holds an flock on <hash>.lock so
# that concurrent builders of the same hash wait for one another, and is
# published by a single rename(2) at the end: the directory either exists
# complete or not at all.
set -euo pipefail

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/$(basename "${BASH_SOURCE[0]}")"
fragment=${EMBER_KERNEL_FRAGMENT:-$here/ember-guest.config}
[ -r "$fragment" ] || die "config fragment $fragment not readable"
src_pkg=linux-source-6.1
src_tar=/usr/src/linux-source-6.1.tar.xz
jobs=${EMBER_KERNEL_JOBS:-$(nproc)}

# ensure_packages installs the source package and the build dependencies if
# any of them is missing.
ensure_packages() {
	local missing=() p
	for p in "$src_pkg" build-essential bc flex bison libelf-dev libssl-dev xz-utils; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$p")
		fi
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing ${missing[*]}"
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
}

# check_config fails if an option of the fragment did not survive
# olddefconfig (dropped because of a missing dependency, renamed, ...).
check_config() {
	local frag=$1 cfg=$2 bad=0 line sym val got
	while IFS= read -r line; do
		line=${line%%#*}
		line=${line//[[:space:]]/}
		[ -n "$line" ] || continue
		[[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]] || die "fragment: bad line: $line"
		sym=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
		got=$(grep -E "^${sym}=" "$cfg" | head -n1 | cut -d= -f2- || true)
		if [ "$val" = n ]; then
			if [ -n "$got" ]; then log "config: $sym wanted n, got $got"; bad=1; fi
		elif [ "$got" != "$val" ]; then
			log "config: $sym wanted $val, got ${got:-<unset>}"; bad=1
		fi
	done <"$frag"
	[ $bad -eq 0 ] || die "options of $frag were dropped by olddefconfig"
	log "config: every option of the fragment survived olddefconfig"
}

ensure_packages
[ -r "$src_tar" ] || die "$src_tar missing although $src_pkg is installed"
src_version=$(dpkg-query -W -f='${Version}' "$src_pkg")
cc_version=$(gcc --version | head -n1)

hash=$({
	printf 'fragment\n'; cat "$fragment"
	printf '\nsource %s %s\n' "$src_pkg" "$src_version"
	printf 'compiler %s\n' "$cc_version"
	printf 'script\n'; cat "$script"
} | sha256sum | cut -c1-24)

cache=${XDG_CACHE_HOME:-$HOME/.cache}/ember/kernel
out=$cache/$hash
if [ "${1:-}" = --hash ]; then echo "$out"; exit 0; fi
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/$hash.lock"
log "waiting for lock $cache/$hash.lock"
flock 9
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then echo "$out"; exit 0; fi

tmp=$(mktemp -d "$cache/.build-$hash.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

log "extracting $src_tar into $tmp"
tar -xJf "$src_tar" -C "$tmp"
srcdir=$tmp/linux-source-6.1
[ -f "$srcdir/Makefile" ] || die "unexpected layout in $src_tar"

mkdir "$tmp/out"
cp "$fragment" "$tmp/out/fragment.config"
log "configuring (allnoconfig + fragment, olddefconfig)"
make -C "$srcdir" ARCH=x86_64 KCONFIG_ALLCONFIG="$tmp/out/fragment.config" allnoconfig >"$tmp/out/build.log" 2>&1 ||
	{ tail -n 30 "$tmp/out/build.log" >&2; die "allnoconfig failed"; }
make -C "$srcdir" ARCH=x86_64 olddefconfig >>"$tmp/out/build.log" 2>&1 ||
	{ tail -n 30 "$tmp/out/build.log" >&2; die "olddefconfig failed"; }
check_config "$tmp/out/fragment.config" "$srcdir/.config"

log "building vmlinux and bzImage with make -j$jobs (about 8 minutes on 2 cores)"
make -C "$srcdir" ARCH=x86_64 -j"$jobs" vmlinux bzImage >>"$tmp/out/build.log" 2>&1 ||
	{ tail -n 40 "$tmp/out/build.log" >&2; die "kernel build failed (log: $tmp/out/build.log)"; }

cp "$srcdir/vmlinux" "$srcdir/arch/x86/boot/bzImage" "$srcdir/System.map" "$tmp/out/"
cp "$srcdir/.config" "$tmp/out/config"
end=$(date +%s)
{
	printf 'hash=%s\n' "$hash"
	printf 'source=%s %s\n' "$src_pkg" "$src_version"
	printf 'compiler=%s\n' "$cc_version"
	printf 'kernelrelease=%s\n' "$(make -s -C "$srcdir" kernelrelease 2>/dev/null)"
	printf 'build_seconds=%s\n' "$((end - start))"
	printf 'built=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$tmp/out/manifest"

mv -T "$tmp/out" "$out"
log "built in $((end - start))s"
echo "$out"
