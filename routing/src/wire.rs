//! BGP-4 wire format: framing, typed `Repr`s and error-to-NOTIFICATION
//! mapping, over `netgauze-bgp-pkt`.
//!
//! Owns: the [`Framer`] that cuts a TCP byte stream into whole messages
//! (marker and length checks, RFC 4271 section 4.1 and 6.1), the `Repr` types
//! vipgate uses ([`Message`], [`OpenRepr`], [`UpdateRepr`],
//! [`NotificationRepr`]) with `decode`/`encode`, and the mapping of every
//! decoding failure to the NOTIFICATION to send ([`DecodeError::notification`])
//! or, for UPDATE attributes, to the RFC 7606 verdict ([`update`]).
//!
//! Must not touch: session state, timers, sockets. netgauze types stay inside
//! this module tree; the rest of vipgate sees only the `Repr`s.
//!
//! What netgauze does and what is ours, and why:
//! - OPEN bodies, capabilities and single path attributes are parsed and
//!   written by netgauze.
//! - The message header (marker, length, type) is checked here: netgauze
//!   accepts UPDATE and NOTIFICATION messages up to 65535 octets on every
//!   session, while RFC 4271 allows 4096 unless the Extended Message
//!   capability (RFC 8654) was exchanged.
//! - NOTIFICATION and ROUTE-REFRESH bodies are read here: netgauze refuses
//!   error codes and subcodes it does not list (e.g. Cease subcode 11, Hard
//!   Reset from RFC 8538 is listed, but any newer one is not), and a
//!   NOTIFICATION we cannot read must never make us answer with another.
//! - UPDATE framing (withdrawn/attributes/NLRI split, attribute TLVs, IPv4
//!   prefixes) is walked here, attribute by attribute, because netgauze's
//!   whole-UPDATE parser either fails the whole message or skips a broken
//!   attribute by guessing its size, and RFC 7606 needs to know which
//!   attribute broke and still read the NLRI to withdraw them.

pub mod update;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability, UnrecognizedCapability,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::wire::deserializer::open::BgpOpenMessageParsingError;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;

pub use update::{
    AsSegment, Community, LargeCommunity, MalformedAttribute, MpNextHop, Origin, PathAttributes,
    UpdateRepr,
};

/// Length of the fixed message header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// Largest message without the Extended Message capability (RFC 4271 4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message once both sides sent the Extended Message capability
/// (RFC 8654). OPEN and KEEPALIVE stay limited to 4096 even then.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// The 2-octet AS number that stands in for a 4-octet one (RFC 6793).
pub const AS_TRANS: u16 = 23456;
/// The only BGP version we speak.
pub const BGP_VERSION: u8 = 4;

const MARKER: [u8; 16] = [0xff; 16];
const TYPE_OPEN: u8 = 1;
const TYPE_UPDATE: u8 = 2;
const TYPE_NOTIFICATION: u8 = 3;
const TYPE_KEEPALIVE: u8 = 4;
const TYPE_ROUTE_REFRESH: u8 = 5;

/// An IPv4 or IPv6 prefix with its host bits clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    /// IPv4 prefix, length 0..=32.
    V4(Ipv4Addr, u8),
    /// IPv6 prefix, length 0..=128.
    V6(Ipv6Addr, u8),
}

/// A prefix length out of range or an address with host bits set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid prefix {0}")]
pub struct InvalidPrefix(pub String);

impl Prefix {
    /// A checked prefix: `len` in range and host bits clear.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, InvalidPrefix> {
        let prefix = match addr {
            IpAddr::V4(a) => Prefix::V4(a, len),
            IpAddr::V6(a) => Prefix::V6(a, len),
        };
        let max = prefix.max_len();
        if len > max || prefix.masked() != prefix {
            return Err(InvalidPrefix(format!("{addr}/{len}")));
        }
        Ok(prefix)
    }

    /// The host route (/32 or /128) of one address.
    pub fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Prefix::V4(a, 32),
            IpAddr::V6(a) => Prefix::V6(a, 128),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        match *self {
            Prefix::V4(a, _) => IpAddr::V4(a),
            Prefix::V6(a, _) => IpAddr::V6(a),
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        match *self {
            Prefix::V4(_, l) | Prefix::V6(_, l) => l,
        }
    }

    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        matches!(self, Prefix::V4(..))
    }

    fn max_len(&self) -> u8 {
        if self.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn masked(&self) -> Self {
        match *self {
            Prefix::V4(a, l) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(l.min(32))).unwrap_or(0);
                Prefix::V4(Ipv4Addr::from(u32::from(a) & mask), l)
            }
            Prefix::V6(a, l) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(l.min(128)))
                    .unwrap_or(0);
                Prefix::V6(Ipv6Addr::from(u128::from(a) & mask), l)
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

