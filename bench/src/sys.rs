//! The few OS calls the harness needs that std and vipgate do not offer:
//! `recvmmsg(2)` for the sink, `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, the timer slack of the
//! generator thread, and signals to processes the harness started.
//!
//! This is the crate's only module with `unsafe`; every block is one FFI
//! call on memory this module owns for the duration of the call. It owns
//! no state beyond [`Mmsg`] and touches nothing but the calling thread,
//! the given socket, or the given pid.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// Bytes of each datagram the sink copies: the bench header is at the
/// front; the rest of the datagram is counted (MSG_TRUNC), not copied.
pub const SNAP: usize = 64;

/// Receive buffers for one `recvmmsg` call of up to `N` datagrams.
pub struct Mmsg<const N: usize> {
    bufs: Box<[[u8; SNAP]; N]>,
    iovs: Box<[libc::iovec; N]>,
    hdrs: Box<[libc::mmsghdr; N]>,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` point into the boxes this
// value owns; they move with it and are used only through `&mut self`.
unsafe impl<const N: usize> Send for Mmsg<N> {}

impl<const N: usize> Mmsg<N> {
    pub fn new() -> Self {
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero
        // bytes is a valid value (null pointers, zero lengths).
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut m = Mmsg {
            bufs: Box::new([[0u8; SNAP]; N]),
            iovs: Box::new([zero_iov; N]),
            hdrs: Box::new([zero_hdr; N]),
        };
        for i in 0..N {
            m.iovs[i].iov_base = m.bufs[i].as_mut_ptr().cast();
            m.iovs[i].iov_len = SNAP;
            m.hdrs[i].msg_hdr.msg_iov = &mut m.iovs[i];
            m.hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        m
    }

    /// Receives up to `N` datagrams (blocks for the first, up to the
    /// socket's receive timeout, then takes what is queued). Returns how
    /// many; 0 on timeout.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        for h in self.hdrs.iter_mut() {
            h.msg_len = 0;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: `hdrs` holds N initialised mmsghdr whose iovecs point at
        // N live SNAP-byte buffers of `self`; the kernel writes at most
        // SNAP bytes into each and the lengths into `hdrs`.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                N as libc::c_uint,
                libc::MSG_WAITFORONE | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last call: its first bytes and its full length.
    pub fn get(&self, i: usize) -> (&[u8], usize) {
        let len = self.hdrs[i].msg_len as usize;
        (&self.bufs[i][..len.min(SNAP)], len)
    }
}

/// Sets the receive buffer beyond `net.core.rmem_max` (CAP_NET_ADMIN).
pub fn set_rcvbuf_force(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    set_buffer_force(sock, libc::SO_RCVBUFFORCE, bytes)
}

/// Sets the send buffer beyond `net.core.wmem_max` (CAP_NET_ADMIN).
pub fn set_sndbuf_force(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    set_buffer_force(sock, libc::SO_SNDBUFFORCE, bytes)
}

/// SO_RCVBUFFORCE or SO_SNDBUFFORCE to `bytes` (saturated to a c_int).
fn set_buffer_force(sock: &impl AsRawFd, option: libc::c_int, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&v`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Timer slack of the calling thread (the kernel's default of 50 µs would
/// make the generator's sleeps that much longer).
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and affects only the
    // calling thread; a failure leaves the default slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

/// Sends `signal` to `pid`, a process this harness started.
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child of `cmd` get SIGTERM when the thread that spawns it
/// dies (also when the harness is killed with SIGKILL and cannot clean
/// up): a daemon the harness started never outlives it. Spawn from the
/// main thread.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec and only
    // makes the prctl(2) syscall, which is async-signal-safe; it allocates
    // nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
