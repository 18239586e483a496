//! VRRP advertisements on the wire: RFC 5798 (VRRPv3 over IPv4 and IPv6)
//! and RFC 3768 (VRRPv2 over IPv4), the way keepalived 2.2 sends them.
//!
//! Owns: the layout of the VRRP message (the payload of IP protocol 112),
//! its checksum in the three flavours (v2 over the message only, v3 over
//! IPv6 with the IPv6 pseudo-header, v3 over IPv4 with or without the IPv4
//! pseudo-header, see [`ChecksumMode`]), and the receive checks that need
//! nothing but the message, its IP addresses and its TTL ([`parse`]).
//!
//! Must not touch: sockets and IP headers (`socket.rs` strips and builds
//! those), or anything that needs an instance's configuration. VRID
//! dispatch, the VIP list and interval comparisons, the v2 password
//! comparison and the unicast peer check belong to `instance.rs`, which
//! counts them under its own names. Every drop reason found here is one
//! [`AdvertError`] variant, a counter in status.
//!
//! Layout (RFC 5798 section 5.1, RFC 3768 section 5.1):
//!
//! ```text
//!  0               1               2               3
//! |Version| Type  |  Virtual Rtr ID |   Priority    |Count IPvX Addr|
//! v3: |(rsvd)|     Max Adver Int (12 bits, cs)      |    Checksum   |
//! v2: |  Auth Type    |  Adver Int (s)  |         Checksum          |
//! |                 IPvX Address(es), Count of them                 |
//! v2 only:        Authentication Data (8 octets)
//! ```

#![deny(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vipgate_dataplane::checksum;

/// IP protocol number of VRRP.
pub const VRRP_PROTO: u8 = 112;
/// IPv4 multicast group of VRRP (RFC 5798 section 5.1.1.2).
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP (RFC 5798 section 5.1.2.2).
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The TTL / hop limit every advert is sent with and must arrive with.
pub const VRRP_TTL: u8 = 255;
/// Fixed header: version/type, VRID, priority, count, interval, checksum.
pub const HEADER_LEN: usize = 8;
/// v2 Authentication Data, after the addresses.
pub const AUTH_LEN: usize = 8;
/// The Count IPvX Addr field is one octet.
pub const MAX_ADDRS: usize = 255;
/// v3 Max Adver Int is 12 bits of centiseconds.
pub const MAX_INTERVAL_V3_CS: u16 = 0x0fff;
/// v2 Adver Int is one octet of seconds.
pub const MAX_INTERVAL_V2_CS: u16 = 255 * 100;
/// The only VRRP message type.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// The longest message: v3 over IPv6 with 255 addresses.
pub const MAX_LEN: usize = HEADER_LEN + MAX_ADDRS * 16;

/// v2 Auth Type values (RFC 2338 section 5.3.6).
const AUTH_TYPE_NONE: u8 = 0;
const AUTH_TYPE_SIMPLE: u8 = 1;

/// Byte offsets of the fields.
mod field {
    pub const VERSION_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const V2_AUTH_TYPE: usize = 4;
    pub const V2_ADVER_INT: usize = 5;
    pub const V3_MAX_ADVER_INT: std::ops::Range<usize> = 4..6;
    pub const CHECKSUM: std::ops::Range<usize> = 6..8;
}

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// RFC 3768 (and RFC 2338's authentication): IPv4 only, seconds.
    V2,
    /// RFC 5798: IPv4 and IPv6, centiseconds, no authentication.
    V3,
}

impl Version {
    /// The value of the Version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    /// The version a Version field value names, if any.
    pub fn from_number(n: u8) -> Option<Version> {
        match n {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            _ => None,
        }
    }
}

/// v3 over IPv4: RFC 5798 checksum with the IPv4 pseudo-header (keepalived/FRR default), or RFC 9568's without it.
///
/// The pseudo-header's destination is the packet's destination: the group
/// for multicast, the peer for unicast (keepalived 2.2 default; older
/// keepalived used the group also for unicast, 2.2 detects and adopts that
/// on receive). Ignored for v2 (never a pseudo-header) and for IPv6
/// (always one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// RFC 5798 section 5.2.8: the IPv4 pseudo-header is included.
    #[default]
    PseudoHeader,
    /// RFC 9568 section 5.2.8 for IPv4: the VRRP message only, as for v2
    /// (keepalived's later `v3_checksum_as_v2`; 2.2.7 lacks it).
    NoPseudoHeader,
}

/// v2 authentication (RFC 2338/3768): keepalived supports none and simple text ("PASS").
///
/// IP Authentication Header (auth type 2) was removed by RFC 3768 and is
/// refused ([`AdvertError::BadAuth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Auth Type 0; the Authentication Data is sent as zeros and ignored
    /// on receive.
    None,
    /// Auth Type 1: the password, zero-padded to 8 octets.
    Simple([u8; 8]),
}

impl Auth {
    /// Simple text authentication with `password` as keepalived's
    /// `auth_pass` stores it: cut to 8 octets, zero-padded.
    pub fn simple(password: &[u8]) -> Auth {
        let mut data = [0u8; AUTH_LEN];
        let n = password.len().min(AUTH_LEN);
        data[..n].copy_from_slice(&password[..n]);
        Auth::Simple(data)
    }

