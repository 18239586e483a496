#!/usr/bin/env bash
# bench-ecmp.sh: time from a VIP state change on a gateway to the route
# change in the upstream router's kernel FIB, with vipgate's built-in lab
# router and with BIRD 2 as the router.
#
# Runs `vipgate lab run --scenario ecmp-timing` once per router: the ECMP
# lab (client, router, two gateways in BGP "vrrp" mode, backend host) and
# ROUNDS rounds of six triggers on gw-a, each timed from the request on
# gw-a's control socket to the first matching rtnetlink route event in the
# router's namespace: drain (next hop removed), undrain (added), operator
# route withdraw / announce (route removed / added), VRRP resign (removed)
# and resume (added; includes VRRP's Master_Down_Interval). The two VRRP
# rows are also timed from the VRRP transition's own (millisecond)
# timestamp. Medians, min and max per row; the TIMING lines are for
# scripts. Backend loss is not a trigger yet (no health checks).
#
# Run as root after `cargo build --release`:
#   scripts/bench-ecmp.sh [ROUNDS]            (default 10)
# VIPGATE=path overrides the binary. The lab uses only 198.18.0.0/15 and
# 2001:db8::/32 in namespaces named bec<pid % 10000>-*, which the binary
# removes on every path; BIRD is skipped (with a note) when not installed.
set -euo pipefail
ROUNDS=${1:-10}
VIPGATE=${VIPGATE:-target/release/vipgate}
NAME=bec$(( $$ % 10000 ))

if [ ! -x "$VIPGATE" ]; then
    echo "no $VIPGATE: run cargo build --release first (or set VIPGATE)" >&2
    exit 1
fi
routers=(builtin)
if command -v bird >/dev/null && command -v birdc >/dev/null; then
    routers+=(bird)
else
    echo "note: BIRD 2 not installed (apt-get install bird2); built-in router only" >&2
fi

status=0
out=$(mktemp /tmp/bench-ecmp.XXXXXX)
trap 'rm -f "$out"; "$VIPGATE" lab down --name "$NAME" >/dev/null 2>&1 || true' EXIT INT TERM
for router in "${routers[@]}"; do
    echo "=== router: $router, $ROUNDS rounds"
    if ! "$VIPGATE" lab run --scenario ecmp-timing --router "$router" --repeat "$ROUNDS" \
        --workers 1 --name "$NAME" >"$out" 2>/dev/null; then
        status=1
    fi
    sed -n '/^figure:/,$p' "$out" | grep -v '^TIMING'
    grep '^TIMING' "$out" || true
done
exit $status
