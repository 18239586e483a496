//! The nftables `netdev` ingress table that drops the kernel's copy of
//! dataplane traffic.
//!
//! The dataplane reads frames from AF_PACKET taps, which run before the
//! ingress hook, so dropping at ingress hides exactly the dataplane's frames
//! from the kernel's stack (no RST, no ICMP unreachable, no forwarding) and
//! nothing from the dataplane. One base chain per dataplane interface, policy
//! accept, with one rule per VIP (IPv4/IPv6 destination, any protocol) and
//! one per backend endpoint (source address, L4 protocol and source port:
//! the backend's replies to clients). ARP and everything addressed to the
//! node's own addresses pass.
//!
//! Owns one table, named by the caller, created with `NFT_TABLE_F_OWNER` so
//! the kernel deletes it if the process dies without restoring. Builds the
//! rules as nf_tables expressions (see include/uapi/linux/netfilter/
//! nf_tables.h); nfnl.rs sends them. Must not touch any other table.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fmt;
use std::net::IpAddr;

use super::nfnl::{Batch, NfnlSocket, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use super::{SysError, SystemChange};

// nf_tables.h: message types.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;

// Attributes.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFT_TABLE_F_OWNER: u32 = 0x2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

// Values.
const NFPROTO_NETDEV: u8 = 5;
const NF_NETDEV_INGRESS: u32 = 0;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_PROTOCOL: u32 = 1;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// nf_tables names (tables, chains) are at most this long, NUL included.
const NFT_NAME_MAXLEN: usize = 256;

/// How errors name the NEWTABLE message.
const ADD_TABLE: &str = "add nftables table";

/// Before every other ingress user; the chain only drops, so order against
/// others matters little.
const INGRESS_PRIORITY: i32 = -500;

/// A transport protocol whose source port identifies backend replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl L4Protocol {
    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            L4Protocol::Tcp => 6,
            L4Protocol::Udp => 17,
            L4Protocol::Sctp => 132,
        }
    }
}

impl fmt::Display for L4Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
            L4Protocol::Sctp => "sctp",
        })
    }
}

/// A real server's address and port: packets from it are replies the
/// dataplane rewrites, never something for the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendEndpoint {
    pub addr: IpAddr,
    pub proto: L4Protocol,
    pub port: u16,
}

/// What the ingress table hides from the kernel, and where.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressFilter {
    /// The table's name, unique per daemon (e.g. `vipgate_<pid>`).
    pub table: String,
    /// Dataplane interfaces: one ingress chain each.
    pub interfaces: Vec<String>,
    /// Packets to these addresses are dropped (any protocol).
    pub vips: Vec<IpAddr>,
    /// Packets from these endpoints are dropped.
    pub backends: Vec<BackendEndpoint>,
    /// The node's own addresses: packets to them are accepted before the
    /// backend rules (a backend answering a health check talks to the
    /// node, not to a client). A VIP listed here is ignored.
    pub local: Vec<IpAddr>,
}

impl IngressFilter {
    /// Checks names before anything reaches the kernel.
    fn validate(&self) -> Result<(), SysError> {
        check_name("table", &self.table)?;
        let mut seen = BTreeSet::new();
        for ifname in &self.interfaces {
            if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains(['\0', '/']) {
                return Err(SysError::InvalidInput(format!(
                    "invalid interface name {ifname:?}"
                )));
            }
            if !seen.insert(ifname.as_str()) {
                return Err(SysError::InvalidInput(format!(
                    "interface {ifname:?} listed twice for nftables table {:?}",
                    self.table
                )));
            }
            check_interface_exists(ifname)?;
        }
        Ok(())
    }
}

fn check_name(kind: &str, name: &str) -> Result<(), SysError> {
    if name.is_empty() || name.len() >= NFT_NAME_MAXLEN || name.contains('\0') {
        return Err(SysError::InvalidInput(format!(
            "invalid nftables {kind} name {name:?}"
        )));
    }
    Ok(())
}

/// The kernel would say only ENOENT for a missing hook device; name it.
fn check_interface_exists(ifname: &str) -> Result<(), SysError> {
    let name = CString::new(ifname)
        .map_err(|_| SysError::InvalidInput(format!("invalid interface name {ifname:?}")))?;
    if if_index(&name) == 0 {
        return Err(SysError::NoSuchInterface {
            what: "install nftables ingress chain".into(),
            ifname: ifname.into(),
        });
    }
    Ok(())
}

