//! The VRRP I/O shell: one raw socket (IP protocol 112) per interface and
//! address family, non-blocking, moving VRRP payloads in and out.
//!
//! Owns: opening and configuring the socket the way keepalived does (bound
//! to the interface, TTL / hop limit 255 also for multicast, no multicast
//! loop back to ourselves, traffic class 0xc0, group membership), stripping
//! the IPv4 header the kernel hands raw IPv4 sockets, and reporting the
//! source, destination, TTL and interface of what arrived. The kernel
//! builds the IP headers on send; the source address and interface go in
//! an `IP_PKTINFO` / `IPV6_PKTINFO` control message.
//!
//! Must not touch: the VRRP message itself (`wire.rs` builds and checks
//! it, checksum included: `IPV6_CHECKSUM` is deliberately left off, so the
//! kernel neither fills nor verifies it), instance state, or timers. It
//! reads no clock; [`poll_readable`] only waits.
//!
//! `unsafe` is confined to the small FFI functions at the bottom, each with
//! its SAFETY comment. Control messages and socket addresses are read and
//! written as plain bytes, so no raw pointer is dereferenced elsewhere.

#![deny(unsafe_code)]

use std::ffi::c_int;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::wire::{MCAST_V4, MCAST_V6, VRRP_PROTO, VRRP_TTL};

/// Traffic class of VRRP traffic: IP precedence "internetwork control"
/// (DSCP CS6), as keepalived sets it.
const TOS_INTERNETWORK_CONTROL: c_int = 0xc0;
/// Shortest IPv4 header.
const IPV4_MIN_HEADER: usize = 20;
/// Control-message space for one pktinfo and one hop limit, with margin.
const CONTROL_LEN: usize = 128;
/// Space for any socket address (sizeof(struct sockaddr_storage)).
const SOCKADDR_LEN: usize = 128;
/// `IPV6_MULTICAST_ALL` (Linux 4.20), not exported by libc for every target.
const IPV6_MULTICAST_ALL: c_int = 29;
/// Retries of a system call interrupted by a signal before giving up.
const EINTR_RETRIES: usize = 8;

/// Address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// What [`VrrpSocket::open`] needs to know about the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    pub ifindex: u32,
    pub ifname: String,
    pub family: Family,
    /// Primary address of the interface for v4; link-local for v6. The
    /// source of every advert sent.
    pub source: IpAddr,
    /// Join 224.0.0.18 / ff02::12 on the interface.
    pub multicast: bool,
}

/// One received datagram: its VRRP payload is `buf[..len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    /// The packet's destination (group or our unicast address);
    /// unspecified if the kernel gave no pktinfo.
    pub dst: IpAddr,
    /// TTL (IPv4 header) or hop limit (`IPV6_HOPLIMIT`); 0 if unknown,
    /// which `wire::parse` drops as `BadTtl`.
    pub ttl: u8,
    /// Payload length in buf. A datagram larger than the buffer, or an
    /// IPv4 header that does not hold together, comes back cut short
    /// (possibly to 0), which `wire::parse` counts as truncated or bad
    /// length.
    pub len: usize,
    pub ifindex: u32,
}

/// A raw VRRP socket on one interface for one family.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: OwnedFd,
    family: Family,
    ifindex: u32,
    source: IpAddr,
}

impl VrrpSocket {
    /// Opens and configures the socket in the calling thread's network
    /// namespace: raw IPPROTO 112, non-blocking, SO_BINDTODEVICE, TTL/hop
    /// limit 255 (unicast and multicast), no multicast loop, only the
    /// groups joined, pktinfo (and v6 hop limit) on receive, traffic class
    /// 0xc0, and the VRRP group joined when `cfg.multicast`.
    pub fn open(cfg: &SocketConfig) -> io::Result<VrrpSocket> {
        let source_ok = matches!(
            (cfg.family, cfg.source),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        );
        if !source_ok {
            return Err(invalid(
                "source address family differs from the socket family",
            ));
        }
        let domain = match cfg.family {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        };
        let fd = raw_socket(domain, c_int::from(VRRP_PROTO)).map_err(|e| ctx("socket", e))?;
        let raw = fd.as_raw_fd();
        set_bytes(
            raw,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            cfg.ifname.as_bytes(),
        )
        .map_err(|e| ctx(&format!("SO_BINDTODEVICE {}", cfg.ifname), e))?;
        let ifindex = c_int::try_from(cfg.ifindex).map_err(|_| invalid("ifindex out of range"))?;
        match cfg.family {
            Family::V4 => configure_v4(raw, ifindex, cfg.multicast)?,
            Family::V6 => configure_v6(raw, ifindex, cfg.multicast)?,
        }
        Ok(VrrpSocket {
            fd,
            family: cfg.family,
            ifindex: cfg.ifindex,
            source: cfg.source,
        })
    }