    /// The v2 Auth Type field value.
    pub fn type_code(&self) -> u8 {
        match self {
            Auth::None => AUTH_TYPE_NONE,
            Auth::Simple(_) => AUTH_TYPE_SIMPLE,
        }
    }

    /// The 8 octets of Authentication Data.
    fn data(&self) -> [u8; AUTH_LEN] {
        match self {
            Auth::None => [0; AUTH_LEN],
            Auth::Simple(data) => *data,
        }
    }
}

/// The meaning of one advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds: v3 Max Adver Int (12 bits), v2 Adver Int seconds × 100.
    pub interval_cs: u16,
    /// All of one family, the family of the packet.
    pub addrs: Vec<IpAddr>,
    /// [`Auth::None`] for v3.
    pub auth: Auth,
}

/// Why a received advert was dropped (one counter each; names are the counter names in status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdvertError {
    /// Shorter than the 8-octet header.
    Truncated,
    /// Version field not the instance's version (keepalived drops mixed
    /// versions too), not 2 or 3, or v2 over IPv6.
    BadVersion,
    /// Type field is not 1 (advertisement).
    BadType,
    /// TTL / hop limit is not 255.
    BadTtl,
    /// Checksum does not verify.
    BadChecksum,
    /// Message length does not match Count IPvX Addr (too short or too long).
    BadLength,
    /// Count IPvX Addr is 0, or source and destination families differ.
    BadAddrCount,
    /// v2 Auth Type is neither 0 (none) nor 1 (simple text).
    BadAuth,
    /// Advertisement interval is 0.
    BadInterval,
}

impl AdvertError {
    /// Every variant, in counter order.
    pub const ALL: [AdvertError; 9] = [
        AdvertError::Truncated,
        AdvertError::BadVersion,
        AdvertError::BadType,
        AdvertError::BadTtl,
        AdvertError::BadChecksum,
        AdvertError::BadLength,
        AdvertError::BadAddrCount,
        AdvertError::BadAuth,
        AdvertError::BadInterval,
    ];

    /// The counter name in status.
    pub fn name(&self) -> &'static str {
        match self {
            AdvertError::Truncated => "truncated",
            AdvertError::BadVersion => "bad_version",
            AdvertError::BadType => "bad_type",
            AdvertError::BadTtl => "bad_ttl",
            AdvertError::BadChecksum => "bad_checksum",
            AdvertError::BadLength => "bad_length",
            AdvertError::BadAddrCount => "bad_addr_count",
            AdvertError::BadAuth => "bad_auth",
            AdvertError::BadInterval => "bad_interval",
        }
    }
}

impl fmt::Display for AdvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for AdvertError {}

/// Why an advert cannot be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    #[error("buffer too short: the advert needs {needed} octets")]
    BufferTooShort { needed: usize },
    #[error("an advert carries 1 to 255 addresses")]
    BadAddrCount,
    #[error("source, destination and advertised addresses must all be of one family")]
    MixedFamilies,
    #[error("VRRPv2 runs over IPv4 only")]
    V2OverIpv6,
    #[error("interval not representable: v3 1..=4095 cs, v2 whole seconds 1..=255")]
    BadInterval,
    #[error("VRRPv3 has no authentication")]
    AuthOnV3,
}

/// IP family of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of a packet from `src` to `dst`, if they agree.
    fn of(src: IpAddr, dst: IpAddr) -> Option<Family> {
        match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => Some(Family::V4),
            (IpAddr::V6(_), IpAddr::V6(_)) => Some(Family::V6),
            _ => None,
        }
    }

    fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// A typed view of a VRRP message in a buffer (smoltcp style).