/// if_nametoindex(3); 0 when there is no such interface.
#[allow(unsafe_code)]
fn if_index(name: &CString) -> u32 {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call;
    // the function only reads it.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// The ingress chain for one interface.
fn chain_name(ifname: &str) -> String {
    format!("ingress_{ifname}")
}

/// One nf_tables expression, as much of them as these rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    /// `meta <key>` into register 1.
    Meta { key: u32 },
    /// Load `len` bytes at `offset` of header `base` into register 1.
    Payload { base: u32, offset: u32, len: u32 },
    /// Register 1 must equal `data`, or the rule stops here.
    CmpEq { data: Vec<u8> },
    /// Count packets and bytes that got this far.
    Counter,
    /// Verdict: drop.
    Drop,
    /// Verdict: accept (the kernel gets the packet).
    Accept,
}

/// The expressions of the rule that drops packets to `vip`:
/// `meta protocol ip ip daddr <vip> counter drop` (or the IPv6 form).
fn vip_rule(vip: IpAddr) -> Vec<Expr> {
    let (ethertype, offset, addr) = match vip {
        IpAddr::V4(a) => (ETH_P_IP, 16, a.octets().to_vec()),
        IpAddr::V6(a) => (ETH_P_IPV6, 24, a.octets().to_vec()),
    };
    network_match(ethertype, offset, addr)
        .into_iter()
        .chain([Expr::Counter, Expr::Drop])
        .collect()
}

/// `meta protocol ip ip saddr <addr> meta l4proto <p> th sport <port>
/// counter drop` (or the IPv6 form).
fn backend_rule(backend: &BackendEndpoint) -> Vec<Expr> {
    let (ethertype, offset, addr) = match backend.addr {
        IpAddr::V4(a) => (ETH_P_IP, 12, a.octets().to_vec()),
        IpAddr::V6(a) => (ETH_P_IPV6, 8, a.octets().to_vec()),
    };
    let mut exprs = network_match(ethertype, offset, addr);
    exprs.extend([
        Expr::Meta {
            key: NFT_META_L4PROTO,
        },
        Expr::CmpEq {
            data: vec![backend.proto.number()],
        },
        Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 0,
            len: 2,
        },
        Expr::CmpEq {
            data: backend.port.to_be_bytes().to_vec(),
        },
        Expr::Counter,
        Expr::Drop,
    ]);
    exprs
}

/// Match the ethertype, then an address at `offset` of the network header.
fn network_match(ethertype: u16, offset: u32, addr: Vec<u8>) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: NFT_META_PROTOCOL,
        },
        Expr::CmpEq {
            data: ethertype.to_be_bytes().to_vec(),
        },
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len: addr.len() as u32,
        },
        Expr::CmpEq { data: addr },
    ]
}

/// Every rule of one chain, VIPs first; duplicates collapse.
/// `meta protocol ip ip daddr <addr> accept` (or the IPv6 form).
fn local_rule(addr: IpAddr) -> Vec<Expr> {
    let (ethertype, offset, bytes) = match addr {
        IpAddr::V4(a) => (ETH_P_IP, 16, a.octets().to_vec()),
        IpAddr::V6(a) => (ETH_P_IPV6, 24, a.octets().to_vec()),
    };
    let mut exprs = network_match(ethertype, offset, bytes);
    exprs.push(Expr::Accept);
    exprs
}

fn chain_rules(filter: &IngressFilter) -> Vec<Vec<Expr>> {
    let vips: BTreeSet<IpAddr> = filter.vips.iter().copied().collect();
    let backends: BTreeSet<BackendEndpoint> = filter.backends.iter().copied().collect();
    let local: BTreeSet<IpAddr> = filter
        .local
        .iter()
        .copied()
        .filter(|a| !vips.contains(a))
        .collect();
    let accept_local = local.into_iter().map(local_rule);
    let drops = vips
        .into_iter()
        .map(vip_rule)
        .chain(backends.iter().map(backend_rule));
    // Local accepts matter only where a backend rule could match too.
    let accept_local: Vec<Vec<Expr>> = if backends.is_empty() {
        Vec::new()
    } else {
        accept_local.collect()
    };
    accept_local.into_iter().chain(drops).collect()
}

