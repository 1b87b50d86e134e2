#!/bin/sh
# The VM tier's guest /init (busybox sh). The host's harness (vm/src/lib.rs) shares a folder
# as 9p tag `out` holding:
#   plan        one test a line: ID BINARY TEST-NAME (run in this order, one at a time)
#   mounts      read-only 9p shares to mount: TAG PATH (the host's workspace and target
#               directory, at the host's own paths, so test binaries find their siblings)
#   env         sourced: WEFT_VM_APISERVER_PORT (the host's API server on its loopback, or
#               0), WEFT_VM_FORWARD (the weft-vm-forward binary that carries it),
#               WEFT_VM_TEST_TIMEOUT (seconds per test), and exports WEFT_TEST_PATIENCE (the
#               factor the tests' waits are stretched by under emulation)
#   debug.sh    optional: commands run before the plan (output in debug.log)
#   kubeconfig  the host's, if any, used as it is: 127.0.0.1:PORT is forwarded to the host
# and gets back results/ID.log (the test's output) and results/ID.rc (its exit code; absent
# if it never finished), timings and boot.log. Then the guest powers off.
# Note: this busybox prefers its own applets inside its shell whatever PATH says; the tests
# exec Debian's ip/nft/ping through PATH. Call those by full path here (/usr/sbin/ip).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run && mkdir -p /run/netns
mount -t tmpfs tmpfs /tmp
[ -d /sys/fs/cgroup ] && mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

kver=$(uname -r)
while read -r ko; do
  insmod "/lib/modules/$kver/$ko" 2>/dev/null
done </etc/modules.load

die() { echo "weft-vm guest: $*"; poweroff -f; }
mkdir -p /vm-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /vm-out || die "cannot mount the out share"
exec >>/vm-out/boot.log 2>&1
echo "boot $(cut -d' ' -f1 /proc/uptime)s: kernel $kver"
while read -r tag path; do
  mkdir -p "$path" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro "$tag" "$path" ||
    die "cannot mount $tag at $path"
done </vm-out/mounts
. /vm-out/env

ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
# The kubeconfig names https://127.0.0.1:PORT with a certificate for 127.0.0.1: carry the
# guest's loopback PORT to the host's (QEMU's user network reaches it as 10.0.2.2).
if [ "$WEFT_VM_APISERVER_PORT" != 0 ]; then
  "$WEFT_VM_FORWARD" "127.0.0.1:$WEFT_VM_APISERVER_PORT" "10.0.2.2:$WEFT_VM_APISERVER_PORT" &
fi
[ -s /vm-out/kubeconfig ] && export KUBECONFIG=/vm-out/kubeconfig
export RUST_BACKTRACE=1

# A developer's hook: commands to try in the guest before the plan.
[ -f /vm-out/debug.sh ] && sh /vm-out/debug.sh >/vm-out/debug.log 2>&1

mkdir -p /vm-out/results
echo "tests $(cut -d' ' -f1 /proc/uptime)s"
while read -r id binary test; do
  start=$(cut -d' ' -f1 /proc/uptime)
  (cd /tmp && timeout "$WEFT_VM_TEST_TIMEOUT" "$binary" --exact "$test" --nocapture --test-threads 1) \
    >"/vm-out/results/$id.log" 2>&1 </dev/null
  rc=$?
  echo "$rc" >"/vm-out/results/$id.rc"
  echo "$id $start $(cut -d' ' -f1 /proc/uptime) rc=$rc" >>/vm-out/timings
done </vm-out/plan
echo "done $(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
