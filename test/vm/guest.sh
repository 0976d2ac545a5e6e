#!/bin/bash
# SPDX-License-Identifier: MIT
# PID 1 of the QEMU guest after switch_root into the read-only host root (see
# test/vm/run). Loads mrsync.ko, runs the test binaries listed in the
# manifest (or the benchmark), unloads the module, scans dmesg, writes the
# verdict to the results share and powers off.
#
# Results share (/run/mrsync-vm): config (from the host), output.log (test
# output), dmesg.log, bench.json, exit_code (written last).
R=/run/mrsync-vm
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# the host root is read-only, /tmp included (a build dir may live there):
# scratch space is a tmpfs under /run
export HOME=/run/tmp TMPDIR=/run/tmp LANG=C.UTF-8
# shellcheck source=/dev/null
. "$R/config" # MODE, KO, MANIFEST, TEST_TIMEOUT, FILTER

out="$R/output.log"
: >"$out"
log() { echo "mrsync-vm: $*" >>"$out"; }

finish() {
	dmesg >"$R/dmesg.log" 2>&1
	echo "$1" >"$R/exit_code"
	sync
	/bin/busybox poweroff -f
	echo o >/proc/sysrq-trigger
	sleep 30
}

# Kernel messages that fail the run: any of them after boot means the module
# (or a test of it) broke the kernel.
BAD='WARNING:|BUG:|Oops|general protection|kernel BUG|Call Trace|UBSAN|list_(add|del) corruption|refcount_t:|soft lockup|hard LOCKUP|rcu_.*stall|blocked for more than|Kernel panic'

dmesg -C # the boot log is not ours to judge
rc=0

load_module() {
	if ! insmod "$KO" >>"$out" 2>&1; then
		log "insmod $KO failed"
		return 1
	fi
	# devtmpfs creates the node; wait for it (it is synchronous, but be safe)
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		[ -c /dev/mrsync ] && return 0
		sleep 0.1
	done
	log "/dev/mrsync did not appear"
	return 1
}

unload_module() {
	if ! rmmod mrsync >>"$out" 2>&1; then
		log "rmmod mrsync failed (a file or a watch leaked?)"
		return 1
	fi
	if [ -e /sys/module/mrsync ] || [ -e /dev/mrsync ]; then
		log "the module left something behind after rmmod"
		return 1
	fi
	return 0
}

# Soft-RoCE for the verbs tests: rxe0 on one end of a veth pair (loopback on
# one device; two rxe devices in one guest do not talk). A failure is logged
# and the verbs tests then fail (MRSYNC_VM_GUEST tells them not to skip).
export MRSYNC_VM_GUEST=1
setup_softroce() {
	{
		modprobe rdma_rxe &&
		ip link set lo up &&
		ip link add veth0 type veth peer name veth1 &&
		ip addr add 10.77.0.1/24 dev veth0 &&
		ip addr add 10.77.0.2/24 dev veth1 &&
		ip link set veth0 up && ip link set veth1 up &&
		rdma link add rxe0 type rxe netdev veth0
	} >>"$out" 2>&1 || { log "Soft-RoCE setup failed"; return 1; }
	for _ in $(seq 50); do # the RoCE v2 IPv4 GID appears once the address is up
		grep -qs "ffff:0a4d" /sys/class/infiniband/rxe0/ports/1/gids/* && return 0
		sleep 0.1
	done
	log "rxe0 has no IPv4 GID"
	return 1
}

# VFIO for the vfio driver's tests (test/vm/vfio_test.cc): QEMU's edu device,
# behind intel-iommu (test/vm/run), bound to vfio-pci. dma_entry_limit: the
# benchmark maps 1 GiB in 4 KiB entries (262144 mappings; the default allows
# 65535). A failure is logged and the vfio tests then fail.
setup_vfio() {
	local dev group
	dev=$(grep -l 0x11e8 /sys/bus/pci/devices/*/device 2>/dev/null | head -n 1)
	[ -n "$dev" ] || { log "no edu device (QEMU -device edu)"; return 1; }
	dev=${dev%/device}
	{
		modprobe vfio_iommu_type1 dma_entry_limit=1048576 &&
		modprobe vfio-pci &&
		echo 1234 11e8 >/sys/bus/pci/drivers/vfio-pci/new_id
	} >>"$out" 2>&1 || { log "binding edu to vfio-pci failed"; return 1; }
	group=$(basename "$(readlink "$dev/iommu_group")")
	for _ in $(seq 50); do
		[ -c "/dev/vfio/$group" ] && return 0
		sleep 0.1
	done
	log "/dev/vfio/$group did not appear"
	return 1
}