fn put_expr(batch: &mut Batch, expr: &Expr) {
    let elem = batch.nest_begin(NFTA_LIST_ELEM);
    let name = match expr {
        Expr::Meta { .. } => "meta",
        Expr::Payload { .. } => "payload",
        Expr::CmpEq { .. } => "cmp",
        Expr::Counter => "counter",
        Expr::Drop | Expr::Accept => "immediate",
    };
    batch.put_str(NFTA_EXPR_NAME, name);
    if *expr != Expr::Counter {
        let data = batch.nest_begin(NFTA_EXPR_DATA);
        put_expr_data(batch, expr);
        batch.nest_end(data);
    }
    batch.nest_end(elem);
}

fn put_expr_data(batch: &mut Batch, expr: &Expr) {
    match expr {
        Expr::Meta { key } => {
            batch.put_u32(NFTA_META_DREG, NFT_REG_1);
            batch.put_u32(NFTA_META_KEY, *key);
        }
        Expr::Payload { base, offset, len } => {
            batch.put_u32(NFTA_PAYLOAD_DREG, NFT_REG_1);
            batch.put_u32(NFTA_PAYLOAD_BASE, *base);
            batch.put_u32(NFTA_PAYLOAD_OFFSET, *offset);
            batch.put_u32(NFTA_PAYLOAD_LEN, *len);
        }
        Expr::CmpEq { data } => {
            batch.put_u32(NFTA_CMP_SREG, NFT_REG_1);
            batch.put_u32(NFTA_CMP_OP, NFT_CMP_EQ);
            let nest = batch.nest_begin(NFTA_CMP_DATA);
            batch.put_bytes(NFTA_DATA_VALUE, data);
            batch.nest_end(nest);
        }
        Expr::Drop | Expr::Accept => {
            let code = if *expr == Expr::Drop {
                NF_DROP
            } else {
                NF_ACCEPT
            };
            batch.put_u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            let data = batch.nest_begin(NFTA_IMMEDIATE_DATA);
            let verdict = batch.nest_begin(NFTA_DATA_VERDICT);
            batch.put_u32(NFTA_VERDICT_CODE, code);
            batch.nest_end(verdict);
            batch.nest_end(data);
        }
        Expr::Counter => {}
    }
}

fn add_table(batch: &mut Batch, table: &str) {
    batch.begin(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE | NLM_F_EXCL,
        NFPROTO_NETDEV,
        format!("{ADD_TABLE} netdev {table}"),
    );
    batch.put_str(NFTA_TABLE_NAME, table);
    batch.put_u32(NFTA_TABLE_FLAGS, NFT_TABLE_F_OWNER);
}

fn delete_table(batch: &mut Batch, table: &str) {
    batch.begin(
        NFT_MSG_DELTABLE,
        0,
        NFPROTO_NETDEV,
        format!("delete nftables table netdev {table}"),
    );
    batch.put_str(NFTA_TABLE_NAME, table);
}

fn add_chain(batch: &mut Batch, table: &str, ifname: &str) {
    let chain = chain_name(ifname);
    batch.begin(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        NFPROTO_NETDEV,
        format!("add nftables ingress chain {chain} on {ifname}"),
    );
    batch.put_str(NFTA_CHAIN_TABLE, table);
    batch.put_str(NFTA_CHAIN_NAME, &chain);
    let hook = batch.nest_begin(NFTA_CHAIN_HOOK);
    batch.put_u32(NFTA_HOOK_HOOKNUM, NF_NETDEV_INGRESS);
    batch.put_bytes(NFTA_HOOK_PRIORITY, &INGRESS_PRIORITY.to_be_bytes());
    batch.put_str(NFTA_HOOK_DEV, ifname);
    batch.nest_end(hook);
    batch.put_u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
    batch.put_str(NFTA_CHAIN_TYPE, "filter");
}

/// Deletes every rule of the chain (a DELRULE naming no rule).
fn flush_chain(batch: &mut Batch, table: &str, ifname: &str) {
    let chain = chain_name(ifname);
    batch.begin(
        NFT_MSG_DELRULE,
        0,
        NFPROTO_NETDEV,
        format!("flush nftables chain {chain}"),
    );
    batch.put_str(NFTA_RULE_TABLE, table);
    batch.put_str(NFTA_RULE_CHAIN, &chain);
}

