//! nfnetlink batches for nf_tables: encoding, sending, and checking the
//! kernel's acknowledgement of every message.
//!
//! Owns the wire format (netlink header, `nfgenmsg`, attributes) and the
//! netlink socket. Knows nothing about which rules are built; see nft.rs.
//! Numbers come from include/uapi/linux/netfilter/{nfnetlink,nf_tables}.h
//! and include/uapi/linux/netlink.h.

use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::SysError;

// netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 0x01;
pub(super) const NLM_F_ACK: u16 = 0x04;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLM_F_CAPPED: u16 = 0x100;
const NLMSGERR_ATTR_MSG: u16 = 1;

// nfnetlink.h
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One message of a batch, for matching its acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Sent {
    pub seq: u32,
    pub what: String,
}

/// A batch of nf_tables messages framed by BATCH_BEGIN / BATCH_END; the
/// kernel applies it as one transaction or not at all.
pub(super) struct Batch {
    buf: Vec<u8>,
    next_seq: u32,
    sent: Vec<Sent>,
    /// Start of the message being written, if any.
    open: Option<usize>,
}

impl Batch {
    /// Starts a batch whose messages are numbered from `first_seq`.
    pub fn new(first_seq: u32) -> Self {
        let mut batch = Self {
            buf: Vec::with_capacity(4096),
            next_seq: first_seq,
            sent: Vec::new(),
            open: None,
        };
        // res_id of the batch messages names the subsystem.
        batch.frame(NFNL_MSG_BATCH_BEGIN, libc::AF_UNSPEC as u8);
        batch
    }

    fn frame(&mut self, msg_type: u16, family: u8) {
        let seq = self.take_seq();
        self.header(msg_type, NLM_F_REQUEST, seq, family, NFNL_SUBSYS_NFTABLES);
        self.patch_len(self.buf.len() - NLMSG_HDRLEN - 4);
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    fn header(&mut self, msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched later
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Writes the length of the message that starts at `start`.
    fn patch_len(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Starts an nf_tables message (`NFT_MSG_*`) that the kernel must
    /// acknowledge; `what` names it in errors.
    pub fn begin(&mut self, nft_msg: u16, flags: u16, family: u8, what: impl Into<String>) {
        self.end();
        let seq = self.take_seq();
        self.open = Some(self.buf.len());
        let msg_type = (NFNL_SUBSYS_NFTABLES << 8) | nft_msg;
        self.header(msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, seq, family, 0);
        self.sent.push(Sent {
            seq,
            what: what.into(),
        });
    }

    fn end(&mut self) {
        if let Some(start) = self.open.take() {
            self.patch_len(start);
        }
    }

    pub fn put_bytes(&mut self, attr: u16, value: &[u8]) {
        let len = NLA_HDRLEN + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&attr.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len() + align4(len) - len, 0);
    }

    /// A NUL-terminated string, as nf_tables expects.
    pub fn put_str(&mut self, attr: u16, value: &str) {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.put_bytes(attr, &bytes);
    }

    /// nf_tables integers are big-endian.
    pub fn put_u32(&mut self, attr: u16, value: u32) {
        self.put_bytes(attr, &value.to_be_bytes());
    }

    /// Opens a nested attribute; close it with [`Batch::nest_end`].
    pub fn nest_begin(&mut self, attr: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(attr | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Closes the batch; returns its bytes and the messages to acknowledge.
    pub fn finish(mut self) -> (Vec<u8>, Vec<Sent>) {
        self.end();
        self.frame(NFNL_MSG_BATCH_END, libc::AF_UNSPEC as u8);
        (self.buf, self.sent)
    }

    /// The sequence number the next batch should start with.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }
}

/// The kernel's answer to one message: 0 or a negative errno, plus the
/// extended-ACK text when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ack {
    pub seq: u32,
    pub error: i32,
    pub message: Option<String>,
}

/// Parses the acknowledgements in one datagram from the kernel. Anything
/// that is not an NLMSG_ERROR is skipped; a truncated message ends parsing.
pub(super) fn parse_acks(mut data: &[u8]) -> Vec<Ack> {
    let mut acks = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32_ne(data, 0) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        let msg_type = u16_ne(data, 4);
        let flags = u16_ne(data, 6);
        if msg_type == NLMSG_ERROR {
            if let Some(ack) = parse_error(&data[NLMSG_HDRLEN..len], flags) {
                acks.push(ack);
            }
        }
        data = &data[align4(len).min(data.len())..];
    }
    acks
}

/// struct nlmsgerr { int error; struct nlmsghdr msg; } then, unless the
/// request was capped, the request's payload; then extended-ACK TLVs.
fn parse_error(payload: &[u8], flags: u16) -> Option<Ack> {
    if payload.len() < 4 + NLMSG_HDRLEN {
        return None;
    }
    let error = i32::from_ne_bytes(payload[0..4].try_into().ok()?);
    let request = &payload[4..];
    let seq = u32_ne(request, 8);
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let request_len = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            u32_ne(request, 0) as usize
        };
        let tlvs = request.get(align4(request_len)..).unwrap_or(&[]);
        message = find_attr(tlvs, NLMSGERR_ATTR_MSG).map(|v| {
            let text = v.split(|b| *b == 0).next().unwrap_or(&[]);
            String::from_utf8_lossy(text).into_owned()
        });
    }
    Some(Ack {
        seq,
        error,
        message,
    })
}