# Two e1000 NICs (test/vm/run puts them at 00:10.0 and 00:11.0, on one QEMU
# hub) bound to vfio-pci for mrpmd on DPDK's net_e1000_em PMD (docs/vfio.md,
# "mrpmd on e1000"). No kernel driver claims them first: without udev nothing
# loads e1000.ko. After setup_vfio (vfio-pci loaded). The hugepages DPDK
# needs are reserved by the test itself (test/vm/mrpmd_e1000.cc).
setup_e1000() {
	local bdf group
	echo 8086 100e >/sys/bus/pci/drivers/vfio-pci/new_id 2>>"$out" ||
		{ log "binding e1000 to vfio-pci failed"; return 1; }
	for bdf in 0000:00:10.0 0000:00:11.0; do
		[ -e "/sys/bus/pci/devices/$bdf" ] || { log "no e1000 at $bdf"; return 1; }
		group=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")")
		for _ in $(seq 50); do
			[ -c "/dev/vfio/$group" ] && break
			sleep 0.1
		done
		[ -c "/dev/vfio/$group" ] || { log "/dev/vfio/$group ($bdf) did not appear"; return 1; }
	done
}

# Runs every manifest entry of kind $1 ('test', or 'long' for test/vm/run --long).
run_tests() {
	local want=$1 kind name path args status
	setup_softroce
	setup_vfio && setup_e1000
	# Hugepages for the torture: its hugepage buffers and the SysV shm it
	# attaches over them (Debian 6.1's io_uring pins no 4 KiB SysV shm).
	echo 16 >/proc/sys/vm/nr_hugepages || log "cannot reserve hugepages"
	load_module || return 1
	while IFS=$'\t' read -r kind name path args; do
		[ "$kind" = "$want" ] || continue
		if [ -n "$FILTER" ] && ! [[ $name =~ $FILTER ]]; then
			continue
		fi
		log "=== $name: $path $args"
		local t0=$SECONDS
		# shellcheck disable=SC2086
		timeout -k 5 "$TEST_TIMEOUT" "$path" $args >>"$out" 2>&1
		status=$?
		log "=== $name: exit $status ($((SECONDS - t0)) s)"
		[ $status -eq 0 ] || rc=1
	done <"$MANIFEST"
	unload_module || rc=1
	return $rc
}

# Rounds alternate "no module" and "module loaded", so that drift of the
# emulated machine hits both alike; the report takes the medians.
BENCH_ROUNDS=3
run_bench() {
	local bench samples=$R/bench-samples.txt round
	bench=$(awk -F'\t' '$1 == "bench" { print $3; exit }' "$MANIFEST")
	if [ -z "$bench" ]; then
		log "no bench binary in $MANIFEST"
		return 1
	fi
	: >"$samples"
	for round in $(seq "$BENCH_ROUNDS"); do
		log "=== bench round $round: without the module"
		timeout -k 5 "$TEST_TIMEOUT" "$bench" --phase=nomod --samples="$samples" \
			>>"$out" 2>&1 || return 1
		load_module || return 1
		log "=== bench round $round: with the module"
		timeout -k 5 "$TEST_TIMEOUT" "$bench" --phase=mod --samples="$samples" \
			>>"$out" 2>&1 || return 1
		unload_module || return 1
	done
	"$bench" --phase=report --samples="$samples" >"$R/bench.json" 2>>"$out" || return 1
	# The other benchmarks listed as bench-<what> (the verbs driver's
	# registration-cost table, the cache with the module as its source),
	# on Soft-RoCE with the module loaded; each one's output goes to
	# bench-<name>.txt.
	local kind name path args
	setup_softroce || return 1
	setup_vfio || return 1
	load_module || return 1
	while IFS=$'\t' read -r kind name path args; do
		case "$kind" in bench-*) ;; *) continue ;; esac
		log "=== $name"
		# shellcheck disable=SC2086
		timeout -k 5 "$TEST_TIMEOUT" "$path" $args >"$R/bench-$name.txt" 2>>"$out" || return 1
		cat "$R/bench-$name.txt" >>"$out"
	done <"$MANIFEST"
	unload_module
}

case "$MODE" in
test | long) run_tests "$MODE" || rc=1 ;;
shell)
	load_module
	echo "mrsync-vm: module loaded; the tests are listed in $MANIFEST; exit to power off"
	bash -i
	rc=0
	;;
bench) run_bench || rc=1 ;;
*) log "unknown MODE '$MODE'"; rc=1 ;;
esac

if dmesg | grep -Eq "$BAD"; then
	log "dmesg has warnings or oopses:"
	dmesg | grep -E -B2 -A20 "$BAD" >>"$out"
	rc=1
fi
log "guest verdict: $rc"
finish "$rc"
