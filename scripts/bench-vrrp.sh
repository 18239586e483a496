#!/usr/bin/env bash
# bench-vrrp.sh: CPU cost of many VRRP instances on one node.
#
# Two namespaces joined by a veth pair. On one side a master node runs N
# instances (default 200, VRIDs 1..N) with adverts every 10 cs; on the
# other a backup node runs the same N instances at a lower priority and
# receives every advert. The master and the backup are vipgate, then
# keepalived (same timers), one after the other in the same run. CPU time
# (utime + stime from /proc/PID/stat) of each process over SECS seconds
# is printed as a percentage of one core.
#
# Run as root after `cargo build --release`:  scripts/bench-vrrp.sh [N] [SECS]
# Uses only 198.18.0.0/15, namespaces bvr<pid>-a/-b, removes them on every
# path (trap), ends only processes it started (by pid), bounded in time.
set -euo pipefail
N=${1:-200}
SECS=${2:-10}
VIPGATE=${VIPGATE:-target/release/vipgate}
KEEPALIVED=${KEEPALIVED:-/usr/sbin/keepalived}
P=bvr$$
A=$P-a
B=$P-b
DIR=$(mktemp -d /tmp/bench-vrrp.XXXXXX)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

ip netns add "$A"
ip netns add "$B"
ip link add "$P"a type veth peer name "$P"b
ip link set "$P"a netns "$A"
ip link set "$P"b netns "$B"
ip -n "$A" addr add 198.18.0.2/24 dev "$P"a
ip -n "$B" addr add 198.18.0.3/24 dev "$P"b
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "$P"a up
ip -n "$B" link set "$P"b up

vipgate_conf() { # name link priority socket
    cat <<EOT
[node]
name = "$1"
control_socket = "$4"
[[interface]]
name = "$2"
[dataplane]
io = "memory"
workers = 1
conn_capacity = 1024
[[service]]
name = "web"
vip = "198.18.10.1"
port = 80
  [[service.backend]]
  address = "198.18.0.9"
[vrrp]
advert_interval = "100ms"
garp_delay = "0s"
EOT
    for i in $(seq 1 "$N"); do
        printf '[[vrrp.instance]]\nname = "v%d"\ninterface = "%s"\nvrid = %d\npriority = %d\nvips = ["198.18.%d.%d"]\n' \
            "$i" "$2" "$i" "$3" $((100 + i / 250)) $((i % 250 + 1))
    done
}

keepalived_conf() { # link priority
    echo 'global_defs { vrrp_version 3 }'
    for i in $(seq 1 "$N"); do
        printf 'vrrp_instance v%d {\n state BACKUP\n interface %s\n virtual_router_id %d\n priority %d\n advert_int 0.1\n virtual_ipaddress {\n 198.18.%d.%d/32\n }\n}\n' \
            "$i" "$1" "$i" "$2" $((100 + i / 250)) $((i % 250 + 1))
    done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # label pid
    local t0 t1
    t0=$(cpu_ticks "$2")
    sleep "$SECS"
    t1=$(cpu_ticks "$2")
    local hz
    hz=$(getconf CLK_TCK)
    awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$SECS" -v l="$1" \
        'BEGIN { printf "  %-34s %6.2f %% of one core\n", l, (b - a) / hz / s * 100 }'
}

masters_of() { # socket
    "$VIPGATE" status --json --socket "$1" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(i["state"]=="MASTER" for i in d["vrrp"]["instances"]))'
}

echo "bench-vrrp: $N instances, adverts every 10 cs, $SECS s per measurement"
echo "vipgate $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $($KEEPALIVED --version 2>&1 | head -1)"

# --- vipgate pair
vipgate_conf gw-a "$P"a 200 "$DIR/a.sock" >"$DIR/a.toml"
vipgate_conf gw-b "$P"b 100 "$DIR/b.sock" >"$DIR/b.toml"
ip netns exec "$A" "$VIPGATE" run --config "$DIR/a.toml" >"$DIR/a.log" 2>&1 &
pids+=($!); va=$!
ip netns exec "$B" "$VIPGATE" run --config "$DIR/b.toml" >"$DIR/b.log" 2>&1 &
pids+=($!); vb=$!
sleep 3
echo "vipgate: masters on a: $(masters_of "$DIR/a.sock"), on b: $(masters_of "$DIR/b.sock")"
measure "vipgate master ($N instances)" "$va" &
m1=$!
measure "vipgate backup ($N instances)" "$vb"
wait "$m1"
kill "$va" "$vb"
wait "$va" "$vb" 2>/dev/null || true

# --- keepalived pair
keepalived_conf "$P"a 200 >"$DIR/ka.conf"
keepalived_conf "$P"b 100 >"$DIR/kb.conf"
ip netns exec "$A" "$KEEPALIVED" -n -D -f "$DIR/ka.conf" -p "$DIR/ka.pid" -r "$DIR/kav.pid" >"$DIR/ka.log" 2>&1 &
pids+=($!)
ip netns exec "$B" "$KEEPALIVED" -n -D -f "$DIR/kb.conf" -p "$DIR/kb.pid" -r "$DIR/kbv.pid" >"$DIR/kb.log" 2>&1 &
pids+=($!)
sleep 3
# keepalived forks a VRRP child: that one does the work.
ka=$(cat "$DIR/kav.pid")
kb=$(cat "$DIR/kbv.pid")
pids+=("$ka" "$kb")
echo "keepalived: $(grep -c 'Entering MASTER' "$DIR/ka.log" || true) master transitions on a, $(grep -c 'Entering MASTER' "$DIR/kb.log" || true) on b"
measure "keepalived master ($N instances)" "$ka" &
m1=$!
measure "keepalived backup ($N instances)" "$kb"
wait "$m1"