fn delete_chain(batch: &mut Batch, table: &str, ifname: &str) {
    let chain = chain_name(ifname);
    batch.begin(
        NFT_MSG_DELCHAIN,
        0,
        NFPROTO_NETDEV,
        format!("delete nftables chain {chain}"),
    );
    batch.put_str(NFTA_CHAIN_TABLE, table);
    batch.put_str(NFTA_CHAIN_NAME, &chain);
}

fn add_rule(batch: &mut Batch, table: &str, ifname: &str, exprs: &[Expr]) {
    let chain = chain_name(ifname);
    batch.begin(
        NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        NFPROTO_NETDEV,
        format!("add nftables rule to chain {chain}"),
    );
    batch.put_str(NFTA_RULE_TABLE, table);
    batch.put_str(NFTA_RULE_CHAIN, &chain);
    let list = batch.nest_begin(NFTA_RULE_EXPRESSIONS);
    for expr in exprs {
        put_expr(batch, expr);
    }
    batch.nest_end(list);
}

/// Adds the rules of `filter` to the (existing, empty) chain of `ifname`.
fn add_rules(batch: &mut Batch, filter: &IngressFilter, ifname: &str, rules: &[Vec<Expr>]) {
    for rule in rules {
        add_rule(batch, &filter.table, ifname, rule);
    }
}

/// The batch that creates the whole table.
fn install_batch(batch: &mut Batch, filter: &IngressFilter) {
    let rules = chain_rules(filter);
    add_table(batch, &filter.table);
    for ifname in &filter.interfaces {
        add_chain(batch, &filter.table, ifname);
        add_rules(batch, filter, ifname, &rules);
    }
}

/// The batch that turns the table of `old` into that of `new`: chains of
/// interfaces that stay are flushed and refilled, others added or deleted.
fn update_batch(batch: &mut Batch, old: &IngressFilter, new: &IngressFilter) {
    let rules = chain_rules(new);
    for ifname in &old.interfaces {
        flush_chain(batch, &old.table, ifname);
        if !new.interfaces.contains(ifname) {
            delete_chain(batch, &old.table, ifname);
        }
    }
    for ifname in &new.interfaces {
        if !old.interfaces.contains(ifname) {
            add_chain(batch, &new.table, ifname);
        }
        add_rules(batch, new, ifname, &rules);
    }
}

/// Adds a hint to the errors a kernel without netdev nf_tables gives.
fn explain(e: SysError) -> SysError {
    match e {
        SysError::Netlink {
            what,
            source,
            detail: None,
        } if matches!(
            source.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT) | Some(libc::EPROTONOSUPPORT)
        ) =>
        {
            SysError::Netlink {
                what,
                source,
                detail: Some(
                    "nftables netdev family or ingress hook unavailable: the kernel needs \
                     CONFIG_NF_TABLES and CONFIG_NF_TABLES_NETDEV"
                        .into(),
                ),
            }
        }
        // With NFT_TABLE_F_OWNER another process's table gives EPERM, not
        // EEXIST.
        SysError::Netlink { what, source, .. }
            if what.starts_with(ADD_TABLE)
                && matches!(
                    source.raw_os_error(),
                    Some(libc::EEXIST) | Some(libc::EPERM)
                ) =>
        {
            SysError::Netlink {
                what,
                source,
                detail: Some(
                    "table already exists, owned by another process: is another vipgate running?"
                        .into(),
                ),
            }
        }
        other => other,
    }
}

/// The installed ingress table. Deleted by `restore()` or on drop; the
/// kernel also deletes it when the socket closes (process exit).
pub struct NftIngressGuard {
    socket: NfnlSocket,
    next_seq: u32,
    filter: IngressFilter,
    installed: bool,
}

impl NftIngressGuard {
    /// Creates the table, its chains and rules in one transaction.
    pub fn install(filter: &IngressFilter) -> Result<Self, SysError> {
        filter.validate()?;
        let socket = NfnlSocket::open()?;
        let mut guard = Self {
            socket,
            next_seq: 1,
            filter: filter.clone(),
            installed: false,
        };
        guard.send(|batch| install_batch(batch, filter))?;
        guard.installed = true;
        tracing::info!(
            table = %filter.table,
            interfaces = ?filter.interfaces,
            vips = filter.vips.len(),
            backends = filter.backends.len(),
            "nftables ingress table installed: kernel ignores dataplane traffic"
        );
        Ok(guard)
    }

