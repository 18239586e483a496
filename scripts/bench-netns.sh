#!/usr/bin/env bash
# bench-netns.sh: CPU per forwarded packet of the gateway, vipgate vs the
# Linux kernel's nftables DNAT, on the same namespace topology and the same
# UDP generator, plus a baseline without any gateway. See bench/README.md
# for the method and its caveats.
#
# Run as root from the repository root after `cargo build --release`:
#   scripts/bench-netns.sh [COUNT] [RATE]
# COUNT datagrams per run (default 1000000), RATE datagrams/s (default
# 200000; 0 = as fast as the client socket goes). Runs vipgate, the kernel
# and the baseline interleaved, REPS times (default 3), and prints per-run
# rows and medians.
#
# Uses only 198.18.0.0/15, only namespaces it creates (prefixes bvg<n>,
# bkn<n>, bdr<n>, n from its pid), deletes them on every path (trap), ends
# only processes it started (by pid), and is bounded in time (the whole
# script runs under timeout(1), WATCHDOG seconds, default 900; each
# generator run stops after MAXSECS).
set -euo pipefail

if [[ -z ${BENCH_NETNS_INNER:-} ]]; then
    BENCH_NETNS_INNER=1 exec timeout --signal=TERM --kill-after=60 "${WATCHDOG:-900}" "$0" "$@"
fi

COUNT=${1:-1000000}
RATE=${2:-200000}
REPS=${REPS:-3}
FLOWS=${FLOWS:-64}
PAYLOAD=${PAYLOAD:-18}          # 18 B payload: 60-byte frames on the wire
MAXSECS=${MAXSECS:-60}          # per generator run

cd "$(dirname "$0")/.."
VIPGATE=$PWD/target/release/vipgate
[[ $EUID -eq 0 ]] || { echo "run as root" >&2; exit 2; }
[[ -x $VIPGATE ]] || { echo "build first: cargo build --release" >&2; exit 2; }
for tool in nft ip gcc taskset ethtool python3 timeout; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done

TAG=$(( $$ % 100000 ))
LAB=bvg$TAG                     # vipgate lab name (its namespaces: $LAB-cli/-gw/-srv)
KN=bkn$TAG                      # kernel candidate: $KN-cli/-gw/-srv
DN=bdr$TAG                      # baseline without gateway: $DN-cli/-srv
TMP=$(mktemp -d /tmp/bench-netns.XXXXXX)
GEN_PID=""
LAB_UP=0

