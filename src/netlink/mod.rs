//! A small synchronous rtnetlink client: links, addresses, routes and
//! neighbours of one network namespace.
//!
//! Owns the kernel-facing half of vipgate's network configuration: it reads
//! and changes links, addresses, routes and neighbour entries through
//! NETLINK_ROUTE, using `netlink-packet-route` for the wire format and
//! `netlink-sys` for the socket. It does not touch sysctls (`src/sys/`),
//! does not decide *what* to configure (the daemon and the lab do), and does
//! not run watchers: an event watcher opens its own [`RouteSocket`], joins
//! groups with [`RouteSocket::join_group`], reads with
//! [`RouteSocket::recv_notifications`] and decodes with, e.g.,
//! [`parse_neighbour_event`].
//!
//! An [`RtNetlink`] is bound to the namespace its socket was opened in:
//! [`RtNetlink::open`] uses the calling thread's, [`RtNetlink::open_in`]
//! opens the socket on a thread that entered the given [`NetNs`], after which
//! every call acts in that namespace from any thread. Calls block for at most
//! a few seconds (see `socket.rs`) and name the operation in their error.

mod addr;
mod link;
mod neigh;
mod route;
mod socket;

use std::io;
use std::net::IpAddr;

use crate::netns::NetNs;

pub use addr::Addr;
pub use link::Link;
pub use neigh::{parse_neighbour_event, Neighbour, NeighbourState, RTNLGRP_NEIGH};
pub use route::{
    parse_route_event, Family, PathRoute, Route, RouteEvent, RouteHit, PROTO_BGP,
    RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE,
};
pub use socket::{NetlinkError, RouteSocket};

/// An rtnetlink client bound to one network namespace.
pub struct RtNetlink {
    socket: RouteSocket,
    netns: NetNs,
}

impl RtNetlink {
    /// Opens a client in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let netns = NetNs::current()?;
        Ok(RtNetlink {
            socket: RouteSocket::open()?,
            netns,
        })
    }

    /// Opens a client in `netns` (the socket is created on a thread that
    /// entered it, so it stays bound to that namespace).
    pub fn open_in(netns: &NetNs) -> io::Result<Self> {
        let socket = netns.run(RouteSocket::open)??;
        Ok(RtNetlink {
            socket,
            netns: netns.try_clone()?,
        })
    }

    /// The namespace this client acts in.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }
}

/// Prefix length check shared by addresses and routes.
fn check_prefix(op: &str, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix_len > max {
        return Err(invalid_input(
            op,
            &format!("prefix length {prefix_len} > {max}"),
        ));
    }
    Ok(())
}

fn invalid_input(op: &str, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{op}: {why}"))
}

/// Formats a MAC address the way `ip link` prints it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}