    /// The socket's file descriptor, for [`poll_readable`] or an event loop.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Non-blocking receive: Ok(None) when nothing is waiting. Returns the VRRP payload bytes copied into `buf`.
    ///
    /// For IPv4 the kernel delivers the IP header; it is checked (IHL, total
    /// length), its TTL and destination reported, and the payload moved to
    /// the start of `buf`. Give a buffer of at least
    /// `20 + 40 + wire::MAX_LEN` octets to see every legal advert whole.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let mut name = [0u8; SOCKADDR_LEN];
        let mut control = ControlBuf([0; CONTROL_LEN]);
        let msg = match recv_msg(self.fd(), buf, &mut name, &mut control.0) {
            Ok(msg) => msg,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(ctx("recvmsg", e)),
        };
        let data_len = msg.len.min(buf.len());
        let control = control.0.get(..msg.control_len).unwrap_or(&[]);
        let mut got = Received {
            src: sockaddr_ip(&name[..msg.name_len.min(SOCKADDR_LEN)])
                .unwrap_or(unspecified(self.family)),
            dst: unspecified(self.family),
            ttl: 0,
            len: data_len,
            ifindex: self.ifindex,
        };
        for (level, kind, data) in ControlMessages::new(control) {
            apply_control(&mut got, level, kind, data);
        }
        if self.family == Family::V4 {
            strip_ipv4_header(buf, &mut got);
        }
        Ok(Some(got))
    }

    /// Sends `payload` (a VRRP message from `wire::emit`) to `dst`, from the
    /// configured source address out of the configured interface.
    pub fn send(&self, dst: IpAddr, payload: &[u8]) -> io::Result<()> {
        let mut control = ControlBuf([0; CONTROL_LEN]);
        let sent = match (dst, self.source) {
            (IpAddr::V4(dst), IpAddr::V4(src)) => {
                let n = pktinfo_v4(&mut control.0, self.ifindex, src);
                send_msg(self.fd(), payload, &sockaddr_v4(dst), &control.0[..n])
            }
            (IpAddr::V6(dst), IpAddr::V6(src)) => {
                let n = pktinfo_v6(&mut control.0, self.ifindex, src);
                send_msg(
                    self.fd(),
                    payload,
                    &sockaddr_v6(dst, self.ifindex),
                    &control.0[..n],
                )
            }
            _ => return Err(invalid("destination family differs from the socket family")),
        };
        let sent = sent.map_err(|e| ctx(&format!("sendmsg to {dst}"), e))?;
        if sent != payload.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short send of a VRRP advert",
            ));
        }
        Ok(())
    }
}

/// Waits until one of `fds` is readable or `timeout` passes; returns the indexes of readable fds (empty on timeout or a signal).
pub fn poll_readable(fds: &[RawFd], timeout: Duration) -> io::Result<Vec<usize>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Round up, so that a short timeout does not become a busy loop.
    let ms = timeout.as_micros().div_ceil(1000);
    let ms = c_int::try_from(ms).unwrap_or(c_int::MAX);
    match poll_fds(&mut pollfds, ms) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Vec::new()),
        Err(e) => return Err(ctx("poll", e)),
    }
    let ready = libc::POLLIN | libc::POLLERR | libc::POLLHUP;
    Ok(pollfds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents & ready != 0)
        .map(|(i, _)| i)
        .collect())
}

