//! The NETLINK_ROUTE socket: framing, sequence numbers, acks and dumps.
//!
//! Owns one netlink socket bound to a kernel-assigned port, the sequence
//! counter and the receive buffer. Knows nothing about links, addresses or
//! routes: callers hand it a [`RouteNetlinkMessage`] and get back replies or
//! an [`io::Error`] naming the operation. It must not open sockets in other
//! namespaces (the caller does that with `NetNs::run`) and must not keep
//! state between requests beyond the sequence counter.
//!
//! Replies are matched on sequence number and port id; anything else (a
//! multicast notification, a late reply to an earlier timed-out request) is
//! skipped. A socket that joins multicast groups with [`RouteSocket::join_group`]
//! should therefore be used for events only, with a second socket for
//! requests, as iproute2's `ip monitor` does.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// How long one `recv` may block before the request is abandoned.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on the whole exchange (a dump of a large table included).
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(30);
/// Receive buffer; the kernel sends dump datagrams of at most 32 KiB.
const RECV_BUF_LEN: usize = 64 * 1024;
/// A dump that the kernel marks as interrupted (table changed while it was
/// being walked) is restarted at most this many times.
const DUMP_ATTEMPTS: usize = 3;

/// Flag in an NLMSG_ERROR header: the original request was cut to its header.
const NLM_F_CAPPED: u16 = 0x100;
/// Flag in an NLMSG_ERROR / NLMSG_DONE header: extended-ack TLVs follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// Extended-ack attribute carrying a human-readable message.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
const NLMSG_HDR_LEN: usize = 16;

/// An error reported by the kernel over netlink, with the operation that
/// caused it. Carried inside the [`io::Error`]s this module returns; recover
/// it with [`NetlinkError::errno_of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkError {
    /// What vipgate asked for, e.g. `"add address 198.18.0.1/24 on ifindex 3"`.
    pub op: String,
    /// The positive errno the kernel returned.
    pub errno: i32,
    /// The kernel's extended-ack message, when it sent one.
    pub message: Option<String>,
}

impl NetlinkError {
    /// The kernel errno behind `err`, if it came from netlink (or is a plain
    /// OS error).
    pub fn errno_of(err: &io::Error) -> Option<i32> {
        if let Some(code) = err.raw_os_error() {
            return Some(code);
        }
        err.get_ref()?
            .downcast_ref::<NetlinkError>()
            .map(|e| e.errno)
    }

