#!/usr/bin/env bash
# image.sh CACHE_DIR: build (or find) the VM tier's guest image and print its directory, which
# holds `vmlinux` (Debian 12's stock kernel, the ELF image boots faster than the bzImage under
# TCG) and `initrd.img` (busybox, Debian's own ip/bridge/nft/ping/curl with their libraries,
# the kernel modules the tests need, and vm/init.sh as /init).
#
# The kernel comes from `apt-get download linux-image-amd64`'s dependency, unpacked with
# `dpkg -x` into the cache (never installed into the host's /boot). The image is cached under
# CACHE_DIR/<key>, keyed by the kernel package version and a digest of this recipe, init.sh
# and every host file copied in — so a host upgrade of glibc or iproute2 rebuilds it. Safe to
# run concurrently (flock). Needs: apt-get, dpkg, busybox-static, cpio, kmod (depmod), xz.
set -euo pipefail
[[ $# == 1 ]] || { echo "usage: $0 CACHE_DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
CACHE=$(cd "$1" && pwd)
log() { printf '[weft-vm image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in apt-cache apt-get dpkg depmod modprobe cpio xz od ldd flock sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install cpio kmod xz-utils)"
done
[[ -x /bin/busybox ]] && /bin/busybox --list | grep -x ash >/dev/null || die "/bin/busybox not found (apt-get install busybox-static)"

# Host tools copied into the guest: required, then optional (copied when the host has them).
REQUIRED=(ip bridge nft ping)
OPTIONAL=(curl wg ipvsadm)
# Libraries Rust test binaries link against, present even when no tool above needs them.
BASE_LIBS=(libc.so.6 libm.so.6 libgcc_s.so.1)
# Modules loaded at boot (with their dependencies): the virtio devices and 9p shares, then
# every link kind and netfilter part a Weft test may touch. All of net/netfilter and
# net/bridge/netfilter are copied too, for the kernel's own on-demand loading.
MODULES=(virtio_pci virtio_net 9pnet_virtio 9p
  8021q ipvlan macvlan vxlan geneve bridge veth dummy wireguard
  nf_tables nft_chain_nat nft_nat nft_masq nft_redir nft_ct nft_fib_inet nft_fib_ipv4
  nft_fib_ipv6 nft_reject_inet nft_limit nft_meta_bridge nft_reject_bridge nf_conntrack_bridge)
MODULE_DIRS=(kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter
  kernel/net/bridge/netfilter)

kernel_package() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1; }
pkg=$(kernel_package)
if [[ -z $pkg && $(id -u) == 0 ]]; then  # no package lists yet (a fresh container)
  apt-get update -qq >&2 || true
  pkg=$(kernel_package)
fi
[[ -n $pkg ]] || die "apt-cache knows no linux-image-amd64 (is this Debian 12 with its apt lists? run apt-get update)"
version=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
kver=${pkg#linux-image-}

host_files() {  # every host file the image copies, one per line
  local t
  for t in "${REQUIRED[@]}"; do command -v "$t" >/dev/null || die "$t not found on the host (apt-get install iproute2 nftables iputils-ping)"; done
  for t in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do
    t=$(command -v "$t") || continue
    readlink -f "$t"
    ldd "$t" | grep -o '/[^ ]*' || true
  done
  for t in "${BASE_LIBS[@]}"; do ldconfig -p | sed -n "s|^\t$t (libc6,x86-64) => ||p" | head -1; done
  echo /bin/busybox
}
files=$(host_files | sort -u)
key=$( { echo "$pkg $version"; cat "$HERE/image.sh" "$HERE/init.sh"; for f in $files; do stat -L -c '%n %s %Y' "$f"; done; } | sha256sum | cut -c1-16)
out=$CACHE/$kver-$key
# A directory's mtime records its last use: images and kernels unused for a week are removed
# after the next build (other checkouts may use other recipes meanwhile).
if [[ -s $out/initrd.img && -s $out/vmlinux ]]; then touch "$out"; echo "$out"; exit 0; fi

exec 9>"$CACHE/.lock"
flock 9
if [[ -s $out/initrd.img && -s $out/vmlinux ]]; then echo "$out"; exit 0; fi
started=$(date +%s)
work=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The kernel package, kept per version: a rebuild for a new recipe does not download it again.
kdir=$CACHE/kernel-$pkg-$version
if [[ ! -d $kdir/root ]]; then
  log "downloading $pkg $version"
  mkdir -p "$work/deb"
  (cd "$work/deb" && apt-get download -q "$pkg=$version" >&2 2>/dev/null) || (cd "$work/deb" && apt-get download "$pkg=$version" >&2)
  dpkg -x "$work"/deb/*.deb "$work/kroot"
  depmod -b "$work/kroot" "$kver"
  rm -rf "$kdir" && mkdir -p "$kdir" && mv "$work/kroot" "$kdir/root"
fi
kroot=$kdir/root

# vmlinux: the bzImage's payload (offset and length in its setup header) is an xz stream.
bz=$kroot/boot/vmlinuz-$kver
u() { od -An -t"u$2" -j "$1" -N "$2" "$bz" | tr -d ' '; }
setup_sects=$(u $((0x1f1)) 1); ((setup_sects)) || setup_sects=4
start=$(( (setup_sects + 1) * 512 + $(u $((0x248)) 4) ))
dd if="$bz" of="$work/payload.xz" iflag=skip_bytes,count_bytes skip="$start" count="$(u $((0x24c)) 4)" bs=1M status=none
# --single-stream: the kernel build appends the uncompressed size after the xz stream.
xz -dc --single-stream <"$work/payload.xz" >"$work/vmlinux" ||
  die "could not extract vmlinux from $bz (payload not xz?)"

# The initramfs tree.
r=$work/root
# Merged /usr as on Debian 12, so the libraries land where ldd found them.
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,usr/lib/modules/"$kver",usr/lib64,etc,proc,sys,dev,run,tmp,mnt,var,root}
ln -s usr/lib "$r/lib" && ln -s usr/lib64 "$r/lib64" && ln -s /run "$r/var/run"
cp /bin/busybox "$r/bin/busybox"
/bin/busybox --list | while read -r applet; do [[ $applet == busybox ]] || ln -s busybox "$r/bin/$applet"; done
ln -s /bin/busybox "$r/sbin/modprobe"
for f in $files; do
  [[ $f == /bin/busybox ]] && continue
  mkdir -p "$r$(dirname "$f")"
  cp -L "$f" "$r$f"
done
for t in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do  # the tools under their usual names, ahead of busybox's
  p=$(command -v "$t") || continue
  [[ -e $r$p ]] || { mkdir -p "$r$(dirname "$p")"; ln -s "$(readlink -f "$p")" "$r$p"; }
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
printf 'root:x:0:\n' >"$r/etc/group"
printf 'hosts: files\n' >"$r/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$r/etc/hosts"

# Modules: the closure of MODULES, in load order, plus the netfilter directories.
: >"$r/etc/modules.load"
for m in "${MODULES[@]}"; do
  modprobe --show-depends -d "$kroot" -S "$kver" "$m" | sed -n 's/^insmod //p' | while read -r ko _; do
    rel=${ko#"$kroot"/lib/modules/"$kver"/}
    grep -qx "$rel" "$r/etc/modules.load" || echo "$rel" >>"$r/etc/modules.load"
  done
done
{ cat "$r/etc/modules.load"; for d in "${MODULE_DIRS[@]}"; do (cd "$kroot/lib/modules/$kver" && find "$d" -name '*.ko'); done; } | sort -u |
  while read -r rel; do mkdir -p "$r/lib/modules/$kver/$(dirname "$rel")"; cp "$kroot/lib/modules/$kver/$rel" "$r/lib/modules/$kver/$rel"; done
cp "$kroot/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$r/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$r" "$kver"

cp "$HERE/init.sh" "$r/init"
chmod 755 "$r/init"
# Uncompressed: unpacking is faster than decompressing under TCG.
(cd "$r" && find . | cpio -o -H newc --quiet) >"$work/initrd.img"
mkdir -p "$out.tmp" && mv "$work/vmlinux" "$work/initrd.img" "$out.tmp/" && rm -rf "$out" && mv "$out.tmp" "$out"
touch "$kdir"
find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -mtime +7 -exec rm -rf {} + 2>/dev/null || true
log "built $out in $(( $(date +%s) - started ))s ($(du -sh "$out/initrd.img" | cut -f1) initramfs)"
echo "$out"