    /// Replaces the rules (and chains) with those of `filter` atomically:
    /// packets see either the old rule set or the new one. The table name
    /// cannot change.
    pub fn update(&mut self, filter: &IngressFilter) -> Result<(), SysError> {
        if !self.installed {
            return Err(SysError::InvalidInput(format!(
                "nftables table {:?} was already removed",
                self.filter.table
            )));
        }
        if filter.table != self.filter.table {
            return Err(SysError::InvalidInput(format!(
                "cannot rename nftables table {:?} to {:?}",
                self.filter.table, filter.table
            )));
        }
        filter.validate()?;
        let old = self.filter.clone();
        self.send(|batch| update_batch(batch, &old, filter))?;
        self.filter = filter.clone();
        tracing::info!(
            table = %filter.table,
            interfaces = ?filter.interfaces,
            vips = filter.vips.len(),
            backends = filter.backends.len(),
            "nftables ingress table updated"
        );
        Ok(())
    }

    /// What the table currently holds.
    pub fn filter(&self) -> &IngressFilter {
        &self.filter
    }

    fn send(&mut self, build: impl FnOnce(&mut Batch)) -> Result<(), SysError> {
        let mut batch = Batch::new(self.next_seq);
        build(&mut batch);
        self.next_seq = batch.next_seq();
        let (bytes, sent) = batch.finish();
        self.next_seq = self.next_seq.wrapping_add(1); // BATCH_END's number
        self.socket.transact(&bytes, &sent).map_err(explain)
    }
}

impl SystemChange for NftIngressGuard {
    fn describe(&self) -> String {
        format!(
            "nftables table netdev {} on {} ({} VIPs, {} backends)",
            self.filter.table,
            self.filter.interfaces.join(","),
            self.filter.vips.len(),
            self.filter.backends.len()
        )
    }

    fn restore(&mut self) -> Result<(), SysError> {
        if !self.installed {
            return Ok(());
        }
        let table = self.filter.table.clone();
        let result = self.send(|batch| delete_table(batch, &table));
        match result {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.installed = false;
        tracing::info!(table = %table, "nftables ingress table removed");
        Ok(())
    }
}

impl Drop for NftIngressGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            // Closing the socket right after still deletes an owned table.
            tracing::error!(table = %self.filter.table, error = %e, "could not delete nftables table");
        }
    }
}