/// Socket options of an IPv4 VRRP socket.
fn configure_v4(fd: RawFd, ifindex: c_int, multicast: bool) -> io::Result<()> {
    let ip = libc::IPPROTO_IP;
    let ttl = c_int::from(VRRP_TTL);
    set_int(fd, ip, libc::IP_TTL, ttl).map_err(|e| ctx("IP_TTL", e))?;
    set_int(fd, ip, libc::IP_MULTICAST_TTL, ttl).map_err(|e| ctx("IP_MULTICAST_TTL", e))?;
    set_int(fd, ip, libc::IP_MULTICAST_LOOP, 0).map_err(|e| ctx("IP_MULTICAST_LOOP", e))?;
    set_int(fd, ip, libc::IP_MULTICAST_ALL, 0).map_err(|e| ctx("IP_MULTICAST_ALL", e))?;
    set_int(fd, ip, libc::IP_PKTINFO, 1).map_err(|e| ctx("IP_PKTINFO", e))?;
    set_int(fd, ip, libc::IP_TOS, TOS_INTERNETWORK_CONTROL).map_err(|e| ctx("IP_TOS", e))?;
    let mreq = libc::ip_mreqn {
        imr_multiaddr: in_addr(MCAST_V4),
        imr_address: in_addr(Ipv4Addr::UNSPECIFIED),
        imr_ifindex: ifindex,
    };
    set_struct(fd, ip, libc::IP_MULTICAST_IF, &mreq).map_err(|e| ctx("IP_MULTICAST_IF", e))?;
    if multicast {
        set_struct(fd, ip, libc::IP_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| ctx("IP_ADD_MEMBERSHIP 224.0.0.18", e))?;
    }
    Ok(())
}

/// Socket options of an IPv6 VRRP socket. `IPV6_CHECKSUM` stays off.
fn configure_v6(fd: RawFd, ifindex: c_int, multicast: bool) -> io::Result<()> {
    let ip6 = libc::IPPROTO_IPV6;
    let hops = c_int::from(VRRP_TTL);
    set_int(fd, ip6, libc::IPV6_UNICAST_HOPS, hops).map_err(|e| ctx("IPV6_UNICAST_HOPS", e))?;
    set_int(fd, ip6, libc::IPV6_MULTICAST_HOPS, hops).map_err(|e| ctx("IPV6_MULTICAST_HOPS", e))?;
    set_int(fd, ip6, libc::IPV6_MULTICAST_LOOP, 0).map_err(|e| ctx("IPV6_MULTICAST_LOOP", e))?;
    set_int(fd, ip6, IPV6_MULTICAST_ALL, 0).map_err(|e| ctx("IPV6_MULTICAST_ALL", e))?;
    set_int(fd, ip6, libc::IPV6_RECVHOPLIMIT, 1).map_err(|e| ctx("IPV6_RECVHOPLIMIT", e))?;
    set_int(fd, ip6, libc::IPV6_RECVPKTINFO, 1).map_err(|e| ctx("IPV6_RECVPKTINFO", e))?;
    set_int(fd, ip6, libc::IPV6_TCLASS, TOS_INTERNETWORK_CONTROL)
        .map_err(|e| ctx("IPV6_TCLASS", e))?;
    set_int(fd, ip6, libc::IPV6_MULTICAST_IF, ifindex).map_err(|e| ctx("IPV6_MULTICAST_IF", e))?;
    if multicast {
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: MCAST_V6.octets(),
            },
            ipv6mr_interface: ifindex.unsigned_abs(),
        };
        set_struct(fd, ip6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| ctx("IPV6_ADD_MEMBERSHIP ff02::12", e))?;
    }
    Ok(())
}

