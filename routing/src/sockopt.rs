//! The two socket options the BGP transport needs that neither std, tokio
//! nor socket2 offers: TCP MD5 signatures (RFC 2385, `TCP_MD5SIG`) and the
//! GTSM minimum TTL (RFC 5082, `IP_MINTTL` / `IPV6_MINHOPCOUNT`).
//!
//! Why unsafe is allowed here: both are plain `setsockopt(2)` calls, which
//! libc exposes only as an `unsafe` FFI function. The one `unsafe` block is
//! in [`setsockopt`], which passes a pointer to a live, fully initialised
//! `#[repr(C)]` value with its exact size. Everything else in this module,
//! and the rest of the crate, is safe code.
//!
//! Must not touch: anything but the option values of a socket it is given.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

/// Longest MD5 key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

/// `struct tcp_md5sig` of linux/tcp.h: the peer's address in a
/// `sockaddr_storage` (128 bytes), flags and prefix length (unused here:
/// 0), key length, ifindex (0), key.
#[repr(C)]
struct TcpMd5Sig {
    addr: [u8; 128],
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: i32,
    key: [u8; MD5_MAX_KEY_LEN],
}

/// Sign (or, with an empty key, stop signing) the TCP segments exchanged
/// with `peer` on `socket` (a listening or a connecting socket). `v6_socket`
/// says the socket is AF_INET6, where an IPv4 peer is given v4-mapped.
pub fn set_tcp_md5(
    socket: &impl AsFd,
    v6_socket: bool,
    peer: IpAddr,
    key: &[u8],
) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key longer than 80 bytes",
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_bytes(peer, v6_socket),
        flags: 0,
        prefix_len: 0,
        // Checked above: at most 80.
        key_len: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// Drop received segments whose TTL (hop limit) is below `min` (GTSM):
/// `IPV6_MINHOPCOUNT` with `ipv6`, else `IP_MINTTL` (which also covers
/// IPv4 peers on an IPv6 socket).
pub fn set_min_ttl(socket: &impl AsFd, ipv6: bool, min: u8) -> io::Result<()> {
    let value = libc::c_int::from(min);
    if ipv6 {
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &value)
    } else {
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_MINTTL, &value)
    }
}

/// `peer` as the bytes of a `sockaddr_in` or `sockaddr_in6` (port 0) in a
/// `sockaddr_storage`-sized buffer.
fn sockaddr_bytes(peer: IpAddr, v6_socket: bool) -> [u8; 128] {
    let mut out = [0u8; 128];
    let v6 = match (peer, v6_socket) {
        (IpAddr::V4(a), false) => {
            out[..2].copy_from_slice(&AF_INET.to_ne_bytes());
            out[4..8].copy_from_slice(&a.octets());
            return out;
        }
        (IpAddr::V4(a), true) => a.to_ipv6_mapped(),
        (IpAddr::V6(a), _) => a,
    };
    // sockaddr_in6: family, port, flowinfo, address at offset 8, scope id.
    out[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
    out[8..24].copy_from_slice(&v6.octets());
    out
}

/// `setsockopt(2)` with a `#[repr(C)]` value.
fn setsockopt<T>(socket: &impl AsFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `fd` is borrowed from a live socket for the duration of the
    // call; `value` points to an initialised `T` of exactly `len` bytes that
    // the kernel only reads.
    let rc = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_struct_matches_the_kernel_layout() {
        // linux/tcp.h: 128 + 1 + 1 + 2 + 4 + 80.
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, key_len), 130);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, key), 136);
    }

    #[test]
    fn sockaddr_bytes_for_both_families() {
        let v4 = sockaddr_bytes("198.18.0.1".parse().expect("addr"), false);
        assert_eq!(
            &v4[..8],
            &[
                AF_INET.to_ne_bytes()[0],
                AF_INET.to_ne_bytes()[1],
                0,
                0,
                198,
                18,
                0,
                1
            ]
        );
        let mapped = sockaddr_bytes("198.18.0.1".parse().expect("addr"), true);
        assert_eq!(
            &mapped[8..24],
            &"::ffff:198.18.0.1"
                .parse::<std::net::Ipv6Addr>()
                .expect("addr")
                .octets()
        );
    }

    #[test]
    fn options_apply_to_real_sockets() {
        // Unbound sockets: nothing is bound or sent.
        use socket2::{Domain, Socket, Type};
        let peer: IpAddr = "198.18.0.2".parse().expect("addr");
        let s4 = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        set_tcp_md5(&s4, false, peer, b"secret").expect("md5 v4");
        set_tcp_md5(&s4, false, peer, b"").expect("md5 removed");
        set_min_ttl(&s4, false, 255).expect("minttl");
        assert!(set_tcp_md5(&s4, false, peer, &[0; 81]).is_err());
        let s6 = Socket::new(Domain::IPV6, Type::STREAM, None).expect("socket");
        set_tcp_md5(&s6, true, peer, b"secret").expect("md5 mapped");
        let peer6: IpAddr = "2001:db8::2".parse().expect("addr");
        set_tcp_md5(&s6, true, peer6, b"secret").expect("md5 v6");
        set_min_ttl(&s6, true, 255).expect("minhopcount");
    }
}