impl fmt::Debug for NftIngressGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NftIngressGuard")
            .field("filter", &self.filter)
            .field("installed", &self.installed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn rule_bytes(exprs: &[Expr]) -> Vec<u8> {
        let mut batch = Batch::new(1);
        let list = batch.nest_begin(NFTA_RULE_EXPRESSIONS);
        for e in exprs {
            put_expr(&mut batch, e);
        }
        batch.nest_end(list);
        let (bytes, _) = batch.finish();
        // Strip BATCH_BEGIN (20 bytes) and BATCH_END (20 bytes).
        bytes[20..bytes.len() - 20].to_vec()
    }

    #[test]
    fn vip_rule_matches_ethertype_and_destination() {
        let v4 = vip_rule(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)));
        assert_eq!(
            v4,
            [
                Expr::Meta {
                    key: NFT_META_PROTOCOL
                },
                Expr::CmpEq {
                    data: vec![0x08, 0x00]
                },
                Expr::Payload {
                    base: 1,
                    offset: 16,
                    len: 4
                },
                Expr::CmpEq {
                    data: vec![198, 18, 0, 100]
                },
                Expr::Counter,
                Expr::Drop,
            ]
        );
        let v6 = vip_rule(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        assert_eq!(
            v6[1],
            Expr::CmpEq {
                data: vec![0x86, 0xdd]
            }
        );
        assert_eq!(
            v6[2],
            Expr::Payload {
                base: 1,
                offset: 24,
                len: 16
            }
        );
    }

    #[test]
    fn backend_rule_matches_source_protocol_and_port() {
        let rule = backend_rule(&BackendEndpoint {
            addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            proto: L4Protocol::Udp,
            port: 8053,
        });
        assert_eq!(
            rule[2],
            Expr::Payload {
                base: 1,
                offset: 8,
                len: 16
            }
        );
        assert_eq!(
            rule[4],
            Expr::Meta {
                key: NFT_META_L4PROTO
            }
        );
        assert_eq!(rule[5], Expr::CmpEq { data: vec![17] });
        assert_eq!(
            rule[6],
            Expr::Payload {
                base: 2,
                offset: 0,
                len: 2
            }
        );
        assert_eq!(
            rule[7],
            Expr::CmpEq {
                data: vec![0x1f, 0x75]
            }
        );
        assert_eq!(rule[8..], [Expr::Counter, Expr::Drop]);
    }

    /// Hand-encoded from nf_tables.h: `meta protocol`, `cmp eq 0x0800`,
    /// `counter`, `immediate drop`.
    #[test]
    fn expressions_encode_byte_exact() {
        let bytes = rule_bytes(&[
            Expr::Meta {
                key: NFT_META_PROTOCOL,
            },
            Expr::CmpEq {
                data: vec![0x08, 0x00],
            },
            Expr::Counter,
            Expr::Drop,
        ]);
        let n = |v: u16| v.to_ne_bytes();
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            // NFTA_RULE_EXPRESSIONS, nested
            &n(4 + 36 + 44 + 16 + 48)[..], &n(0x8004),
            // elem: name "meta", data { dreg 1, key 1 }
            &n(36), &n(0x8001), &n(9), &n(1), b"meta\0\0\0\0",
            &n(20), &n(0x8002), &n(8), &n(1), &[0, 0, 0, 1], &n(8), &n(2), &[0, 0, 0, 1],
            // elem: name "cmp", data { sreg 1, op eq, data { value 08 00 } }
            &n(44), &n(0x8001), &n(8), &n(1), b"cmp\0",
            &n(32), &n(0x8002), &n(8), &n(1), &[0, 0, 0, 1], &n(8), &n(2), &[0, 0, 0, 0],
            &n(12), &n(0x8003), &n(6), &n(1), &[0x08, 0x00, 0, 0],
            // elem: name "counter", no data
            &n(16), &n(0x8001), &n(12), &n(1), b"counter\0",
            // elem: name "immediate", data { dreg 0, data { verdict { code 0 } } }
            &n(48), &n(0x8001), &n(14), &n(1), b"immediate\0\0\0",
            &n(28), &n(0x8002), &n(8), &n(1), &[0, 0, 0, 0],
            &n(16), &n(0x8002), &n(12), &n(0x8002), &n(8), &n(1), &[0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn duplicates_collapse_local_accepts_and_vips_come_first() {
        let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
        let own = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 254));
        let backend = BackendEndpoint {
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)),
            proto: L4Protocol::Tcp,
            port: 80,
        };
        let filter = IngressFilter {
            table: "t".into(),
            interfaces: vec![],
            vips: vec![vip, vip],
            backends: vec![backend, backend],
            local: vec![own, vip],
        };
        let rules = chain_rules(&filter);
        assert_eq!(
            rules,
            [local_rule(own), vip_rule(vip), backend_rule(&backend)],
            "the node's own address is accepted before the backend rule; a VIP is never"
        );
        assert_eq!(local_rule(own).last(), Some(&Expr::Accept));
    }

    #[test]
    fn update_flushes_kept_chains_and_deletes_removed_ones() {
        let old = IngressFilter {
            table: "t".into(),
            interfaces: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let new = IngressFilter {
            table: "t".into(),
            interfaces: vec!["b".into(), "c".into()],
            vips: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))],
            ..Default::default()
        };
        let mut batch = Batch::new(1);
        update_batch(&mut batch, &old, &new);
        let (_, sent) = batch.finish();
        let what: Vec<&str> = sent.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "flush nftables chain ingress_a",
                "delete nftables chain ingress_a",
                "flush nftables chain ingress_b",
                "add nftables rule to chain ingress_b",
                "add nftables ingress chain ingress_c on c",
                "add nftables rule to chain ingress_c",
            ]
        );
    }

    #[test]
    fn rejects_bad_names_before_the_kernel() {
        let mut filter = IngressFilter {
            table: String::new(),
            ..Default::default()
        };
        assert!(matches!(filter.validate(), Err(SysError::InvalidInput(_))));
        filter.table = "vipgate_test".into();
        filter.interfaces = vec!["lo".into(), "lo".into()];
        assert!(matches!(filter.validate(), Err(SysError::InvalidInput(_))));
        filter.interfaces = vec!["vgt-no-such0".into()];
        assert!(matches!(
            filter.validate(),
            Err(SysError::NoSuchInterface { .. })
        ));
    }
}