///
/// Accessors of fixed header fields index the buffer: use
/// [`VrrpPacket::new_checked`] for bytes from the network, which ensures
/// the header is there; [`VrrpPacket::new_unchecked`] when emitting into a
/// buffer known to be long enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VrrpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VrrpPacket<T> {
    /// Wraps `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> VrrpPacket<T> {
        VrrpPacket { buffer }
    }

    /// Wraps `buffer`, which must hold at least the fixed header.
    pub fn new_checked(buffer: T) -> Result<VrrpPacket<T>, AdvertError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(AdvertError::Truncated);
        }
        Ok(VrrpPacket { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The Version field (high nibble of octet 0).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] >> 4
    }

    /// The Type field (low nibble of octet 0).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] & 0x0f
    }

    /// Virtual Rtr ID.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// Priority.
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Count IPvX Addr.
    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// v2 Auth Type.
    pub fn v2_auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::V2_AUTH_TYPE]
    }

    /// v2 Adver Int, seconds.
    pub fn v2_adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::V2_ADVER_INT]
    }

    /// v3 Max Adver Int, centiseconds (the 4 reserved bits masked off).
    pub fn v3_max_adver_int(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::V3_MAX_ADVER_INT]) & MAX_INTERVAL_V3_CS
    }

    /// Checksum.
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Everything after the fixed header: the addresses, then for v2 the
    /// Authentication Data.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum verifies for a message from `src` to `dst`
    /// (the buffer must be exactly the message). Without allocation.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr, mode: ChecksumMode) -> bool {
        let msg = self.buffer.as_ref();
        let pseudo = pseudo_header_sum(self.version(), src, dst, mode, msg.len());
        checksum::combine(&[pseudo, checksum::sum(msg)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VrrpPacket<T> {
    /// Sets Version and Type.
    pub fn set_version_type(&mut self, version: Version, msg_type: u8) {
        self.buffer.as_mut()[field::VERSION_TYPE] = (version.number() << 4) | (msg_type & 0x0f);
    }

    /// Sets Virtual Rtr ID.
    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    /// Sets Priority.
    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    /// Sets Count IPvX Addr.
    pub fn set_addr_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    /// Sets v2 Auth Type.
    pub fn set_v2_auth_type(&mut self, auth_type: u8) {
        self.buffer.as_mut()[field::V2_AUTH_TYPE] = auth_type;
    }

    /// Sets v2 Adver Int (seconds).
    pub fn set_v2_adver_int(&mut self, seconds: u8) {
        self.buffer.as_mut()[field::V2_ADVER_INT] = seconds;
    }

    /// Sets v3 Max Adver Int (centiseconds, 12 bits); the reserved bits become 0.
    pub fn set_v3_max_adver_int(&mut self, cs: u16) {
        let bytes = (cs & MAX_INTERVAL_V3_CS).to_be_bytes();
        self.buffer.as_mut()[field::V3_MAX_ADVER_INT].copy_from_slice(&bytes);
    }

    /// Sets Checksum.
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// The addresses (and v2 Authentication Data), mutable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and stores the checksum of the whole buffer, which must be
    /// exactly the message.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr, mode: ChecksumMode) {
        self.set_checksum(0);
        let msg = self.buffer.as_ref();
        let pseudo = pseudo_header_sum(self.version(), src, dst, mode, msg.len());
        let sum = checksum::combine(&[pseudo, checksum::sum(msg)]);
        self.set_checksum(!sum);
    }
}

/// The sum of the pseudo-header that version `version` includes for a
/// message of `len` octets from `src` to `dst` (0 when there is none).
fn pseudo_header_sum(version: u8, src: IpAddr, dst: IpAddr, mode: ChecksumMode, len: usize) -> u16 {
    if version != Version::V3.number() {
        return 0;
    }
    // A message is at most MAX_LEN octets (checked before), well within u32.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    match (src, dst, mode) {
        (IpAddr::V4(s), IpAddr::V4(d), ChecksumMode::PseudoHeader) => {
            checksum::pseudo_header_v4(s, d, VRRP_PROTO, len)
        }
        (IpAddr::V6(s), IpAddr::V6(d), _) => checksum::pseudo_header_v6(s, d, VRRP_PROTO, len),
        _ => 0,
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The length of a message of `version` carrying `count` addresses of `family`.
fn message_len(version: Version, family: Family, count: usize) -> usize {
    let auth = match version {
        Version::V2 => AUTH_LEN,
        Version::V3 => 0,
    };
    HEADER_LEN + count * family.addr_len() + auth
}

/// Parses the VRRP payload (after the IP header). `src`/`dst` are the IP addresses (needed for the v3 checksum), `ttl` the received TTL/hop limit (must be 255).
///
/// Checks, in order (each failure is one [`AdvertError`]): header present,
/// address families agree, TTL 255, version is `expect` (v2 only over
/// IPv4), type 1, count not 0, length exactly header + addresses (+ v2
/// authentication data), checksum, v2 auth type 0 or 1, interval not 0.
/// Unicast peers: RFC 5798 requires TTL 255 also for them; keepalived
/// instead checks a per-peer TTL range. A caller that wants keepalived's
/// behaviour checks the TTL itself and passes [`VRRP_TTL`].
pub fn parse(
    payload: &[u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    mode: ChecksumMode,
    expect: Version,
) -> Result<Advert, AdvertError> {
    let packet = VrrpPacket::new_checked(payload)?;
    let family = Family::of(src, dst).ok_or(AdvertError::BadAddrCount)?;
    if ttl != VRRP_TTL {
        return Err(AdvertError::BadTtl);
    }
    if packet.version() != expect.number() || (expect == Version::V2 && family == Family::V6) {
        return Err(AdvertError::BadVersion);
    }
    if packet.msg_type() != TYPE_ADVERTISEMENT {
        return Err(AdvertError::BadType);
    }
    let count = usize::from(packet.addr_count());
    if count == 0 {
        return Err(AdvertError::BadAddrCount);
    }
    if payload.len() != message_len(expect, family, count) {
        return Err(AdvertError::BadLength);
    }
    if !packet.verify_checksum(src, dst, mode) {
        return Err(AdvertError::BadChecksum);
    }
    let (interval_cs, auth) = parse_interval_auth(&packet, expect)?;
    Ok(Advert {
        version: expect,
        vrid: packet.vrid(),
        priority: packet.priority(),
        interval_cs,
        addrs: addrs(&packet, family).collect(),
        auth,
    })
}

/// The interval in centiseconds and the authentication of a message whose
/// length has been checked.
fn parse_interval_auth<T: AsRef<[u8]>>(
    packet: &VrrpPacket<T>,
    version: Version,
) -> Result<(u16, Auth), AdvertError> {
    let (interval_cs, auth) = match version {
        Version::V3 => (packet.v3_max_adver_int(), Auth::None),
        Version::V2 => {
            let body = packet.body();
            let mut data = [0u8; AUTH_LEN];
            data.copy_from_slice(&body[body.len() - AUTH_LEN..]);
            let auth = match packet.v2_auth_type() {
                AUTH_TYPE_NONE => Auth::None,
                AUTH_TYPE_SIMPLE => Auth::Simple(data),
                _ => return Err(AdvertError::BadAuth),
            };
            (u16::from(packet.v2_adver_int()) * 100, auth)
        }
    };
    if interval_cs == 0 {
        return Err(AdvertError::BadInterval);
    }
    Ok((interval_cs, auth))
}

/// The advertised addresses of a message whose length has been checked.
fn addrs<T: AsRef<[u8]>>(
    packet: &VrrpPacket<T>,
    family: Family,
) -> impl Iterator<Item = IpAddr> + '_ {
    let count = usize::from(packet.addr_count());
    let width = family.addr_len();
    packet.body()[..count * width]
        .chunks_exact(width)
        .map(move |chunk| match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(array::<4>(chunk))),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(array::<16>(chunk))),
        })
}