fn find_attr(mut data: &[u8], wanted: u16) -> Option<&[u8]> {
    while data.len() >= NLA_HDRLEN {
        let len = u16_ne(data, 0) as usize;
        if len < NLA_HDRLEN || len > data.len() {
            return None;
        }
        if u16_ne(data, 2) & !NLA_F_NESTED == wanted {
            return Some(&data[NLA_HDRLEN..len]);
        }
        data = &data[align4(len).min(data.len())..];
    }
    None
}

/// Callers check the length first.
fn u16_ne(data: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([data[at], data[at + 1]])
}

fn u32_ne(data: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Checks that every sent message was acknowledged without error.
pub(super) fn check_acks(sent: &[Sent], acks: &[Ack]) -> Result<(), SysError> {
    if let Some((ack, what)) = acks.iter().find(|a| a.error != 0).map(|a| {
        let what = sent
            .iter()
            .find(|s| s.seq == a.seq)
            .map_or("nftables batch", |s| s.what.as_str());
        (a, what)
    }) {
        return Err(netlink_error(what, ack));
    }
    match sent.iter().find(|s| !acks.iter().any(|a| a.seq == s.seq)) {
        Some(missing) => Err(SysError::Io {
            what: missing.what.clone(),
            source: io::Error::other("the kernel sent no acknowledgement"),
        }),
        None => Ok(()),
    }
}

fn netlink_error(what: &str, ack: &Ack) -> SysError {
    let errno = ack.error.checked_neg().unwrap_or(libc::EINVAL);
    let source = io::Error::from_raw_os_error(errno);
    match errno {
        libc::EPERM | libc::EACCES if !super::has_cap_net_admin() => SysError::PermissionDenied {
            what: what.to_string(),
        },
        _ => SysError::Netlink {
            what: what.to_string(),
            source,
            detail: ack.message.clone(),
        },
    }
}

/// A NETLINK_NETFILTER socket bound to a kernel-chosen port id. Tables made
/// with `NFT_TABLE_F_OWNER` through it live as long as it does.
pub(super) struct NfnlSocket {
    socket: Socket,
}

impl NfnlSocket {
    pub fn open() -> Result<Self, SysError> {
        let what = "open nfnetlink socket";
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| SysError::io(what, e))?;
        socket.bind_auto().map_err(|e| SysError::io(what, e))?;
        // Short error replies, with the kernel's explanation text.
        socket
            .set_cap_ack(true)
            .map_err(|e| SysError::io(what, e))?;
        socket
            .set_ext_ack(true)
            .map_err(|e| SysError::io(what, e))?;
        Ok(Self { socket })
    }

    /// Sends one batch and checks the acknowledgement of every message.
    ///
    /// nfnetlink runs the whole batch (including a replay after loading a
    /// module) inside sendmsg(), so all replies are queued when send
    /// returns: reading without blocking until the queue is empty is enough.
    pub fn transact(&self, bytes: &[u8], sent: &[Sent]) -> Result<(), SysError> {
        let what = "send nftables batch";
        self.make_room(bytes.len())?;
        let n = self
            .socket
            .send(bytes, 0)
            .map_err(|e| SysError::io(what, e))?;
        if n != bytes.len() {
            return Err(SysError::Io {
                what: what.into(),
                source: io::Error::other(format!("sent {n} of {} bytes", bytes.len())),
            });
        }
        let acks = self.drain_acks()?;
        check_acks(sent, &acks)
    }

    fn drain_acks(&self) -> Result<Vec<Ack>, SysError> {
        let mut acks = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        // Bounded: one datagram per message at most, and a batch is far
        // smaller than this many messages.
        for _ in 0..100_000 {
            buf.clear();
            match self.socket.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) => acks.extend(parse_acks(&buf)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(acks),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SysError::io("read nftables acknowledgements", e)),
            }
            if buf.len() >= NLMSG_HDRLEN && u16_ne(&buf, 4) == NLMSG_DONE {
                return Ok(acks);
            }
        }
        Ok(acks)
    }

    /// netlink refuses a message longer than the send buffer; grow it for
    /// large batches (SO_SNDBUFFORCE: we hold CAP_NET_ADMIN anyway).
    fn make_room(&self, len: usize) -> Result<(), SysError> {
        const DEFAULT_ROOM: usize = 128 * 1024;
        if len <= DEFAULT_ROOM {
            return Ok(());
        }
        let size = libc::c_int::try_from(len + 4096).map_err(|_| {
            SysError::InvalidInput(format!("nftables batch of {len} bytes is too large"))
        })?;
        set_sockopt_int(
            self.socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            size,
        )
        .map_err(|e| SysError::io("grow nfnetlink send buffer", e))
    }
}