impl FromStr for Prefix {
    type Err = InvalidPrefix;

    /// `198.18.0.1/32`, `2001:db8::1/128`, or a bare address (host route).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPrefix(s.to_string());
        match s.split_once('/') {
            None => s.parse().map(Prefix::host).map_err(|_| bad()),
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                let len: u8 = len.parse().map_err(|_| bad())?;
                Prefix::new(addr, len)
            }
        }
    }
}

/// One address family vipgate announces (AFI/SAFI unicast only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// AFI 1, SAFI 1.
    Ipv4Unicast,
    /// AFI 2, SAFI 1.
    Ipv6Unicast,
}

/// One capability of an OPEN message (RFC 5492), in the order received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (RFC 4760) for a family we speak.
    MultiProtocol(Family),
    /// Route refresh (RFC 2918).
    RouteRefresh,
    /// Enhanced route refresh (RFC 7313); we read it, we do not send it.
    EnhancedRouteRefresh,
    /// 4-octet AS number (RFC 6793).
    FourOctetAs(u32),
    /// Extended message (RFC 8654).
    ExtendedMessage,
    /// Any other capability, kept as raw code and value.
    Other {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// An OPEN message (RFC 4271 4.2) with its capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRepr {
    /// The speaker's AS: the 4-octet capability's value when present, else
    /// the 2-octet field.
    pub my_as: u32,
    /// Proposed hold time in seconds (0 or >= 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, in order, all in one Capabilities optional parameter.
    pub capabilities: Vec<Capability>,
}

impl OpenRepr {
    /// The 4-octet AS capability's value, if sent.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    /// Whether the capability list contains `cap`.
    pub fn has(&self, cap: &Capability) -> bool {
        self.capabilities.contains(cap)
    }
}

/// A NOTIFICATION message (RFC 4271 4.5): error code, subcode and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRepr {
    /// Error code (RFC 4271 4.5).
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data, meaning depends on code and subcode.
    pub data: Vec<u8>,
}

/// Error codes and subcodes of RFC 4271 4.5, RFC 4486, RFC 6608, RFC 7313.
#[allow(missing_docs)]
pub mod error_code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    pub const OPEN_MESSAGE: u8 = 2;
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;

    pub const UPDATE_MESSAGE: u8 = 3;
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;

    pub const FSM: u8 = 5;
    pub const FSM_UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const FSM_UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    pub const CEASE: u8 = 6;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;

    pub const ROUTE_REFRESH: u8 = 7;
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;
}

impl NotificationRepr {
    /// A NOTIFICATION without data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Self::with_data(code, subcode, Vec::new())
    }

    /// A NOTIFICATION with data.
    pub fn with_data(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        NotificationRepr {
            code,
            subcode,
            data,
        }
    }
}

impl fmt::Display for NotificationRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.code {
            1 => "message header error",
            2 => "OPEN message error",
            3 => "UPDATE message error",
            4 => "hold timer expired",
            5 => "finite state machine error",
            6 => "cease",
            7 => "ROUTE-REFRESH message error",
            _ => "unknown error",
        };
        write!(f, "{name} ({}/{})", self.code, self.subcode)
    }
}

/// A whole BGP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(OpenRepr),
    /// UPDATE.
    Update(UpdateRepr),
    /// NOTIFICATION.
    Notification(NotificationRepr),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918): AFI and SAFI.
    RouteRefresh {
        /// Address family identifier.
        afi: u16,
        /// Subsequent address family identifier.
        safi: u8,
    },
}

/// What decoding needs to know about the session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeContext {
    /// Both sides sent the 4-octet AS capability: AS_PATH carries 4-octet
    /// ASNs.
    pub four_octet_as: bool,
    /// iBGP session: a missing LOCAL_PREF is an error (RFC 7606 7.5).
    pub ibgp: bool,
}

