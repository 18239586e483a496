#!/usr/bin/env bash
# Runs vipgate's whole test suite: format, lints, unit and property tests,
# and the network-namespace integration tests (these need root; without
# root they print SKIPPED and pass).
#
# Installs the Debian packages the tests need when they are missing
# (apt-get, as root). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run or look with: ip (iproute2), nft (nftables),
# ethtool, curl, ping, keepalived (VRRP interop peer), tcpdump/tshark
# (captures), python3 (crafted adverts), bird2 and frr (BGP peers), nginx
# (HTTP and HTTPS health checks).
packages=(iproute2 nftables ethtool curl iputils-ping keepalived tcpdump tshark python3 bird2 frr nginx)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing missing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "missing Debian packages: ${missing[*]} (run as root to install them; namespace tests will skip)"
    fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Two test threads: the namespace tests build their own labs (distinct
# names) and the machine has two cores.
cargo test --workspace -- --test-threads=2
if [ "$(id -u)" -eq 0 ]; then cargo build -q -p vipgate -p vipgate-bench && target/debug/vipgate-bench --quick --vipgate target/debug/vipgate --out target/vipgate-bench-quick; fi  # bench harness smoke run (bench/README.md)
echo "scripts/test.sh: all tests passed"