/// Records what one control message says about a received datagram.
fn apply_control(got: &mut Received, level: c_int, kind: c_int, data: &[u8]) {
    match (level, kind) {
        // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
        (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= 12 => {
            got.ifindex = ne_u32(&data[0..4]);
            got.dst = IpAddr::V4(Ipv4Addr::new(data[8], data[9], data[10], data[11]));
        }
        // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
        (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= 20 => {
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&data[..16]);
            got.dst = IpAddr::V6(Ipv6Addr::from(addr));
            got.ifindex = ne_u32(&data[16..20]);
        }
        (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) if data.len() >= 4 => {
            got.ttl = u8::try_from(ne_u32(&data[..4])).unwrap_or(0);
        }
        _ => {}
    }
}

/// Takes TTL and destination from the IPv4 header at the start of
/// `buf[..got.len]` and moves the payload to the start of `buf`. A header
/// that does not hold together leaves a payload of length 0.
fn strip_ipv4_header(buf: &mut [u8], got: &mut Received) {
    let packet = &buf[..got.len];
    let header_len = packet.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
    let valid = packet.len() >= IPV4_MIN_HEADER
        && packet[0] >> 4 == 4
        && header_len >= IPV4_MIN_HEADER
        && header_len <= packet.len();
    if !valid {
        got.len = 0;
        return;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    // The kernel trims frames to the total length; a shorter datagram
    // here was cut by our buffer.
    let end = total.clamp(header_len, packet.len());
    got.ttl = packet[8];
    got.dst = IpAddr::V4(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ));
    buf.copy_within(header_len..end, 0);
    got.len = end - header_len;
}

/// The address in a `sockaddr_in` / `sockaddr_in6` given as bytes.
fn sockaddr_ip(name: &[u8]) -> Option<IpAddr> {
    let family = c_int::from(u16::from_ne_bytes([*name.first()?, *name.get(1)?]));
    match family {
        libc::AF_INET => {
            let a = name.get(4..8)?;
            Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])))
        }
        libc::AF_INET6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(name.get(8..24)?);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: in_addr(addr),
        sin_zero: [0; 8],
    }
}

/// A `sockaddr_in6`; the scope is the interface (needed for link-local
/// destinations, ignored by the kernel for others).
fn sockaddr_v6(addr: Ipv6Addr, ifindex: u32) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        sin6_scope_id: ifindex,
    }
}

fn in_addr(addr: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from_ne_bytes(addr.octets()),
    }
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn ctx(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("VRRP socket: {what}: {e}"))
}

// Control messages as bytes. Linux layout: struct cmsghdr { size_t
// cmsg_len; int cmsg_level; int cmsg_type; } followed by the data, each
// message padded to a multiple of sizeof(size_t) (CMSG_ALIGN).

/// A control-message buffer aligned as a `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuf([u8; CONTROL_LEN]);

const CMSG_ALIGN_TO: usize = size_of::<usize>();
const CMSG_HEADER: usize = cmsg_align(size_of::<libc::cmsghdr>());

const fn cmsg_align(len: usize) -> usize {
    (len + CMSG_ALIGN_TO - 1) & !(CMSG_ALIGN_TO - 1)
}

/// Iterates `(level, type, data)` over a received control buffer.
struct ControlMessages<'a> {
    rest: &'a [u8],
}