/// Why a message could not be decoded. [`DecodeError::notification`] gives
/// the NOTIFICATION to send before closing the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The marker is not all ones.
    #[error("connection not synchronized (bad marker)")]
    ConnectionNotSynchronized,
    /// The length field is out of range for the message type.
    #[error("bad message length {0}")]
    BadMessageLength(u16),
    /// Unknown message type.
    #[error("bad message type {0}")]
    BadMessageType(u8),
    /// OPEN with a version other than 4.
    #[error("unsupported BGP version {0}")]
    UnsupportedVersion(u8),
    /// OPEN with a BGP identifier that is not a unicast address.
    #[error("bad BGP identifier")]
    BadBgpIdentifier,
    /// OPEN with an optional parameter we do not know.
    #[error("unsupported optional parameter {0}")]
    UnsupportedOptionalParameter(u8),
    /// OPEN with hold time 1 or 2.
    #[error("unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    /// OPEN that is otherwise malformed.
    #[error("malformed OPEN: {0}")]
    MalformedOpen(String),
    /// UPDATE error that resets the session (RFC 7606 section 4 and 5).
    #[error("UPDATE error {subcode}: {reason}")]
    Update {
        /// UPDATE message error subcode.
        subcode: u8,
        /// Data for the NOTIFICATION (often the offending attribute).
        data: Vec<u8>,
        /// What was wrong.
        reason: &'static str,
    },
    /// ROUTE-REFRESH with a bad length (RFC 7313 section 5).
    #[error("bad ROUTE-REFRESH length {0}")]
    BadRouteRefreshLength(u16),
}

impl DecodeError {
    /// The NOTIFICATION that RFC 4271 section 6 asks for.
    pub fn notification(&self) -> NotificationRepr {
        use error_code::*;
        let n = NotificationRepr::with_data;
        match self {
            Self::ConnectionNotSynchronized => {
                n(MESSAGE_HEADER, CONNECTION_NOT_SYNCHRONIZED, vec![])
            }
            Self::BadMessageLength(l) => {
                n(MESSAGE_HEADER, BAD_MESSAGE_LENGTH, l.to_be_bytes().into())
            }
            Self::BadMessageType(t) => n(MESSAGE_HEADER, BAD_MESSAGE_TYPE, vec![*t]),
            // Data: the largest version we support (RFC 4271 6.2).
            Self::UnsupportedVersion(_) => n(
                OPEN_MESSAGE,
                UNSUPPORTED_VERSION_NUMBER,
                vec![0, BGP_VERSION],
            ),
            Self::BadBgpIdentifier => n(OPEN_MESSAGE, BAD_BGP_IDENTIFIER, vec![]),
            Self::UnsupportedOptionalParameter(_) => {
                n(OPEN_MESSAGE, UNSUPPORTED_OPTIONAL_PARAMETER, vec![])
            }
            Self::UnacceptableHoldTime(_) => n(OPEN_MESSAGE, UNACCEPTABLE_HOLD_TIME, vec![]),
            Self::MalformedOpen(_) => n(OPEN_MESSAGE, 0, vec![]),
            Self::Update { subcode, data, .. } => n(UPDATE_MESSAGE, *subcode, data.clone()),
            Self::BadRouteRefreshLength(l) => n(
                ROUTE_REFRESH,
                INVALID_MESSAGE_LENGTH,
                l.to_be_bytes().into(),
            ),
        }
    }
}

/// Cuts a TCP byte stream into whole BGP messages.
///
/// Checks the marker and that the length is within 19..=4096, or
/// 19..=65535 after [`Framer::set_extended_messages`] (RFC 8654). After an
/// error the stream is out of sync; the caller sends the NOTIFICATION and
/// closes the connection.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    extended: bool,
}

impl Framer {
    /// An empty framer for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow messages up to 65535 octets (both sides sent Extended Message).
    pub fn set_extended_messages(&mut self, extended: bool) {
        self.extended = extended;
    }