/// The first `N` octets of `chunk` (which `chunks_exact` made `N` long).
fn array<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&chunk[..N]);
    out
}

/// The number of octets [`emit`] writes for `advert`.
pub fn encoded_len(advert: &Advert) -> usize {
    let addrs: usize = advert
        .addrs
        .iter()
        .map(|a| Family::of_addr(a).addr_len())
        .sum();
    let auth = match advert.version {
        Version::V2 => AUTH_LEN,
        Version::V3 => 0,
    };
    HEADER_LEN + addrs + auth
}

/// Emits the VRRP payload into `buf`, computing the checksum; returns the length. Errors if buf is too short or the advert cannot be represented (e.g. more than 255 addresses, mixed families).
pub fn emit(
    advert: &Advert,
    src: IpAddr,
    dst: IpAddr,
    mode: ChecksumMode,
    buf: &mut [u8],
) -> Result<usize, EmitError> {
    let family = Family::of(src, dst).ok_or(EmitError::MixedFamilies)?;
    let count = check_representable(advert, family)?;
    let len = encoded_len(advert);
    let buf = buf
        .get_mut(..len)
        .ok_or(EmitError::BufferTooShort { needed: len })?;
    buf.fill(0);
    let mut packet = VrrpPacket::new_unchecked(buf);
    packet.set_version_type(advert.version, TYPE_ADVERTISEMENT);
    packet.set_vrid(advert.vrid);
    packet.set_priority(advert.priority);
    packet.set_addr_count(count);
    write_interval_auth(&mut packet, advert);
    write_addrs(packet.body_mut(), &advert.addrs);
    packet.fill_checksum(src, dst, mode);
    Ok(len)
}

/// Checks that `advert` fits the wire format over `family`; returns the
/// address count.
fn check_representable(advert: &Advert, family: Family) -> Result<u8, EmitError> {
    if advert.version == Version::V2 && family == Family::V6 {
        return Err(EmitError::V2OverIpv6);
    }
    if advert.addrs.iter().any(|a| Family::of_addr(a) != family) {
        return Err(EmitError::MixedFamilies);
    }
    let count = u8::try_from(advert.addrs.len()).map_err(|_| EmitError::BadAddrCount)?;
    if count == 0 {
        return Err(EmitError::BadAddrCount);
    }
    let interval_ok = match advert.version {
        Version::V3 => (1..=MAX_INTERVAL_V3_CS).contains(&advert.interval_cs),
        Version::V2 => {
            (100..=MAX_INTERVAL_V2_CS).contains(&advert.interval_cs)
                && advert.interval_cs.is_multiple_of(100)
        }
    };
    if !interval_ok {
        return Err(EmitError::BadInterval);
    }
    if advert.version == Version::V3 && advert.auth != Auth::None {
        return Err(EmitError::AuthOnV3);
    }
    Ok(count)
}

/// Writes the interval field and, for v2, Auth Type and Authentication Data.
fn write_interval_auth(packet: &mut VrrpPacket<&mut [u8]>, advert: &Advert) {
    match advert.version {
        Version::V3 => packet.set_v3_max_adver_int(advert.interval_cs),
        Version::V2 => {
            // check_representable: interval_cs is 100..=25500, whole seconds.
            let seconds = u8::try_from(advert.interval_cs / 100).unwrap_or(u8::MAX);
            packet.set_v2_auth_type(advert.auth.type_code());
            packet.set_v2_adver_int(seconds);
            let body = packet.body_mut();
            let at = body.len() - AUTH_LEN;
            body[at..].copy_from_slice(&advert.auth.data());
        }
    }
}

