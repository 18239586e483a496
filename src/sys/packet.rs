//! Sending whole Ethernet frames on one link from the control plane
//! (gratuitous ARP and unsolicited neighbour advertisements of a new VRRP
//! master).
//!
//! A plain `AF_PACKET`/`SOCK_RAW` socket bound to the link, send only: it
//! never receives (protocol 0 means no frame is delivered to it). Owns that
//! socket. Must not: read frames, or send anything but what the caller
//! built.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A send-only packet socket bound to one link.
#[derive(Debug)]
pub struct PacketSender {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSender {
    pub fn open(ifindex: u32) -> io::Result<PacketSender> {
        let fd = packet_socket()?;
        bind_link(fd.as_raw_fd(), ifindex)?;
        Ok(PacketSender { fd, ifindex })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends one complete frame (destination MAC first).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(self.fd.as_raw_fd(), frame)
    }
}

/// A non-blocking `AF_PACKET`/`SOCK_RAW` socket with protocol 0 (receives
/// nothing).
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; on success the kernel returns a new
    // descriptor that nobody else owns, so OwnedFd may close it.
    #[allow(unsafe_code)]
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn bind_link(fd: RawFd, ifindex: u32) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is valid; bind(2) reads exactly
    // size_of::<sockaddr_ll>() bytes from it.
    #[allow(unsafe_code)]
    unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        let rc = libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn send_frame(fd: RawFd, frame: &[u8]) -> io::Result<()> {
    // SAFETY: send(2) reads `frame.len()` bytes from a live slice.
    #[allow(unsafe_code)]
    let n = unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