cleanup() {
    set +e
    [[ -n $GEN_PID ]] && kill "$GEN_PID" 2>/dev/null
    if [[ $LAB_UP == 1 ]]; then
        timeout 30 "$VIPGATE" lab down --name "$LAB" >/dev/null 2>&1
    fi
    for ns in "$KN-cli" "$KN-gw" "$KN-srv" "$DN-cli" "$DN-srv" \
              "$LAB-cli" "$LAB-gw" "$LAB-srv"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gcc -O2 -Wall -o "$TMP/udpflood" bench/udpflood.c
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- helpers
#
# CPU time is read per task, never from /proc/stat: this kernel counts
# /proc/stat by sampling at the tick (no IRQ_TIME_ACCOUNTING), which misses
# periodic sleepers (a daemon that wakes every millisecond) and mixes in
# every other process of the machine. utime+stime in /proc/<pid>/stat and
# getrusage(2) are scaled to the scheduler's exact runtime; only their unit
# (the jiffy) is coarse, so runs must last seconds.

# utime+stime (jiffies) of a whole process (all threads).
proc_jiffies() {
    awk '{print $14+$15}' "/proc/$1/stat"
}

# The ksoftirqd threads: softirq work the kernel defers out of the sending
# task lands there.
KSOFTIRQD=$(for d in /proc/[0-9]*; do
    if [[ $(cat "$d/comm" 2>/dev/null) == ksoftirqd/* ]]; then echo "${d#/proc/}"; fi
done)
ksoftirqd_jiffies() {
    local sum=0 pid
    for pid in $KSOFTIRQD; do sum=$(( sum + $(proc_jiffies "$pid") )); done
    echo "$sum"
}

# Packets counted by the sink rule in a backend namespace.
sink_packets() {
    ip netns exec "$1" nft list chain inet bvgsink in |
        awk '/counter packets/{for(i=1;i<=NF;i++) if($i=="packets") print $(i+1)}'
}

# tx_packets of a link in a namespace.
link_tx() { # ns link
    ip netns exec "$1" cat "/sys/class/net/$2/statistics/tx_packets"
}

# Sum of the vipgate workers' `forwarded` counters.
vg_forwarded() {
    "$VIPGATE" status --json --socket "/run/vipgate/lab/$LAB/control.sock" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(w["counters"]["forwarded"] for w in d["workers"]))'
}

# The sink: backend hosts drop the datagrams on input (counted), so nothing
# answers and no ICMP port-unreachable comes back through the gateway.
add_sink() {
    ip netns exec "$1" nft -f - <<'NFT'
table inet bvgsink {
    chain in {
        type filter hook input priority 0; policy accept;
        udp dport 80-82 counter drop
    }
}
NFT
}

link_setup() { # ns link
    ip -n "$1" link set "$2" up
    ip -n "$1" link set lo up
    # As the lab and the daemon do: wire-sized frames.
    ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
}

# Kernel candidate: the lab's topology, built here, with nftables DNAT.
kernel_up() {
    ip netns add "$KN-cli"
    ip netns add "$KN-gw"
    ip netns add "$KN-srv"
    ip -n "$KN-gw" link add vg-cli type veth peer name c0 netns "$KN-cli"
    ip -n "$KN-gw" link add vg-srv type veth peer name s0 netns "$KN-srv"
    ip -n "$KN-gw" addr add 198.18.0.1/24 dev vg-cli
    ip -n "$KN-gw" addr add 198.18.20.1/24 dev vg-srv
    ip -n "$KN-cli" addr add 198.18.0.2/24 dev c0
    ip -n "$KN-srv" addr add 198.18.20.2/24 dev s0
    link_setup "$KN-gw" vg-cli
    link_setup "$KN-gw" vg-srv
    link_setup "$KN-cli" c0
    link_setup "$KN-srv" s0
    ip -n "$KN-cli" route add 198.18.10.10/32 via 198.18.0.1 dev c0
    ip -n "$KN-srv" route add default via 198.18.20.1 dev s0
    ip netns exec "$KN-gw" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$KN-gw" nft -f - <<'NFT'
table ip bvgnat {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr 198.18.10.10 udp dport 7 dnat to 198.18.20.2 : numgen inc mod 3 map { 0 : 80, 1 : 81, 2 : 82 }
    }
}
NFT
    add_sink "$KN-srv"
}

# Baseline: no gateway. The client host sits on the backend link itself;
# the same generator and sink show what a packet costs at both ends.
direct_up() {
    ip netns add "$DN-cli"
    ip netns add "$DN-srv"
    ip -n "$DN-cli" link add c0 type veth peer name s0 netns "$DN-srv"
    ip -n "$DN-cli" addr add 198.18.20.3/24 dev c0
    ip -n "$DN-srv" addr add 198.18.20.2/24 dev s0
    link_setup "$DN-cli" c0
    link_setup "$DN-srv" s0
    add_sink "$DN-srv"
}

vipgate_up() {
    "$VIPGATE" lab up --name "$LAB" --workers 1 >"$TMP/lab-up.log" 2>&1 || {
        cat "$TMP/lab-up.log" >&2
        return 1
    }
    LAB_UP=1
    add_sink "$LAB-srv"
}

vipgate_down() {
    timeout 30 "$VIPGATE" lab down --name "$LAB" >/dev/null 2>&1 || true
    LAB_UP=0
}

# Runs the generator in a client namespace, pinned to CPU 0.
generate() { # ns count rate dst port
    ip netns exec "$1" taskset -c 0 "$TMP/udpflood" "$4" "$5" "$2" "$FLOWS" 40000 "$3" \
        "$PAYLOAD" "$MAXSECS" >"$TMP/gen.out" &
    GEN_PID=$!
    wait "$GEN_PID" || true
    GEN_PID=""
    cat "$TMP/gen.out"
}

# One measured run; prints a TSV row (columns: see the header in main). ns
# values are CPU time per packet the sink received: total = generator
# (including the softirq work done inline in its send calls: for veth, the
# receive side runs there) + vipgate daemon (all threads, including the
# softirq work inline in its sends) + ksoftirqd threads.
run_once() { # candidate
    local cand=$1 cli srv link gwns dst=198.18.10.10 port=7 daemon=""
    case $cand in
        vipgate) cli=$LAB-cli srv=$LAB-srv gwns=$LAB-gw link=vg-srv
                 daemon=$(tail -n 1 "/run/vipgate/lab/$LAB/pids") ;;
        kernel)  cli=$KN-cli srv=$KN-srv gwns=$KN-gw link=vg-srv ;;
        direct)  cli=$DN-cli srv=$DN-srv gwns=$DN-cli link=c0 dst=198.18.20.2 port=80 ;;
    esac
    # Warm-up: ARP/neighbour resolution, NAT state for all flows.
    generate "$cli" 20000 50000 "$dst" "$port" >/dev/null
    sleep 1
    # The idle daemon's own CPU over 2 s (its polling without traffic).
    local d0=0 d1=0
    [[ -n $daemon ]] && d0=$(proc_jiffies "$daemon")
    sleep 2
    [[ -n $daemon ]] && d1=$(proc_jiffies "$daemon")
    # Measured run.
    local s0 t0 f0=0 k0 dm0=0 s1 t1 f1=0 k1 dm1=0 gen
    s0=$(sink_packets "$srv"); t0=$(link_tx "$gwns" "$link")
    [[ $cand == vipgate ]] && f0=$(vg_forwarded)
    [[ -n $daemon ]] && dm0=$(proc_jiffies "$daemon")
    k0=$(ksoftirqd_jiffies)
    gen=$(generate "$cli" "$COUNT" "$RATE" "$dst" "$port")
    sleep 0.3   # let the ring drain
    k1=$(ksoftirqd_jiffies)
    [[ -n $daemon ]] && dm1=$(proc_jiffies "$daemon")
    s1=$(sink_packets "$srv"); t1=$(link_tx "$gwns" "$link")
    [[ $cand == vipgate ]] && f1=$(vg_forwarded)
    python3 - "$cand" "$gen" "$((s1 - s0))" "$((t1 - t0))" "$((f1 - f0))" \
        "$((dm1 - dm0))" "$((k1 - k0))" "$((d1 - d0))" "$CLK_TCK" <<'PY'
import sys
cand, gen, deliv, tx, fwd, dm, ksoft, idle_dm, hz = sys.argv[1:]
g = dict(kv.split("=") for kv in gen.split())
deliv, tx, fwd, dm, ksoft, idle_dm, hz = map(int, (deliv, tx, fwd, dm, ksoft, idle_dm, hz))
ns = 1e9 / hz
n = max(deliv, 1)
gen_ns = (int(g["utime_us"]) + int(g["stime_us"])) * 1000
total = gen_ns + (dm + ksoft) * ns
print("\t".join(str(x) for x in [
    cand, g["sent"], tx, deliv, fwd if cand == "vipgate" else "-",
    f"{total / n:.0f}",
    f"{gen_ns / n:.0f}",
    f"{dm * ns / max(fwd, 1):.0f}" if cand == "vipgate" else "-",
    f"{ksoft * ns / n:.0f}",
    f"{100 * idle_dm / (2 * hz):.1f}" if cand == "vipgate" else "-",
    f"{int(g['elapsed_ns']) / 1e9:.2f}",
]))
PY
}

# ------------------------------------------------------------------- main

echo "bench-netns: $(date -u +%F) $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
     "count=$COUNT rate=$RATE flows=$FLOWS payload=$PAYLOAD reps=$REPS" \
     "cpus=$(nproc) kernel=$(uname -r)"
kernel_up
direct_up
ROWS=$TMP/rows.tsv
printf 'cand\tsent\ttx\tdelivered\tvg_fwd\ttotal_ns\tgen_ns\tdaemon_ns\tksoftirqd_ns\tidle_daemon%%\tsecs\n'
for rep in $(seq 1 "$REPS"); do
    vipgate_up
    run_once vipgate | tee -a "$ROWS"
    vipgate_down
    run_once kernel | tee -a "$ROWS"
    run_once direct | tee -a "$ROWS"
done

echo
echo "medians over $REPS runs, ns of CPU per packet received by the sink:"
python3 - "$ROWS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def med(cand, i):
    vals = [float(r[i]) for r in rows if r[0] == cand and r[i] != "-"]
    return statistics.median(vals) if vals else float("nan")
def loss(cand):
    return statistics.median(1 - int(r[3]) / max(int(r[1]), 1) for r in rows if r[0] == cand)
base = med("direct", 5)
gw = {}
for cand in ("vipgate", "kernel", "direct"):
    total = med(cand, 5)
    gw[cand] = total - base
    extra = (f"  daemon/forwarded={med(cand, 7):.0f}  idle_daemon%={med(cand, 9):.1f}"
             if cand == "vipgate" else "")
    print(f"  {cand:8} total={total:.0f}  gateway=total-direct={gw[cand]:.0f}"
          f"  generator={med(cand, 6):.0f}  ksoftirqd={med(cand, 8):.0f}"
          f"  loss={loss(cand):.4f}{extra}")
print(f"  ratio vipgate/kernel, gateway CPU per packet: {gw['vipgate'] / gw['kernel']:.2f}")
print(f"  ratio vipgate/kernel, total CPU per packet:   {med('vipgate', 5) / med('kernel', 5):.2f}")
PY