/// Writes `addrs` one after another at the start of `body`.
fn write_addrs(body: &mut [u8], addrs: &[IpAddr]) {
    let mut at = 0;
    for addr in addrs {
        let width = Family::of_addr(addr).addr_len();
        let slot = &mut body[at..at + width];
        match addr {
            IpAddr::V4(a) => slot.copy_from_slice(&a.octets()),
            IpAddr::V6(a) => slot.copy_from_slice(&a.octets()),
        }
        at += width;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One capture from tests/fixtures/vrrp (see its README): the IP
    /// addresses and TTL, and each distinct VRRP payload seen.
    struct Fixture {
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
        payloads: Vec<Vec<u8>>,
    }

    fn fixture(text: &str) -> Fixture {
        let mut fx = Fixture {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ttl: 0,
            payloads: Vec::new(),
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut words = line.split_whitespace();
            let (key, value) = (words.next().unwrap(), words.next().unwrap());
            match key {
                "src" => fx.src = value.parse().unwrap(),
                "dst" => fx.dst = value.parse().unwrap(),
                "ttl" => fx.ttl = value.parse().unwrap(),
                "payload" => fx.payloads.push(unhex(value)),
                other => panic!("unknown fixture key {other}"),
            }
        }
        fx
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn advert(
        version: Version,
        vrid: u8,
        priority: u8,
        interval_cs: u16,
        addrs: &[&str],
    ) -> Advert {
        Advert {
            version,
            vrid,
            priority,
            interval_cs,
            addrs: addrs.iter().map(|a| v4(a)).collect(),
            auth: Auth::None,
        }
    }

    /// The fixture's payloads are `first` (sent while master) and the
    /// same with priority 0 (sent by keepalived when it stops).
    fn check_fixture(text: &str, mode: ChecksumMode, first: Advert) {
        let fx = fixture(text);
        let resign = Advert {
            priority: 0,
            ..first.clone()
        };
        assert_eq!(fx.ttl, VRRP_TTL);
        assert_eq!(
            fx.payloads.len(),
            2,
            "master adverts and the priority-0 one"
        );
        for (payload, expected) in fx.payloads.iter().zip([first, resign]) {
            let parsed = parse(payload, fx.src, fx.dst, fx.ttl, mode, expected.version);
            assert_eq!(parsed, Ok(expected.clone()));
            let mut buf = [0u8; MAX_LEN];
            let n = emit(&expected, fx.src, fx.dst, mode, &mut buf).unwrap();
            assert_eq!(n, encoded_len(&expected));
            assert_eq!(&buf[..n], &payload[..], "emit differs from keepalived");
        }
    }

    const PSEUDO: ChecksumMode = ChecksumMode::PseudoHeader;

    #[test]
    fn keepalived_v3_ipv4_two_vips() {
        let text = include_str!("../../tests/fixtures/vrrp/v3_ipv4.txt");
        let expected = advert(Version::V3, 51, 150, 100, &["198.18.0.100", "198.18.0.101"]);
        check_fixture(text, PSEUDO, expected);
    }

    #[test]
    fn keepalived_v3_ipv4_10cs() {
        let text = include_str!("../../tests/fixtures/vrrp/v3_ipv4_10cs.txt");
        check_fixture(
            text,
            PSEUDO,
            advert(Version::V3, 51, 150, 10, &["198.18.0.100"]),
        );
    }

    #[test]
    fn keepalived_v2_ipv4_pass() {
        let text = include_str!("../../tests/fixtures/vrrp/v2_ipv4_pass.txt");
        let expected = Advert {
            auth: Auth::simple(b"secret1"),
            ..advert(Version::V2, 53, 120, 100, &["198.18.0.103"])
        };
        assert_eq!(expected.auth, Auth::Simple(*b"secret1\0"));
        check_fixture(text, PSEUDO, expected);
    }

    #[test]
    fn keepalived_v2_ipv4_no_auth() {
        let text = include_str!("../../tests/fixtures/vrrp/v2_ipv4_noauth.txt");
        let expected = advert(Version::V2, 54, 100, 200, &["198.18.0.104", "198.18.0.105"]);
        check_fixture(text, PSEUDO, expected);
    }

    #[test]
    fn keepalived_v3_ipv6() {
        let text = include_str!("../../tests/fixtures/vrrp/v3_ipv6.txt");
        let fx = fixture(text);
        assert_eq!(fx.src, v4("fe80::ff:fe00:a"));
        assert_eq!(fx.dst, IpAddr::V6(MCAST_V6));
        let expected = Advert {
            addrs: vec![v4("2001:db8::52")],
            ..advert(Version::V3, 52, 150, 100, &[])
        };
        check_fixture(text, PSEUDO, expected.clone());
        // The mode only concerns IPv4: IPv6 always has its pseudo-header.
        check_fixture(text, ChecksumMode::NoPseudoHeader, expected);
    }

    #[test]
    fn keepalived_v3_ipv4_unicast_uses_peer_in_pseudo_header() {
        let text = include_str!("../../tests/fixtures/vrrp/v3_ipv4_unicast.txt");
        let fx = fixture(text);
        assert_eq!(fx.dst, v4("198.18.0.2"));
        check_fixture(
            text,
            PSEUDO,
            advert(Version::V3, 55, 150, 100, &["198.18.0.106"]),
        );
        // Not the group address (keepalived before 2.0 used it for unicast).
        let group = IpAddr::V4(MCAST_V4);
        let res = parse(&fx.payloads[0], fx.src, group, 255, PSEUDO, Version::V3);
        assert_eq!(res, Err(AdvertError::BadChecksum));
    }

    #[test]
    fn v3_ipv4_without_pseudo_header() {
        // RFC 9568 variant: the checksum covers the message only. keepalived
        // 2.2.7 cannot send it; 0xab77 is the Internet checksum of
        // 3133 9602 0064 0000 c612 0064 c612 0065 computed by hand (python).
        let fx = fixture(include_str!("../../tests/fixtures/vrrp/v3_ipv4.txt"));
        let expected = advert(Version::V3, 51, 150, 100, &["198.18.0.100", "198.18.0.101"]);
        let mode = ChecksumMode::NoPseudoHeader;
        let mut buf = [0u8; MAX_LEN];
        let n = emit(&expected, fx.src, fx.dst, mode, &mut buf).unwrap();
        assert_eq!(&buf[..n], &unhex("313396020064ab77c6120064c6120065")[..]);
        assert_eq!(
            parse(&buf[..n], fx.src, fx.dst, 255, mode, Version::V3),
            Ok(expected)
        );
        // Each mode refuses the other's checksum.
        let res = parse(&buf[..n], fx.src, fx.dst, 255, PSEUDO, Version::V3);
        assert_eq!(res, Err(AdvertError::BadChecksum));
        let res = parse(&fx.payloads[0], fx.src, fx.dst, 255, mode, Version::V3);
        assert_eq!(res, Err(AdvertError::BadChecksum));
    }

    /// A valid v3 IPv4 advert (from the keepalived capture) and its addresses.
    fn v3_sample() -> (Vec<u8>, IpAddr, IpAddr) {
        let fx = fixture(include_str!("../../tests/fixtures/vrrp/v3_ipv4.txt"));
        (fx.payloads[0].clone(), fx.src, fx.dst)
    }

    fn v2_sample() -> (Vec<u8>, IpAddr, IpAddr) {
        let fx = fixture(include_str!("../../tests/fixtures/vrrp/v2_ipv4_pass.txt"));
        (fx.payloads[0].clone(), fx.src, fx.dst)
    }

    /// Parses `msg` after recomputing its checksum, so that the check under
    /// test is the one that fails.
    fn parse_fixed(
        mut msg: Vec<u8>,
        src: IpAddr,
        dst: IpAddr,
        v: Version,
    ) -> Result<Advert, AdvertError> {
        VrrpPacket::new_unchecked(&mut msg[..]).fill_checksum(src, dst, PSEUDO);
        parse(&msg, src, dst, VRRP_TTL, PSEUDO, v)
    }

    #[test]
    fn samples_are_valid() {
        let (msg, src, dst) = v3_sample();
        assert!(parse_fixed(msg, src, dst, Version::V3).is_ok());
        let (msg, src, dst) = v2_sample();
        assert!(parse_fixed(msg, src, dst, Version::V2).is_ok());
    }

    #[test]
    fn error_truncated() {
        let (msg, src, dst) = v3_sample();
        for len in 0..HEADER_LEN {
            let res = parse(&msg[..len], src, dst, 255, PSEUDO, Version::V3);
            assert_eq!(res, Err(AdvertError::Truncated), "length {len}");
        }
    }

    #[test]
    fn error_bad_version() {
        let (v3, src, dst) = v3_sample();
        let (v2, _, _) = v2_sample();
        // Mixed versions are dropped both ways, as keepalived does.
        assert_eq!(
            parse(&v3, src, dst, 255, PSEUDO, Version::V2),
            Err(AdvertError::BadVersion)
        );
        assert_eq!(
            parse(&v2, src, dst, 255, PSEUDO, Version::V3),
            Err(AdvertError::BadVersion)
        );
        for version in [0u8, 1, 4, 15] {
            let mut msg = v3.clone();
            msg[0] = (version << 4) | 1;
            assert_eq!(
                parse_fixed(msg, src, dst, Version::V3),
                Err(AdvertError::BadVersion)
            );
        }
        // v2 over IPv6 does not exist.
        let ll = v4("fe80::1");
        let group = IpAddr::V6(MCAST_V6);
        assert_eq!(
            parse(&v2, ll, group, 255, PSEUDO, Version::V2),
            Err(AdvertError::BadVersion)
        );
    }

    #[test]
    fn error_bad_type() {
        let (mut msg, src, dst) = v3_sample();
        msg[0] = 0x32;
        assert_eq!(
            parse_fixed(msg, src, dst, Version::V3),
            Err(AdvertError::BadType)
        );
    }

    #[test]
    fn error_bad_ttl() {
        let (msg, src, dst) = v3_sample();
        for ttl in [0, 1, 64, 254] {
            let res = parse(&msg, src, dst, ttl, PSEUDO, Version::V3);
            assert_eq!(res, Err(AdvertError::BadTtl), "ttl {ttl}");
        }
    }

    #[test]
    fn error_bad_checksum() {
        let (msg, src, dst) = v3_sample();
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 0x40;
            let res = parse(&bad, src, dst, 255, PSEUDO, Version::V3);
            assert!(res.is_err(), "flipped octet {i} accepted");
        }
        let mut bad = msg.clone();
        bad[7] ^= 1;
        assert_eq!(
            parse(&bad, src, dst, 255, PSEUDO, Version::V3),
            Err(AdvertError::BadChecksum)
        );
        // The pseudo-header covers the addresses.
        let other = v4("198.18.0.9");
        assert_eq!(
            parse(&msg, other, dst, 255, PSEUDO, Version::V3),
            Err(AdvertError::BadChecksum)
        );
        let (mut v2, src, dst) = v2_sample();
        v2[10] ^= 1; // an address octet
        assert_eq!(
            parse(&v2, src, dst, 255, PSEUDO, Version::V2),
            Err(AdvertError::BadChecksum)
        );
    }

    #[test]
    fn error_bad_length() {
        let (msg, src, dst) = v3_sample();
        for len in HEADER_LEN..msg.len() {
            let res = parse_fixed(msg[..len].to_vec(), src, dst, Version::V3);
            assert_eq!(res, Err(AdvertError::BadLength), "length {len}");
        }
        let mut long = msg.clone();
        long.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            parse_fixed(long, src, dst, Version::V3),
            Err(AdvertError::BadLength)
        );
        // A count larger than the addresses present.
        let mut more = msg.clone();
        more[3] = 3;
        assert_eq!(
            parse_fixed(more, src, dst, Version::V3),
            Err(AdvertError::BadLength)
        );
        // v2 without its authentication data.
        let (v2, src, dst) = v2_sample();
        let short = v2[..v2.len() - AUTH_LEN].to_vec();
        assert_eq!(
            parse_fixed(short, src, dst, Version::V2),
            Err(AdvertError::BadLength)
        );
    }

    #[test]
    fn error_bad_addr_count() {
        let (msg, src, dst) = v3_sample();
        let mut zero = msg[..HEADER_LEN].to_vec();
        zero[3] = 0;
        assert_eq!(
            parse_fixed(zero, src, dst, Version::V3),
            Err(AdvertError::BadAddrCount)
        );
        let v6 = v4("fe80::1");
        assert_eq!(
            parse(&msg, src, v6, 255, PSEUDO, Version::V3),
            Err(AdvertError::BadAddrCount)
        );
        assert_eq!(
            parse(&msg, v6, dst, 255, PSEUDO, Version::V3),
            Err(AdvertError::BadAddrCount)
        );
    }

    #[test]
    fn error_bad_auth() {
        let (msg, src, dst) = v2_sample();
        for auth_type in [2u8, 3, 255] {
            let mut bad = msg.clone();
            bad[4] = auth_type;
            assert_eq!(
                parse_fixed(bad, src, dst, Version::V2),
                Err(AdvertError::BadAuth)
            );
        }
    }

    #[test]
    fn error_bad_interval() {
        let (mut v3, src, dst) = v3_sample();
        v3[4] = 0xf0; // reserved bits set, interval 0
        v3[5] = 0;
        assert_eq!(
            parse_fixed(v3, src, dst, Version::V3),
            Err(AdvertError::BadInterval)
        );
        let (mut v2, src, dst) = v2_sample();
        v2[5] = 0;
        assert_eq!(
            parse_fixed(v2, src, dst, Version::V2),
            Err(AdvertError::BadInterval)
        );
    }

    #[test]
    fn reserved_bits_are_ignored_on_receive() {
        let (mut msg, src, dst) = v3_sample();
        msg[4] |= 0xf0;
        assert_eq!(
            parse_fixed(msg, src, dst, Version::V3).map(|a| a.interval_cs),
            Ok(100)
        );
    }

    #[test]
    fn error_names_are_distinct_counters() {
        let names: std::collections::HashSet<_> =
            AdvertError::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), AdvertError::ALL.len());
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        assert_eq!(AdvertError::BadAddrCount.name(), "bad_addr_count");
    }

    #[test]
    fn emit_refuses_what_the_wire_cannot_carry() {
        let (src, dst) = (v4("198.18.0.1"), IpAddr::V4(MCAST_V4));
        let ok = advert(Version::V3, 1, 100, 100, &["198.18.0.10"]);
        let mut buf = [0u8; MAX_LEN];
        let try_emit = |a: &Advert, buf: &mut [u8]| emit(a, src, dst, PSEUDO, buf);
        assert_eq!(
            try_emit(&ok, &mut buf[..11]),
            Err(EmitError::BufferTooShort { needed: 12 })
        );
        assert_eq!(try_emit(&ok, &mut buf), Ok(12));
        let none = Advert {
            addrs: vec![],
            ..ok.clone()
        };
        assert_eq!(try_emit(&none, &mut buf), Err(EmitError::BadAddrCount));
        let many = Advert {
            addrs: vec![v4("198.18.0.10"); 256],
            ..ok.clone()
        };
        assert_eq!(try_emit(&many, &mut buf), Err(EmitError::BadAddrCount));
        let mixed = Advert {
            addrs: vec![v4("198.18.0.10"), v4("2001:db8::1")],
            ..ok.clone()
        };
        assert_eq!(try_emit(&mixed, &mut buf), Err(EmitError::MixedFamilies));
        assert_eq!(
            emit(&ok, src, v4("ff02::12"), PSEUDO, &mut buf),
            Err(EmitError::MixedFamilies)
        );
        for cs in [0, 4096] {
            let bad = Advert {
                interval_cs: cs,
                ..ok.clone()
            };
            assert_eq!(try_emit(&bad, &mut buf), Err(EmitError::BadInterval));
        }
        let auth = Advert {
            auth: Auth::simple(b"x"),
            ..ok.clone()
        };
        assert_eq!(try_emit(&auth, &mut buf), Err(EmitError::AuthOnV3));
        let v2 = Advert {
            version: Version::V2,
            ..ok.clone()
        };
        assert_eq!(try_emit(&v2, &mut buf), Ok(20));
        for cs in [0, 50, 150, 25600] {
            let bad = Advert {
                interval_cs: cs,
                ..v2.clone()
            };
            assert_eq!(
                try_emit(&bad, &mut buf),
                Err(EmitError::BadInterval),
                "{cs}"
            );
        }
        let v2_v6 = Advert {
            addrs: vec![v4("2001:db8::1")],
            ..v2
        };
        let (ll, group) = (v4("fe80::1"), IpAddr::V6(MCAST_V6));
        assert_eq!(
            emit(&v2_v6, ll, group, PSEUDO, &mut buf),
            Err(EmitError::V2OverIpv6)
        );
    }

    #[test]
    fn auth_simple_truncates_and_pads_like_keepalived() {
        assert_eq!(Auth::simple(b"abc"), Auth::Simple(*b"abc\0\0\0\0\0"));
        assert_eq!(Auth::simple(b"0123456789"), Auth::Simple(*b"01234567"));
    }

    /// A source/destination pair of `v6`'s family, and an address strategy.
    fn endpoints(v6: bool) -> BoxedStrategy<(IpAddr, IpAddr)> {
        let v4s = any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)));
        let v6s = any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)));
        if v6 {
            (v6s.clone(), v6s).boxed()
        } else {
            (v4s.clone(), v4s).boxed()
        }
    }

    fn addr_list(v6: bool) -> BoxedStrategy<Vec<IpAddr>> {
        if v6 {
            proptest::collection::vec(
                any::<[u8; 16]>().prop_map(|o| IpAddr::V6(o.into())),
                1..=255,
            )
            .boxed()
        } else {
            proptest::collection::vec(any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into())), 1..=255)
                .boxed()
        }
    }

    /// A representable advert with its source and destination.
    fn valid_advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
        (any::<bool>(), any::<bool>()).prop_flat_map(|(v2, v6)| {
            let v6 = v6 && !v2;
            let interval = if v2 {
                (1u16..=255).prop_map(|s| s * 100).boxed()
            } else {
                (1u16..=MAX_INTERVAL_V3_CS).boxed()
            };
            let auth = if v2 {
                prop_oneof![Just(Auth::None), any::<[u8; 8]>().prop_map(Auth::Simple)].boxed()
            } else {
                Just(Auth::None).boxed()
            };
            let version = if v2 { Version::V2 } else { Version::V3 };
            (
                any::<u8>(),
                any::<u8>(),
                interval,
                addr_list(v6),
                auth,
                endpoints(v6),
            )
                .prop_map(
                    move |(vrid, priority, interval_cs, addrs, auth, (src, dst))| {
                        let a = Advert {
                            version,
                            vrid,
                            priority,
                            interval_cs,
                            addrs,
                            auth,
                        };
                        (a, src, dst)
                    },
                )
        })
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into())),
            any::<[u8; 16]>().prop_map(|o| IpAddr::V6(o.into())),
        ]
    }

    fn any_mode() -> impl Strategy<Value = ChecksumMode> {
        prop_oneof![
            Just(ChecksumMode::PseudoHeader),
            Just(ChecksumMode::NoPseudoHeader)
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            src in any_ip(), dst in any_ip(), ttl in any::<u8>(),
            mode in any_mode(), v2 in any::<bool>(),
        ) {
            let expect = if v2 { Version::V2 } else { Version::V3 };
            let _ = parse(&bytes, src, dst, ttl, mode, expect);
        }

        #[test]
        fn parse_never_panics_on_plausible_headers(
            count in any::<u8>(), vers_type in prop_oneof![Just(0x21u8), Just(0x31u8), any::<u8>()],
            rest in proptest::collection::vec(any::<u8>(), 0..300),
            src in any_ip(), dst in any_ip(), mode in any_mode(),
        ) {
            let mut bytes = vec![vers_type, 1, 100, count];
            bytes.extend_from_slice(&rest);
            for expect in [Version::V2, Version::V3] {
                let _ = parse(&bytes, src, dst, VRRP_TTL, mode, expect);
            }
        }

        #[test]
        fn emit_then_parse_round_trips((advert, src, dst) in valid_advert(), mode in any_mode()) {
            let mut buf = [0u8; MAX_LEN];
            let n = emit(&advert, src, dst, mode, &mut buf).unwrap();
            prop_assert_eq!(n, encoded_len(&advert));
            let parsed = parse(&buf[..n], src, dst, VRRP_TTL, mode, advert.version);
            prop_assert_eq!(parsed, Ok(advert));
        }

        #[test]
        fn parse_then_emit_reproduces_accepted_bytes(
            (advert, src, dst) in valid_advert(), mode in any_mode(), flip in any::<(usize, u8)>(),
        ) {
            // Corrupt one octet; whatever still parses must emit back to the
            // same bytes, except v2 auth data under Auth::None (ignored on
            // receive) and the v3 reserved bits (ignored on receive).
            let mut buf = [0u8; MAX_LEN];
            let n = emit(&advert, src, dst, mode, &mut buf).unwrap();
            let (at, x) = (flip.0 % n, flip.1);
            buf[at] ^= x;
            if let Ok(parsed) = parse(&buf[..n], src, dst, VRRP_TTL, mode, advert.version) {
                let mut again = [0u8; MAX_LEN];
                let m = emit(&parsed, src, dst, mode, &mut again).unwrap();
                prop_assert_eq!(m, n);
                let ignored = (parsed.auth == Auth::None && parsed.version == Version::V2 && at >= n - AUTH_LEN)
                    || (parsed.version == Version::V3 && at == 4);
                if !ignored {
                    prop_assert_eq!(&again[..m], &buf[..n]);
                }
            }
        }
    }
}