    pub(crate) fn into_io(self) -> io::Error {
        let kind = io::Error::from_raw_os_error(self.errno).kind();
        io::Error::new(kind, self)
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        write!(f, "{}: {os}", self.op)?;
        if let Some(message) = &self.message {
            write!(f, " ({message})")?;
        }
        if self.errno == libc::EPERM {
            write!(f, "; rtnetlink changes need CAP_NET_ADMIN (run as root)")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetlinkError {}

/// Wraps a local I/O failure (socket, send, recv) with the operation name,
/// keeping its errno visible to [`NetlinkError::errno_of`].
pub(crate) fn local_error(op: &str, err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(errno) => NetlinkError {
            op: op.to_string(),
            errno,
            message: None,
        }
        .into_io(),
        None => io::Error::new(err.kind(), format!("{op}: {err}")),
    }
}

/// A synchronous NETLINK_ROUTE socket.
pub struct RouteSocket {
    socket: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
}

/// What the exchange loop expects to end a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// NLMSG_ERROR with code 0 (the ack we asked for with NLM_F_ACK).
    Ack,
    /// NLMSG_DONE after a multipart dump (dumps are never acked).
    Done,
}

impl RouteSocket {
    /// Opens a NETLINK_ROUTE socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let op = "open rtnetlink socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| local_error(op, e))?;
        let addr = socket.bind_auto().map_err(|e| local_error(op, e))?;
        // Both options are best effort: kernels before 4.12 lack them and
        // still work, with shorter error messages and echoed requests.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        set_recv_timeout(&socket, RECV_TIMEOUT).map_err(|e| local_error(op, e))?;
        Ok(RouteSocket {
            socket,
            port: addr.port_number(),
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF_LEN),
        })
    }

    /// Joins an rtnetlink multicast group (`RTNLGRP_*`), for event watchers.
    pub fn join_group(&mut self, group: u32) -> io::Result<()> {
        self.socket
            .add_membership(group)
            .map_err(|e| local_error(&format!("join rtnetlink group {group}"), e))
    }

    /// Sends `msg` with NLM_F_ACK plus `flags` and waits for the kernel's ack.
    pub fn request(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(op, msg, flags, Ending::Ack, &mut |_| {})
            .map(|_| ())
    }

    /// Sends a single-object get (no NLM_F_DUMP) and returns the replies
    /// that came before the ack; usually exactly one.
    pub fn get(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut replies = Vec::new();
        self.exchange(op, msg, 0, Ending::Ack, &mut |m| replies.push(m))?;
        Ok(replies)
    }

    /// Sends a dump request and collects every reply until NLMSG_DONE,
    /// restarting (boundedly) when the kernel flags the dump as interrupted.
    pub fn dump(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut replies = Vec::new();
            let interrupted =
                self.exchange(op, msg.clone(), NLM_F_DUMP, Ending::Done, &mut |m| {
                    replies.push(m)
                })?;
            if !interrupted {
                return Ok(replies);
            }
        }
        Err(NetlinkError {
            op: op.to_string(),
            errno: libc::EINTR,
            message: Some(format!("dump interrupted {DUMP_ATTEMPTS} times in a row")),
        }
        .into_io())
    }

    /// Sends one request and reads datagrams until its ending arrives.
    /// Returns whether a dump was flagged as interrupted.
    fn exchange(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
        ending: Ending,
        on_reply: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> io::Result<bool> {
        let seq = self.send(op, msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        let deadline = Instant::now() + EXCHANGE_DEADLINE;
        let mut interrupted = false;
        loop {
            if Instant::now() > deadline {
                return Err(local_error(op, io::ErrorKind::TimedOut.into()));
            }
            self.recv_datagram(op)?;
            if self.take_replies(op, seq, ending, &mut interrupted, on_reply)? {
                return Ok(interrupted);
            }
        }
    }

    fn send(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let bytes = encode(msg, flags, self.seq);
        let kernel = SocketAddr::new(0, 0);
        let sent = self
            .socket
            .send_to(&bytes, &kernel, 0)
            .map_err(|e| local_error(op, e))?;
        if sent != bytes.len() {
            return Err(local_error(op, io::Error::other("short netlink send")));
        }
        Ok(self.seq)
    }

    fn recv_datagram(&mut self, op: &str) -> io::Result<()> {
        self.buf.clear();
        let len = self
            .socket
            .recv(&mut self.buf, libc::MSG_TRUNC)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => local_error(
                    op,
                    io::Error::new(io::ErrorKind::TimedOut, "no reply from kernel"),
                ),
                _ => local_error(op, e),
            })?;
        if len > self.buf.len() {
            return Err(local_error(
                op,
                io::Error::other("netlink datagram truncated"),
            ));
        }
        Ok(())
    }

    /// Walks the messages of the datagram in `self.buf` that answer `seq`;
    /// returns whether the request's ending was among them.
    fn take_replies(
        &mut self,
        op: &str,
        seq: u32,
        ending: Ending,
        interrupted: &mut bool,
        on_reply: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> io::Result<bool> {
        for frame in Frames::new(&self.buf) {
            let frame = frame.map_err(|e| decode_error(op, e))?;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame)
                .map_err(|e| decode_error(op, e))?;
            if msg.header.sequence_number != seq || msg.header.port_number != self.port {
                continue;
            }
            *interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
            let flags = msg.header.flags;
            match msg.payload {
                NetlinkPayload::InnerMessage(inner) => on_reply(inner),
                NetlinkPayload::Error(err) => {
                    let Some(code) = err.code else {
                        return Ok(true);
                    };
                    let message = ext_ack_message(flags, &err.header, true);
                    return Err(kernel_error(op, code.get(), message));
                }
                NetlinkPayload::Done(done) if done.code != 0 => {
                    let message = ext_ack_message(flags, &done.extended_ack, false);
                    return Err(kernel_error(op, done.code, message));
                }
                NetlinkPayload::Done(_) if ending == Ending::Done => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }

    /// Reads one datagram of notifications on a socket that joined groups
    /// with [`RouteSocket::join_group`] and appends its messages to `out`.
    /// Returns `Ok(false)` when nothing arrived within the receive timeout
    /// (5 s), so a watcher loop can check for shutdown. An error with errno
    /// ENOBUFS means the kernel dropped notifications: re-read the table.
    pub fn recv_notifications(&mut self, out: &mut Vec<RouteNetlinkMessage>) -> io::Result<bool> {
        let op = "read rtnetlink notifications";
        match self.recv_datagram(op) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(false),
            Err(e) => return Err(e),
        }
        for frame in Frames::new(&self.buf) {
            let frame = frame.map_err(|e| decode_error(op, e))?;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame)
                .map_err(|e| decode_error(op, e))?;
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                out.push(inner);
            }
        }
        Ok(true)
    }
}