    /// Append bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Octets buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message (header included), if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = check_header(&self.buf, self.extended)?;
        if self.buf.len() < len {
            return Ok(None);
        }
        let rest = self.buf.split_off(len);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

/// Checks marker and length of a header; returns the message length.
fn check_header(buf: &[u8], extended: bool) -> Result<usize, DecodeError> {
    if buf.get(..16) != Some(&MARKER[..]) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let raw = u16::from_be_bytes([buf[16], buf[17]]);
    let max = if extended {
        MAX_EXTENDED_MESSAGE_LEN
    } else {
        MAX_MESSAGE_LEN
    };
    let len = usize::from(raw);
    if !(HEADER_LEN..=max).contains(&len) {
        return Err(DecodeError::BadMessageLength(raw));
    }
    Ok(len)
}

impl Message {
    /// Decode one whole message as returned by [`Framer::next_message`]
    /// (header included).
    pub fn decode(bytes: &[u8], ctx: &DecodeContext) -> Result<Self, DecodeError> {
        let len = check_header(bytes, true)?;
        if len != bytes.len() {
            return Err(DecodeError::BadMessageLength(len as u16));
        }
        let body = &bytes[HEADER_LEN..];
        let bad_len = || DecodeError::BadMessageLength(len as u16);
        match bytes[18] {
            TYPE_OPEN if len <= MAX_MESSAGE_LEN && body.len() >= 10 => decode_open(body),
            TYPE_UPDATE if body.len() >= 4 => update::decode(body, ctx).map(Message::Update),
            TYPE_NOTIFICATION if body.len() >= 2 => Ok(Message::Notification(
                NotificationRepr::with_data(body[0], body[1], body[2..].to_vec()),
            )),
            TYPE_KEEPALIVE if body.is_empty() => Ok(Message::Keepalive),
            TYPE_ROUTE_REFRESH => decode_route_refresh(body, len as u16),
            TYPE_OPEN | TYPE_UPDATE | TYPE_NOTIFICATION | TYPE_KEEPALIVE => Err(bad_len()),
            other => Err(DecodeError::BadMessageType(other)),
        }
    }

