//! TCP sockets for BGP sessions: the connecting socket of an active peer
//! and the speaker's listening socket, with TCP MD5 (RFC 2385) and GTSM
//! (RFC 5082) applied before the first segment.
//!
//! Owns: socket creation, binding and the per-socket options (TTL 255 and
//! a minimum TTL of 255 for GTSM, MD5 keys, TCP_NODELAY). The setsockopt
//! FFI itself lives in `sockopt`.
//!
//! Must not touch: BGP state (the `speaker` runs sessions over the streams
//! returned here).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::sockopt;

/// The TTL GTSM sends with and requires (RFC 5082: 255 for directly
/// connected peers).
pub const GTSM_TTL: u8 = 255;

/// Per-peer socket security: MD5 key and GTSM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketSecurity {
    /// TCP MD5 signature key (RFC 2385).
    pub md5_key: Option<Vec<u8>>,
    /// GTSM (RFC 5082): send with TTL 255, accept only TTL 255.
    pub ttl_security: bool,
}

/// Connect to `peer`, from `local` if given, within `timeout`.
pub async fn connect(
    peer: SocketAddr,
    local: Option<IpAddr>,
    security: &SocketSecurity,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let v6 = peer.is_ipv6();
    let socket = if v6 {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(key) = &security.md5_key {
        sockopt::set_tcp_md5(&socket, v6, peer.ip(), key)?;
    }
    if security.ttl_security {
        gtsm(&socket, v6, peer.ip())?;
    }
    if let Some(local) = local {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(peer))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Listen on `addr` (an IPv6 wildcard also accepts IPv4 peers) with the
/// MD5 key of every peer that has one. With any GTSM peer, the listener
/// sends with TTL 255, so SYN-ACKs pass the peer's check; the minimum TTL
/// is set per accepted connection ([`accepted`]), since other peers may
/// not use GTSM. Must run inside a tokio runtime.
pub fn listen(addr: SocketAddr, peers: &[(IpAddr, SocketSecurity)]) -> io::Result<TcpListener> {
    let v6 = addr.is_ipv6();
    let socket = if v6 {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    if v6 && addr.ip().is_unspecified() {
        SockRef::from(&socket).set_only_v6(false)?;
    }
    for (peer, security) in peers {
        if let Some(key) = &security.md5_key {
            sockopt::set_tcp_md5(&socket, v6, *peer, key)?;
        }
    }
    if peers.iter().any(|(_, s)| s.ttl_security) {
        send_ttl(&SockRef::from(&socket), v6, true)?;
    }
    socket.bind(addr)?;
    socket.listen(64)
}

/// Options for a connection the listener accepted from a peer with
/// `security`.
pub fn accepted(stream: &TcpStream, security: &SocketSecurity) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if security.ttl_security {
        let v6 = stream.local_addr()?.is_ipv6();
        gtsm(stream, v6, stream.peer_addr()?.ip())?;
    }
    Ok(())
}

/// GTSM on one connection's socket: TTL 255 out, minimum TTL 255 in.
fn gtsm(socket: &impl std::os::fd::AsFd, v6_socket: bool, peer: IpAddr) -> io::Result<()> {
    let peer_v4 = peer.to_canonical().is_ipv4();
    send_ttl(&SockRef::from(socket), v6_socket, peer_v4)?;
    // An IPv4 peer on an IPv6 socket arrives through the IPv4 stack, which
    // checks IP_MINTTL.
    if peer_v4 {
        sockopt::set_min_ttl(socket, false, GTSM_TTL)
    } else {
        sockopt::set_min_ttl(socket, true, GTSM_TTL)
    }
}

fn send_ttl(socket: &SockRef<'_>, v6_socket: bool, ipv4: bool) -> io::Result<()> {
    if v6_socket {
        socket.set_unicast_hops_v6(u32::from(GTSM_TTL))?;
    }
    if !v6_socket || ipv4 {
        socket.set_ttl_v4(u32::from(GTSM_TTL))?;
    }
    Ok(())
}