impl<'a> ControlMessages<'a> {
    fn new(control: &'a [u8]) -> ControlMessages<'a> {
        ControlMessages { rest: control }
    }
}

impl<'a> Iterator for ControlMessages<'a> {
    type Item = (c_int, c_int, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let w = size_of::<usize>();
        let len_bytes = self.rest.get(..w)?;
        let len = usize::from_ne_bytes(len_bytes.try_into().ok()?);
        let level = c_int::from_ne_bytes(self.rest.get(w..w + 4)?.try_into().ok()?);
        let kind = c_int::from_ne_bytes(self.rest.get(w + 4..w + 8)?.try_into().ok()?);
        let data = self.rest.get(CMSG_HEADER..len)?;
        self.rest = self.rest.get(cmsg_align(len)..).unwrap_or(&[]);
        Some((level, kind, data))
    }
}

/// Writes one control message header + data at the start of `buf`;
/// returns the space used.
fn put_cmsg(buf: &mut [u8], level: c_int, kind: c_int, data: &[u8]) -> usize {
    let w = size_of::<usize>();
    let len = CMSG_HEADER + data.len();
    buf[..w].copy_from_slice(&len.to_ne_bytes());
    buf[w..w + 4].copy_from_slice(&level.to_ne_bytes());
    buf[w + 4..w + 8].copy_from_slice(&kind.to_ne_bytes());
    buf[CMSG_HEADER..len].copy_from_slice(data);
    cmsg_align(len)
}

/// `IP_PKTINFO` choosing the outgoing interface and source address.
fn pktinfo_v4(buf: &mut [u8], ifindex: u32, source: Ipv4Addr) -> usize {
    let mut data = [0u8; 12];
    data[0..4].copy_from_slice(&ifindex.to_ne_bytes());
    data[4..8].copy_from_slice(&source.octets()); // ipi_spec_dst: the source
    put_cmsg(buf, libc::IPPROTO_IP, libc::IP_PKTINFO, &data)
}

/// `IPV6_PKTINFO` choosing the outgoing interface and source address.
fn pktinfo_v6(buf: &mut [u8], ifindex: u32, source: Ipv6Addr) -> usize {
    let mut data = [0u8; 20];
    data[..16].copy_from_slice(&source.octets());
    data[16..20].copy_from_slice(&ifindex.to_ne_bytes());
    put_cmsg(buf, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &data)
}

// FFI. Each function is one system call.

/// socket(domain, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol).
#[allow(unsafe_code)]
fn raw_socket(domain: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    let kind = libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain system call, no pointers.
    let fd = unsafe { libc::socket(domain, kind, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    set_struct(fd, level, name, &value)
}

/// setsockopt(2) with `value` as the option value.
#[allow(unsafe_code)]
fn set_struct<T: Copy>(fd: RawFd, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    let len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to a live T of exactly `len` bytes, which the
    // kernel only reads during the call. T is a plain C struct or int.
    let rc = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// setsockopt(2) with a byte string value (SO_BINDTODEVICE).
#[allow(unsafe_code)]
fn set_bytes(fd: RawFd, level: c_int, name: c_int, value: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len()).map_err(|_| invalid("option too long"))?;
    // SAFETY: `value` is a live slice of `len` bytes, only read by the kernel.
    let rc = unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What recvmsg(2) reported.
struct RawMsg {
    /// Datagram length (larger than the buffer if MSG_TRUNC).
    len: usize,
    name_len: usize,
    control_len: usize,
}

/// recvmsg(fd, MSG_DONTWAIT | MSG_TRUNC) into `data`, the source address
/// into `name` and control messages into `control`; retries on EINTR.
#[allow(unsafe_code)]
fn recv_msg(fd: RawFd, data: &mut [u8], name: &mut [u8], control: &mut [u8]) -> io::Result<RawMsg> {
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    for _ in 0..EINTR_RETRIES {
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = name.as_mut_ptr().cast();
        msg.msg_namelen = name.len() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
        // SAFETY: every pointer in `msg` refers to a live, exclusively
        // borrowed buffer of the stated length (name, iov -> data, control)
        // for the duration of the call; the kernel writes at most that much.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
        if n >= 0 {
            return Ok(RawMsg {
                len: n.unsigned_abs(),
                name_len: msg.msg_namelen as usize,
                control_len: msg.msg_controllen as usize,
            });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Err(io::Error::from(io::ErrorKind::Interrupted))
}

/// sendmsg(fd, MSG_DONTWAIT) of `data` to the socket address `name` with
/// the control messages in `control`.
#[allow(unsafe_code)]
fn send_msg<A: Copy>(fd: RawFd, data: &[u8], name: &A, control: &[u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (name as *const A).cast_mut().cast();
    msg.msg_namelen = size_of::<A>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = control.as_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.len() as _;
    }
    // SAFETY: every pointer in `msg` refers to a live buffer of the stated
    // length (a sockaddr A, data, control) for the duration of the call;
    // sendmsg only reads them, so the casts to *mut are never written through.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.unsigned_abs())
}

/// poll(2) on `fds` for at most `timeout_ms`.
#[allow(unsafe_code)]
fn poll_fds(fds: &mut [libc::pollfd], timeout_ms: c_int) -> io::Result<usize> {
    let n = libc::nfds_t::try_from(fds.len()).map_err(|_| invalid("too many fds"))?;
    // SAFETY: `fds` is a live, exclusively borrowed array of `n` pollfds.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, timeout_ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc.unsigned_abs() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(len: usize) -> Received {
        Received {
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            dst: unspecified(Family::V4),
            ttl: 0,
            len,
            ifindex: 2,
        }
    }

    /// An IPv4 header (IHL 5) from 198.18.0.1 to 224.0.0.18, TTL 255,
    /// total length 32, followed by a 12-octet payload (kept from the
    /// keepalived capture v3_ipv4_10cs).
    fn datagram() -> Vec<u8> {
        let mut d = vec![
            0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x14, 0x87, 198, 18, 0, 1,
            224, 0, 0, 18,
        ];
        d.extend_from_slice(&[
            0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0xcb, 0xa7, 198, 18, 0, 100,
        ]);
        d
    }

    #[test]
    fn strips_the_ipv4_header() {
        let mut buf = datagram();
        let mut got = received(buf.len());
        strip_ipv4_header(&mut buf, &mut got);
        assert_eq!(got.len, 12);
        assert_eq!(got.ttl, 255);
        assert_eq!(got.dst, IpAddr::V4(MCAST_V4));
        assert_eq!(&buf[..12], &datagram()[20..]);
    }

    #[test]
    fn ipv4_header_with_options_and_padding() {
        // IHL 6 (one option word), and 2 octets beyond the total length.
        let mut d = datagram();
        d[0] = 0x46;
        d[3] = 36;
        d.splice(20..20, [1, 1, 1, 0]);
        d.extend_from_slice(&[0xee, 0xee]);
        let mut got = received(d.len());
        strip_ipv4_header(&mut d, &mut got);
        assert_eq!(got.len, 12);
        assert_eq!(&d[..12], &datagram()[20..]);
    }

    #[test]
    fn broken_ipv4_headers_leave_nothing() {
        for (at, value) in [(0, 0x44u8), (0, 0x65), (0, 0x4f)] {
            let mut d = datagram();
            d[at] = value;
            let mut got = received(d.len());
            strip_ipv4_header(&mut d, &mut got);
            assert_eq!(got.len, 0, "octet {at} = {value:#x}");
        }
        let mut short = datagram()[..19].to_vec();
        let mut got = received(short.len());
        strip_ipv4_header(&mut short, &mut got);
        assert_eq!(got.len, 0);
        let mut empty = [];
        let mut got = received(0);
        strip_ipv4_header(&mut empty, &mut got);
        assert_eq!(got.len, 0);
    }

    #[test]
    fn datagram_cut_by_the_buffer_stays_cut() {
        // Total length says 32, only 28 octets arrived (MSG_TRUNC).
        let mut d = datagram()[..28].to_vec();
        let mut got = received(d.len());
        strip_ipv4_header(&mut d, &mut got);
        assert_eq!(got.len, 8);
    }

    #[test]
    fn control_messages_round_trip() {
        let mut buf = ControlBuf([0; CONTROL_LEN]);
        let src6: Ipv6Addr = "fe80::1".parse().unwrap();
        let a = pktinfo_v4(&mut buf.0, 7, Ipv4Addr::new(198, 18, 0, 1));
        let b = pktinfo_v6(&mut buf.0[a..], 9, src6);
        let hop = put_cmsg(
            &mut buf.0[a + b..],
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &255i32.to_ne_bytes(),
        );
        let msgs: Vec<_> = ControlMessages::new(&buf.0[..a + b + hop]).collect();
        assert_eq!(msgs.len(), 3);
        assert_eq!((msgs[0].0, msgs[0].1), (libc::IPPROTO_IP, libc::IP_PKTINFO));
        let mut got = received(0);
        for (level, kind, data) in msgs {
            apply_control(&mut got, level, kind, data);
        }
        // The v6 pktinfo came last among the two pktinfos and wins.
        assert_eq!(got.dst, IpAddr::V6(src6));
        assert_eq!(got.ifindex, 9);
        assert_eq!(got.ttl, 255);
        // Garbage never loops or panics.
        assert_eq!(ControlMessages::new(&[0xff; 7]).count(), 0);
        assert_eq!(ControlMessages::new(&[0; 64]).count(), 0);
    }

    #[test]
    fn socket_addresses_from_bytes() {
        let mut name = [0u8; SOCKADDR_LEN];
        name[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        name[4..8].copy_from_slice(&[198, 18, 0, 2]);
        assert_eq!(
            sockaddr_ip(&name),
            Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)))
        );
        name[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        name[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(sockaddr_ip(&name), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(sockaddr_ip(&name[..10]), None);
        assert_eq!(sockaddr_ip(&[]), None);
    }

    #[test]
    fn open_refuses_a_source_of_the_other_family() {
        let cfg = SocketConfig {
            ifindex: 1,
            ifname: "lo".into(),
            family: Family::V6,
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
            multicast: false,
        };
        let err = VrrpSocket::open(&cfg).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn poll_times_out_and_sees_readable_fds() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        let none = poll_readable(&fds, Duration::from_millis(1)).unwrap();
        assert!(none.is_empty());
        a.send(b"x").unwrap();
        assert_eq!(
            poll_readable(&fds, Duration::from_secs(5)).unwrap(),
            vec![1]
        );
    }
}