    /// Encode, header included. Fails only if the message would exceed
    /// `max_len` (4096, or 65535 with Extended Message).
    pub fn encode(&self, ctx: &DecodeContext, max_len: usize) -> Result<Vec<u8>, EncodeError> {
        let bytes = match self {
            Message::Open(open) => write_netgauze(&BgpMessage::Open(open_to_netgauze(open)))?,
            Message::Update(update) => {
                write_netgauze(&BgpMessage::Update(update::to_netgauze(update, ctx)?))?
            }
            Message::Notification(n) => {
                let mut body = vec![n.code, n.subcode];
                body.extend_from_slice(&n.data);
                with_header(TYPE_NOTIFICATION, &body)
            }
            Message::Keepalive => with_header(TYPE_KEEPALIVE, &[]),
            Message::RouteRefresh { afi, safi } => {
                let [a, b] = afi.to_be_bytes();
                with_header(TYPE_ROUTE_REFRESH, &[a, b, 0, *safi])
            }
        };
        if bytes.len() > max_len.min(MAX_EXTENDED_MESSAGE_LEN) {
            return Err(EncodeError::TooLong(bytes.len()));
        }
        Ok(bytes)
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Longer than the session's maximum message size.
    #[error("message of {0} octets is too long")]
    TooLong(usize),
    /// A prefix netgauze refuses (multicast or broadcast network).
    #[error("prefix {0} is not a unicast network")]
    NotUnicast(Prefix),
    /// IPv4 NLRI without a NEXT_HOP, or IPv6 NLRI without an MP next hop.
    #[error("announced prefixes without a next hop of their family")]
    MissingNextHop,
    /// netgauze could not write the message.
    #[error("netgauze: {0}")]
    Netgauze(String),
}

fn with_header(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn write_netgauze(msg: &BgpMessage) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(msg.len());
    msg.write(&mut out)
        .map_err(|e| EncodeError::Netgauze(e.to_string()))?;
    Ok(out)
}

fn decode_route_refresh(body: &[u8], len: u16) -> Result<Message, DecodeError> {
    match body {
        [a, b, _reserved, safi] => Ok(Message::RouteRefresh {
            afi: u16::from_be_bytes([*a, *b]),
            safi: *safi,
        }),
        _ => Err(DecodeError::BadRouteRefreshLength(len)),
    }
}

fn decode_open(body: &[u8]) -> Result<Message, DecodeError> {
    // Capabilities we cannot parse are ignored (RFC 5492 section 4), not
    // fatal: netgauze collects them in the context instead of failing.
    let mut ctx = BgpParsingContext::new(
        true,
        Default::default(),
        Default::default(),
        true,
        true,
        false,
        true,
    );
    let mut reader = SliceReader::new(body);
    let open = BgpOpenMessage::parse(&mut reader, &mut ctx).map_err(open_error)?;
    if !reader.is_empty() {
        return Err(DecodeError::MalformedOpen("trailing octets".into()));
    }
    let capabilities: Vec<Capability> = open
        .capabilities()
        .into_iter()
        .map(capability_from_netgauze)
        .collect();
    let my_as = capabilities
        .iter()
        .find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
        .unwrap_or(u32::from(open.my_as()));
    Ok(Message::Open(OpenRepr {
        my_as,
        hold_time: open.hold_time(),
        bgp_id: open.bgp_id(),
        capabilities,
    }))
}

fn open_error(e: BgpOpenMessageParsingError) -> DecodeError {
    use netgauze_bgp_pkt::wire::deserializer::open::BgpParameterParsingError as P;
    match e {
        BgpOpenMessageParsingError::UnsupportedVersionNumber { version, .. } => {
            DecodeError::UnsupportedVersion(version)
        }
        BgpOpenMessageParsingError::UnacceptableHoldTime { time, .. } => {
            DecodeError::UnacceptableHoldTime(time)
        }
        BgpOpenMessageParsingError::InvalidBgpId { .. } => DecodeError::BadBgpIdentifier,
        BgpOpenMessageParsingError::ParameterError(P::UndefinedParameterType { code, .. }) => {
            DecodeError::UnsupportedOptionalParameter(code)
        }
        other => DecodeError::MalformedOpen(other.to_string()),
    }
}

fn capability_from_netgauze(cap: &BgpCapability) -> Capability {
    match cap {
        BgpCapability::MultiProtocolExtensions(mp) => match mp.address_type() {
            AddressType::Ipv4Unicast => return Capability::MultiProtocol(Family::Ipv4Unicast),
            AddressType::Ipv6Unicast => return Capability::MultiProtocol(Family::Ipv6Unicast),
            _ => {}
        },
        BgpCapability::RouteRefresh => return Capability::RouteRefresh,
        BgpCapability::EnhancedRouteRefresh => return Capability::EnhancedRouteRefresh,
        BgpCapability::FourOctetAs(asn) => return Capability::FourOctetAs(asn.asn4()),
        BgpCapability::ExtendedMessage => return Capability::ExtendedMessage,
        _ => {}
    }
    raw_capability(cap)
}

/// Any other capability as code and value, written back by netgauze.
fn raw_capability(cap: &BgpCapability) -> Capability {
    let mut tlv = Vec::with_capacity(cap.len());
    // Writing into a Vec cannot fail for a capability netgauze just parsed;
    // if it ever did, the capability is kept with an empty value.
    let _ = cap.write(&mut tlv);
    let code = tlv.first().copied().unwrap_or(0);
    let value = tlv.get(2..).map(<[u8]>::to_vec).unwrap_or_default();
    Capability::Other { code, value }
}

fn capability_to_netgauze(cap: &Capability) -> BgpCapability {
    let mp = |t| BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(t));
    match cap {
        Capability::MultiProtocol(Family::Ipv4Unicast) => mp(AddressType::Ipv4Unicast),
        Capability::MultiProtocol(Family::Ipv6Unicast) => mp(AddressType::Ipv6Unicast),
        Capability::RouteRefresh => BgpCapability::RouteRefresh,
        Capability::EnhancedRouteRefresh => BgpCapability::EnhancedRouteRefresh,
        Capability::FourOctetAs(asn) => {
            BgpCapability::FourOctetAs(FourOctetAsCapability::new(*asn))
        }
        Capability::ExtendedMessage => BgpCapability::ExtendedMessage,
        Capability::Other { code, value } => {
            BgpCapability::Unrecognized(UnrecognizedCapability::new(*code, value.clone()))
        }
    }
}

fn open_to_netgauze(open: &OpenRepr) -> BgpOpenMessage {
    let my_as = u16::try_from(open.my_as).unwrap_or(AS_TRANS);
    let caps: Vec<BgpCapability> = open
        .capabilities
        .iter()
        .map(capability_to_netgauze)
        .collect();
    let params = if caps.is_empty() {
        vec![]
    } else {
        vec![BgpOpenMessageParameter::Capabilities(caps.into())]
    };
    BgpOpenMessage::new(my_as, open.hold_time, open.bgp_id, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: &[u8] = include_bytes!("../tests/fixtures/bird_open.bin");
    const KEEPALIVE: &[u8] = include_bytes!("../tests/fixtures/bird_keepalive.bin");
    const UPDATE_V4: &[u8] = include_bytes!("../tests/fixtures/bird_update_v4.bin");
    const EOR_V4: &[u8] = include_bytes!("../tests/fixtures/bird_end_of_rib_v4.bin");
    const UPDATE_V6: &[u8] = include_bytes!("../tests/fixtures/bird_update_v6.bin");
    const EOR_V6: &[u8] = include_bytes!("../tests/fixtures/bird_end_of_rib_v6.bin");
    const WITHDRAW_V4: &[u8] = include_bytes!("../tests/fixtures/bird_withdraw_v4.bin");
    const WITHDRAW_V6: &[u8] = include_bytes!("../tests/fixtures/bird_withdraw_v6.bin");
    const CEASE: &[u8] = include_bytes!("../tests/fixtures/bird_notification_cease.bin");

    const CTX: DecodeContext = DecodeContext {
        four_octet_as: true,
        ibgp: false,
    };
    const BIRD_AS: u32 = 4_200_000_001;

    fn decode(bytes: &[u8]) -> Message {
        Message::decode(bytes, &CTX).expect("fixture decodes")
    }

    fn round_trip(bytes: &[u8], expected: Message) {
        assert_eq!(decode(bytes), expected);
        assert_eq!(
            expected.encode(&CTX, MAX_MESSAGE_LEN).expect("encodes"),
            bytes
        );
    }

    fn v4(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    fn bird_path() -> Option<Vec<AsSegment>> {
        Some(vec![AsSegment::Sequence(vec![BIRD_AS])])
    }

    #[test]
    fn open_from_bird() {
        let expected = Message::Open(OpenRepr {
            my_as: BIRD_AS,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(198, 18, 0, 1),
            capabilities: vec![
                Capability::MultiProtocol(Family::Ipv4Unicast),
                Capability::MultiProtocol(Family::Ipv6Unicast),
                Capability::RouteRefresh,
                Capability::Other {
                    code: 64,
                    value: vec![0x00, 0x78],
                },
                Capability::FourOctetAs(BIRD_AS),
                Capability::EnhancedRouteRefresh,
                Capability::Other {
                    code: 71,
                    value: vec![],
                },
            ],
        });
        round_trip(OPEN, expected);
        // The 2-octet field carries AS_TRANS.
        assert_eq!(u16::from_be_bytes([OPEN[20], OPEN[21]]), AS_TRANS);
    }

    #[test]
    fn keepalive_and_notification_from_bird() {
        round_trip(KEEPALIVE, Message::Keepalive);
        round_trip(CEASE, Message::Notification(NotificationRepr::new(6, 2)));
    }

    #[test]
    fn update_v4_from_bird() {
        let attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: bird_path(),
            next_hop: Some(Ipv4Addr::new(198, 18, 0, 1)),
            med: Some(50),
            communities: vec![Community::new(65000, 100)],
            large_communities: vec![LargeCommunity {
                global_admin: BIRD_AS,
                local_data1: 1,
                local_data2: 2,
            }],
            ..Default::default()
        };
        let update = UpdateRepr::announce(vec![v4("198.18.10.1/32")], attributes);
        round_trip(UPDATE_V4, Message::Update(update));
    }

    #[test]
    fn update_v6_from_bird() {
        let attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: bird_path(),
            mp_next_hop: Some(MpNextHop {
                global: "2001:db8::1".parse().expect("addr"),
                link_local: Some("fe80::4c9a:79ff:fef5:f9dc".parse().expect("addr")),
            }),
            communities: vec![Community::GRACEFUL_SHUTDOWN],
            large_communities: vec![LargeCommunity {
                global_admin: BIRD_AS,
                local_data1: 3,
                local_data2: 4,
            }],
            ..Default::default()
        };
        let update = UpdateRepr::announce(vec![v4("2001:db8:10::1/128")], attributes);
        round_trip(UPDATE_V6, Message::Update(update));
    }

    #[test]
    fn withdrawals_and_end_of_rib_from_bird() {
        round_trip(
            WITHDRAW_V4,
            Message::Update(UpdateRepr::withdraw(vec![v4("198.18.10.1/32")])),
        );
        let w6 = UpdateRepr::withdraw(vec![v4("2001:db8:10::1/128")]);
        round_trip(WITHDRAW_V6, Message::Update(w6));
        for (bytes, family) in [(EOR_V4, Family::Ipv4Unicast), (EOR_V6, Family::Ipv6Unicast)] {
            let eor = UpdateRepr {
                end_of_rib: Some(family),
                ..Default::default()
            };
            round_trip(bytes, Message::Update(eor));
        }
    }

    #[test]
    fn framer_handles_partial_reads() {
        let stream: Vec<u8> = [OPEN, KEEPALIVE, UPDATE_V4, UPDATE_V6, CEASE].concat();
        for chunk in [1, 7, 19, 64, stream.len()] {
            let mut framer = Framer::new();
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                framer.push(piece);
                while let Some(m) = framer.next_message().expect("valid stream") {
                    out.push(m);
                }
            }
            assert_eq!(out, vec![OPEN, KEEPALIVE, UPDATE_V4, UPDATE_V6, CEASE]);
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn framer_checks_marker_and_length() {
        let mut bad_marker = KEEPALIVE.to_vec();
        bad_marker[3] = 0;
        let mut framer = Framer::new();
        framer.push(&bad_marker);
        let err = framer.next_message().expect_err("bad marker");
        assert_eq!(err.notification(), NotificationRepr::new(1, 1));

        for len in [18u16, 4097] {
            let mut bad = KEEPALIVE.to_vec();
            bad[16..18].copy_from_slice(&len.to_be_bytes());
            let mut framer = Framer::new();
            framer.push(&bad);
            let err = framer.next_message().expect_err("bad length");
            assert_eq!(
                err.notification(),
                NotificationRepr::with_data(1, 2, len.to_be_bytes().into())
            );
        }
        // 4097 is fine once Extended Message is negotiated (then incomplete).
        let mut long = KEEPALIVE.to_vec();
        long[16..18].copy_from_slice(&4097u16.to_be_bytes());
        let mut framer = Framer::new();
        framer.set_extended_messages(true);
        framer.push(&long);
        assert_eq!(framer.next_message(), Ok(None));
    }

    #[test]
    fn header_errors_map_to_notifications() {
        let mut keepalive_20 = KEEPALIVE.to_vec();
        keepalive_20.push(0);
        keepalive_20[17] = 20;
        let err = Message::decode(&keepalive_20, &CTX).expect_err("keepalive of 20");
        assert_eq!(
            err.notification(),
            NotificationRepr::with_data(1, 2, vec![0, 20])
        );
        let mut bad_type = KEEPALIVE.to_vec();
        bad_type[18] = 9;
        let err = Message::decode(&bad_type, &CTX).expect_err("type 9");
        assert_eq!(
            err.notification(),
            NotificationRepr::with_data(1, 3, vec![9])
        );
    }

    #[test]
    fn open_errors_map_to_notifications() {
        let mut v3 = OPEN.to_vec();
        v3[19] = 3;
        let err = Message::decode(&v3, &CTX).expect_err("version 3");
        assert_eq!(
            err.notification(),
            NotificationRepr::with_data(2, 1, vec![0, 4])
        );
        let mut hold2 = OPEN.to_vec();
        hold2[22..24].copy_from_slice(&2u16.to_be_bytes());
        let err = Message::decode(&hold2, &CTX).expect_err("hold 2");
        assert_eq!(err.notification(), NotificationRepr::new(2, 6));
        let mut id0 = OPEN.to_vec();
        id0[24..28].copy_from_slice(&[0, 0, 0, 0]);
        let err = Message::decode(&id0, &CTX).expect_err("id 0");
        assert_eq!(err.notification(), NotificationRepr::new(2, 3));
    }

    #[test]
    fn encodes_as_trans_for_large_asn() {
        let open = OpenRepr {
            my_as: 4_200_000_002,
            hold_time: 0,
            bgp_id: Ipv4Addr::new(198, 18, 0, 9),
            capabilities: vec![Capability::FourOctetAs(4_200_000_002)],
        };
        let bytes = Message::Open(open.clone())
            .encode(&CTX, MAX_MESSAGE_LEN)
            .expect("encodes");
        assert_eq!(u16::from_be_bytes([bytes[20], bytes[21]]), AS_TRANS);
        assert_eq!(decode(&bytes), Message::Open(open));
    }

    #[test]
    fn prefix_parsing() {
        assert_eq!(
            v4("198.18.0.1"),
            Prefix::V4(Ipv4Addr::new(198, 18, 0, 1), 32)
        );
        assert!("198.18.0.1/24".parse::<Prefix>().is_err());
        assert!("198.18.0.0/33".parse::<Prefix>().is_err());
        assert_eq!(v4("2001:db8::/32").to_string(), "2001:db8::/32");
    }
}