/// setsockopt(2) with an int value.
#[allow(unsafe_code)]
fn set_sockopt_int(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed along;
    // the kernel only reads it. A bad fd is reported as EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
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
    fn batch_frames_and_acks_only_content_messages() {
        let mut batch = Batch::new(7);
        batch.begin(
            0, /* NFT_MSG_NEWTABLE */
            NLM_F_CREATE,
            5,
            "add table t",
        );
        batch.put_str(1, "t");
        batch.put_u32(2, 0);
        let (bytes, sent) = batch.finish();
        assert_eq!(
            sent,
            [Sent {
                seq: 8,
                what: "add table t".into()
            }]
        );
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            // BATCH_BEGIN, seq 7, res_id = NFNL_SUBSYS_NFTABLES
            &20u32.to_ne_bytes()[..], &0x10u16.to_ne_bytes(), &1u16.to_ne_bytes(),
            &7u32.to_ne_bytes(), &0u32.to_ne_bytes(), &[0, 0, 0, 10],
            // NEWTABLE (0x0a00), REQUEST|ACK|CREATE, family netdev
            &36u32.to_ne_bytes(), &0x0a00u16.to_ne_bytes(), &0x405u16.to_ne_bytes(),
            &8u32.to_ne_bytes(), &0u32.to_ne_bytes(), &[5, 0, 0, 0],
            &6u16.to_ne_bytes(), &1u16.to_ne_bytes(), b"t\0\0\0",
            &8u16.to_ne_bytes(), &2u16.to_ne_bytes(), &[0, 0, 0, 0],
            // BATCH_END, seq 9
            &20u32.to_ne_bytes(), &0x11u16.to_ne_bytes(), &1u16.to_ne_bytes(),
            &9u32.to_ne_bytes(), &0u32.to_ne_bytes(), &[0, 0, 0, 10],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn nests_carry_the_nested_flag_and_their_length() {
        let mut batch = Batch::new(1);
        batch.begin(0, 0, 5, "x");
        let start = batch.buf.len();
        let nest = batch.nest_begin(4);
        batch.put_u32(1, 0);
        batch.nest_end(nest);
        assert_eq!(batch.buf[start..], [12, 0, 4, 0x80, 8, 0, 1, 0, 0, 0, 0, 0]);
    }

    /// An error reply as the kernel sends it with NETLINK_CAP_ACK and
    /// NETLINK_EXT_ACK: nlmsgerr, the request header, then TLVs.
    fn error_reply(seq: u32, error: i32, msg: Option<&str>) -> Vec<u8> {
        let mut tlvs = Vec::new();
        if let Some(m) = msg {
            let len = 4 + m.len() + 1;
            tlvs.extend_from_slice(&(len as u16).to_ne_bytes());
            tlvs.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
            tlvs.extend_from_slice(m.as_bytes());
            tlvs.push(0);
            tlvs.resize(align4(tlvs.len()), 0);
        }
        let flags = NLM_F_CAPPED | if msg.is_some() { NLM_F_ACK_TLVS } else { 0 };
        let len = 16 + 4 + 16 + tlvs.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&1234u32.to_ne_bytes());
        out.extend_from_slice(&error.to_ne_bytes());
        out.extend_from_slice(&60u32.to_ne_bytes()); // request length
        out.extend_from_slice(&0x0a03u16.to_ne_bytes());
        out.extend_from_slice(&0x405u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&1234u32.to_ne_bytes());
        out.extend_from_slice(&tlvs);
        out
    }

    #[test]
    fn parses_acks_and_extended_messages() {
        let mut data = error_reply(3, 0, None);
        data.extend(error_reply(4, -libc::ENOENT, Some("No such device")));
        let acks = parse_acks(&data);
        assert_eq!(
            acks,
            [
                Ack {
                    seq: 3,
                    error: 0,
                    message: None
                },
                Ack {
                    seq: 4,
                    error: -libc::ENOENT,
                    message: Some("No such device".into())
                },
            ]
        );
    }

    #[test]
    fn truncated_replies_do_not_panic() {
        let data = error_reply(4, -libc::ENOENT, Some("No such device"));
        for cut in 0..data.len() {
            let _ = parse_acks(&data[..cut]);
        }
    }

    #[test]
    fn check_acks_names_the_failed_message() {
        let sent = [
            Sent {
                seq: 1,
                what: "add table".into(),
            },
            Sent {
                seq: 2,
                what: "add chain for dp0".into(),
            },
        ];
        let ok = [
            Ack {
                seq: 1,
                error: 0,
                message: None,
            },
            Ack {
                seq: 2,
                error: 0,
                message: None,
            },
        ];
        assert!(check_acks(&sent, &ok).is_ok());
        let failed = [
            Ack {
                seq: 1,
                error: 0,
                message: None,
            },
            Ack {
                seq: 2,
                error: -libc::ENOENT,
                message: None,
            },
        ];
        let e = check_acks(&sent, &failed).expect_err("error ack");
        assert!(
            e.to_string()
                .starts_with("add chain for dp0: kernel refused"),
            "{e}"
        );
        let e = check_acks(&sent, &ok[..1]).expect_err("missing ack");
        assert!(e.to_string().contains("add chain for dp0"), "{e}");
    }
}