impl AsRawFd for RouteSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

/// Serialises one request with the given flags and sequence number.
pub(crate) fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    // `finalize` set the header length to `buffer_len`, so the buffer fits.
    packet.serialize(&mut bytes);
    bytes
}

fn kernel_error(op: &str, code: i32, message: Option<String>) -> io::Error {
    NetlinkError {
        op: op.to_string(),
        errno: code.saturating_abs(),
        message,
    }
    .into_io()
}

fn decode_error(op: &str, err: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{op}: cannot decode kernel reply: {err}"),
    )
}

/// Splits a datagram into netlink messages, checking every length.
pub(crate) struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    pub(crate) fn new(datagram: &'a [u8]) -> Self {
        Frames { rest: datagram }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let len = match NetlinkBuffer::new_checked(self.rest) {
            Ok(buf) => buf.length() as usize,
            Err(e) => {
                self.rest = &[];
                return Some(Err(e.to_string()));
            }
        };
        // `new_checked` verified NLMSG_HDR_LEN <= len <= rest.len().
        let (frame, after) = self.rest.split_at(len);
        self.rest = after.get(align4(len) - len..).unwrap_or(&[]);
        Some(Ok(frame))
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Extracts NLMSGERR_ATTR_MSG from the bytes after the error code.
///
/// For NLMSG_ERROR (`has_request`), those bytes start with the original
/// request: its header only when NLM_F_CAPPED is set, the whole request
/// otherwise. NLMSG_DONE carries the TLVs right away.
pub(crate) fn ext_ack_message(flags: u16, after_code: &[u8], has_request: bool) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if !has_request {
        0
    } else if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDR_LEN
    } else {
        let len = after_code.get(..4)?;
        align4(u32::from_ne_bytes(len.try_into().ok()?) as usize)
    };
    let mut tlvs = after_code.get(skip..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]);
        let value = tlvs.get(4..len)?;
        if kind == NLMSGERR_ATTR_MSG {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get(align4(len)..).unwrap_or_default();
    }
    None
}

/// Sets SO_RCVTIMEO so that a silent kernel cannot block the caller forever.
fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: FFI call on a socket fd we own; `tv` is a valid timeval that
    // outlives the call and its size is passed alongside.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's NLMSG_ERROR for `ip link set vgt0 mtu 10` (iproute2 6.1
    /// does not set NETLINK_CAP_ACK, so the whole request is echoed before
    /// the extended-ack TLV), captured with `strace -e read=3`, kernel 6.18.
    const MTU_ERROR: [u8; 96] = [
        0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x02, 0xb5, 0xe4, 0x05, 0x6b, 0xeb, 0x36, 0x00,
        0x00, 0xea, 0xff, 0xff, 0xff, 0x28, 0x00, 0x00, 0x00, 0x10, 0x00, 0x05, 0x00, 0xb5, 0xe4,
        0x05, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x04, 0x00, 0x0a, 0x00, 0x00, 0x00,
        0x21, 0x00, 0x01, 0x00, 0x6d, 0x74, 0x75, 0x20, 0x6c, 0x65, 0x73, 0x73, 0x20, 0x74, 0x68,
        0x61, 0x6e, 0x20, 0x64, 0x65, 0x76, 0x69, 0x63, 0x65, 0x20, 0x6d, 0x69, 0x6e, 0x69, 0x6d,
        0x75, 0x6d, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn kernel_error_with_echoed_request_yields_message() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&MTU_ERROR).unwrap();
        let NetlinkPayload::Error(err) = msg.payload else {
            panic!("not NLMSG_ERROR: {msg:?}");
        };
        assert_eq!(err.code.map(|c| c.get()), Some(-libc::EINVAL));
        let text = ext_ack_message(msg.header.flags, &err.header, true);
        assert_eq!(text.as_deref(), Some("mtu less than device minimum"));
        let io = kernel_error("set mtu", -libc::EINVAL, text);
        assert_eq!(NetlinkError::errno_of(&io), Some(libc::EINVAL));
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert!(
            io.to_string().contains("mtu less than device minimum"),
            "{io}"
        );
    }

    #[test]
    fn local_errors_keep_their_errno() {
        let e = local_error("read", io::Error::from_raw_os_error(libc::ENOBUFS));
        assert_eq!(NetlinkError::errno_of(&e), Some(libc::ENOBUFS));
        assert!(e.to_string().starts_with("read: "), "{e}");
    }

    /// A synthetic capped error: header only, then NLMSGERR_ATTR_MSG.
    #[test]
    fn ext_ack_message_is_found_after_capped_header() {
        let mut after_code = vec![0u8; NLMSG_HDR_LEN];
        // NLMSGERR_ATTR_MSG, len 4 + 6 ("hello\0"), padded to 12.
        after_code.extend_from_slice(&[10, 0, 1, 0, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]);
        let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
        assert_eq!(
            ext_ack_message(flags, &after_code, true).as_deref(),
            Some("hello")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &after_code, true), None);
    }

    #[test]
    fn ext_ack_parser_survives_garbage() {
        let flags = NLM_F_ACK_TLVS;
        assert_eq!(ext_ack_message(flags, &[], true), None);
        assert_eq!(ext_ack_message(flags, &[0xff; 3], true), None);
        // Original length larger than the buffer.
        assert_eq!(
            ext_ack_message(flags, &[0xff, 0xff, 0, 0, 1, 2], true),
            None
        );
        // TLV claiming more bytes than there are.
        assert_eq!(ext_ack_message(flags, &[40, 0, 1, 0, b'x'], false), None);
        // Zero-length TLV must not loop forever.
        assert_eq!(
            ext_ack_message(flags, &[0, 0, 2, 0, 0, 0, 2, 0], false),
            None
        );
    }

    #[test]
    fn frames_split_and_reject_bad_lengths() {
        let mut datagram = Vec::new();
        for len in [16u32, 20] {
            datagram.extend_from_slice(&len.to_ne_bytes());
            datagram.resize(datagram.len() + len as usize - 4, 0);
        }
        let lens: Vec<_> = Frames::new(&datagram).map(|f| f.map(|f| f.len())).collect();
        assert_eq!(lens, vec![Ok(16), Ok(20)]);
        let mut short = datagram.clone();
        short.truncate(30);
        let results: Vec<_> = Frames::new(&short).collect();
        assert_eq!(results.len(), 2);
        assert!(results[1].is_err());
    }
}
