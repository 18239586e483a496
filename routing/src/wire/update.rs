//! UPDATE messages (RFC 4271 4.3, RFC 4760 MP_REACH/MP_UNREACH for IPv6)
//! and the RFC 7606 error handling of received ones.
//!
//! Owns: [`UpdateRepr`] and its path attributes, the walk over the UPDATE's
//! three sections and its attribute TLVs, and the verdict per error:
//! - session reset (a [`DecodeError`], the caller sends the NOTIFICATION):
//!   withdrawn/attribute/NLRI lengths that do not add up, an attribute whose
//!   length overruns the attribute section, a malformed or repeated
//!   MP_REACH/MP_UNREACH (RFC 7606 3(g), 7.11: its NLRI cannot be trusted),
//!   a syntactically bad IPv4 prefix, an unrecognized well-known attribute;
//! - treat-as-withdraw ([`UpdateRepr::treat_as_withdraw`], the NLRI moved
//!   to `withdrawn`): a malformed ORIGIN, AS_PATH, NEXT_HOP, MED,
//!   LOCAL_PREF, COMMUNITIES, LARGE_COMMUNITIES or other attribute,
//!   optional/transitive flags that conflict with the attribute type
//!   (RFC 7606 3(c)), a missing mandatory attribute (3(d));
//! - attribute discard: malformed ATOMIC_AGGREGATE, AGGREGATOR, AS4_PATH,
//!   AS4_AGGREGATOR (RFC 7606 7.6, 7.7, RFC 6793 6), and every repeat of an
//!   attribute other than MP_REACH/MP_UNREACH (RFC 7606 3(g)).
//!
//! netgauze parses each attribute's value on its own slice, so one broken
//! attribute cannot shift the reading of the next.
//!
//! Must not touch: session state. Not done: AS4_PATH/AS_PATH reconciliation
//! for 2-octet peers (RFC 6793 4.2.3; vipgate does not re-advertise received
//! routes), NEXT_HOP semantic checks (RFC 7606 7.3).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netgauze_bgp_pkt::community::{Community as NgCommunity, LargeCommunity as NgLarge};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, Communities,
    LargeCommunities, LocalPreference, MpReach, MpUnreach, MultiExitDiscriminator, NextHop,
    Origin as NgOrigin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;

use super::error_code::*;
use super::{DecodeContext, DecodeError, EncodeError, Family, Prefix, AS_TRANS};

const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MED: u8 = 4;
const LOCAL_PREF: u8 = 5;
const ATOMIC_AGGREGATE: u8 = 6;
const AGGREGATOR: u8 = 7;
const COMMUNITIES: u8 = 8;
const MP_REACH: u8 = 14;
const MP_UNREACH: u8 = 15;
const AS4_PATH: u8 = 17;
const AS4_AGGREGATOR: u8 = 18;
const LARGE_COMMUNITIES: u8 = 32;

const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// ORIGIN (RFC 4271 5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Origin {
    /// Learned by an interior protocol: what vipgate sends.
    #[default]
    Igp,
    /// Learned by EGP.
    Egp,
    /// Learned some other way.
    Incomplete,
}

/// One AS_PATH segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsSegment {
    /// AS_SEQUENCE: ordered, nearest AS first.
    Sequence(Vec<u32>),
    /// AS_SET: unordered (from aggregation).
    Set(Vec<u32>),
}

/// A COMMUNITIES value (RFC 1997), `asn:value` in the high and low halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// GRACEFUL_SHUTDOWN, 65535:0 (RFC 8326).
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xffff_0000);

    /// `asn:value`.
    pub fn new(asn: u16, value: u16) -> Self {
        Community(u32::from(asn) << 16 | u32::from(value))
    }
}

/// A LARGE_COMMUNITIES value (RFC 8092), `global:local1:local2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator (an ASN).
    pub global_admin: u32,
    /// First local data part.
    pub local_data1: u32,
    /// Second local data part.
    pub local_data2: u32,
}

/// The IPv6 next hop of MP_REACH_NLRI (RFC 2545): global, and link-local
/// when the peers share a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpNextHop {
    /// Global address.
    pub global: Ipv6Addr,
    /// Link-local address, if sent.
    pub link_local: Option<Ipv6Addr>,
}

/// The path attributes vipgate reads and writes. Others are read past and
/// dropped (vipgate does not re-advertise received routes).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PathAttributes {
    /// ORIGIN.
    pub origin: Option<Origin>,
    /// AS_PATH, 4-octet ASNs whatever the session's encoding.
    pub as_path: Option<Vec<AsSegment>>,
    /// NEXT_HOP, for IPv4 NLRI.
    pub next_hop: Option<Ipv4Addr>,
    /// MP_REACH_NLRI next hop, for IPv6 NLRI.
    pub mp_next_hop: Option<MpNextHop>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// COMMUNITIES, in wire order.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITIES, in wire order.
    pub large_communities: Vec<LargeCommunity>,
}

/// Which attribute made a received UPDATE "treat-as-withdraw", and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedAttribute {
    /// Attribute type code.
    pub type_code: u8,
    /// What was wrong.
    pub reason: &'static str,
}

/// An UPDATE: IPv4 prefixes travel in the classic fields, IPv6 prefixes in
/// MP_REACH_NLRI / MP_UNREACH_NLRI.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateRepr {
    /// Withdrawn prefixes, IPv4 then IPv6 (MP_UNREACH) when decoded.
    pub withdrawn: Vec<Prefix>,
    /// Attributes of the announced prefixes.
    pub attributes: PathAttributes,
    /// Announced prefixes, IPv4 NLRI then MP_REACH NLRI when decoded.
    pub announced: Vec<Prefix>,
    /// Set when this UPDATE is (or carries) End-of-RIB for the family
    /// (RFC 4724): empty UPDATE for IPv4, empty MP_UNREACH for IPv6.
    pub end_of_rib: Option<Family>,
    /// Decode only: set when RFC 7606 treat-as-withdraw applied; the
    /// announced prefixes were moved to `withdrawn` and the attributes
    /// cleared.
    pub treat_as_withdraw: Option<MalformedAttribute>,
}

impl UpdateRepr {
    /// An UPDATE announcing `prefixes` (one family's next hop must be set
    /// for each family present).
    pub fn announce(prefixes: Vec<Prefix>, attributes: PathAttributes) -> Self {
        UpdateRepr {
            announced: prefixes,
            attributes,
            ..Default::default()
        }
    }

    /// An UPDATE withdrawing `prefixes`.
    pub fn withdraw(prefixes: Vec<Prefix>) -> Self {
        UpdateRepr {
            withdrawn: prefixes,
            ..Default::default()
        }
    }
}

/// The three sections of an UPDATE body.
struct Sections<'a> {
    withdrawn: &'a [u8],
    attributes: &'a [u8],
    nlri: &'a [u8],
}

/// One path attribute TLV.
struct RawAttribute<'a> {
    flags: u8,
    code: u8,
    /// The whole TLV, header included.
    tlv: &'a [u8],
}

/// What one attribute did to the UPDATE when it was not fine.
enum Fault {
    Reset(DecodeError),
    Withdraw(MalformedAttribute),
    Discard,
}

fn reset(subcode: u8, data: &[u8], reason: &'static str) -> DecodeError {
    DecodeError::Update {
        subcode,
        data: data.to_vec(),
        reason,
    }
}

fn split(body: &[u8]) -> Result<Sections<'_>, DecodeError> {
    let bad = || {
        reset(
            MALFORMED_ATTRIBUTE_LIST,
            &[],
            "section lengths do not add up",
        )
    };
    let wlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let withdrawn = body.get(2..2 + wlen).ok_or_else(bad)?;
    let rest = &body[2 + wlen..];
    let alen_bytes = rest.get(..2).ok_or_else(bad)?;
    let alen = usize::from(u16::from_be_bytes([alen_bytes[0], alen_bytes[1]]));
    let attributes = rest.get(2..2 + alen).ok_or_else(bad)?;
    Ok(Sections {
        withdrawn,
        attributes,
        nlri: &rest[2 + alen..],
    })
}

/// IPv4 prefixes of the withdrawn or NLRI field (RFC 4271 4.3).
fn read_v4_prefixes(mut bytes: &[u8]) -> Result<Vec<Prefix>, DecodeError> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let octets = usize::from(len).div_ceil(8);
        if len > 32 || rest.len() < octets {
            return Err(reset(INVALID_NETWORK_FIELD, &[], "bad IPv4 prefix"));
        }
        let mut addr = [0u8; 4];
        addr[..octets].copy_from_slice(&rest[..octets]);
        out.push(Prefix::V4(Ipv4Addr::from(addr), len).masked());
        bytes = &rest[octets..];
    }
    Ok(out)
}

fn next_attribute(bytes: &[u8]) -> Result<(RawAttribute<'_>, &[u8]), DecodeError> {
    let overrun = || reset(MALFORMED_ATTRIBUTE_LIST, &[], "attribute overruns the list");
    let (&flags, _) = bytes.split_first().ok_or_else(overrun)?;
    let code = *bytes.get(1).ok_or_else(overrun)?;
    let (header, len) = if flags & FLAG_EXTENDED_LENGTH != 0 {
        let l = bytes.get(2..4).ok_or_else(overrun)?;
        (4, usize::from(u16::from_be_bytes([l[0], l[1]])))
    } else {
        (3, usize::from(*bytes.get(2).ok_or_else(overrun)?))
    };
    let tlv = bytes.get(..header + len).ok_or_else(overrun)?;
    Ok((RawAttribute { flags, code, tlv }, &bytes[header + len..]))
}

/// Optional and transitive bits each attribute type must carry.
fn expected_flags(code: u8) -> Option<u8> {
    match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some(FLAG_TRANSITIVE),
        MED | MP_REACH | MP_UNREACH => Some(FLAG_OPTIONAL),
        AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITIES => {
            Some(FLAG_OPTIONAL | FLAG_TRANSITIVE)
        }
        _ => None,
    }
}

/// The verdict for a malformed attribute of type `code`.
fn fault_for(attr: &RawAttribute<'_>, reason: &'static str) -> Fault {
    match attr.code {
        MP_REACH | MP_UNREACH => Fault::Reset(reset(OPTIONAL_ATTRIBUTE_ERROR, attr.tlv, reason)),
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => Fault::Discard,
        code => Fault::Withdraw(MalformedAttribute {
            type_code: code,
            reason,
        }),
    }
}

fn parse_attribute(
    attr: &RawAttribute<'_>,
    ng: &mut BgpParsingContext,
) -> Result<PathAttribute, Fault> {
    if let Some(want) = expected_flags(attr.code) {
        if attr.flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) != want {
            return Err(fault_for(attr, "attribute flags conflict with its type"));
        }
    }
    let mut reader = SliceReader::new(attr.tlv);
    match PathAttribute::parse(&mut reader, ng) {
        Ok(parsed) if reader.is_empty() => Ok(parsed),
        Ok(_) => Err(fault_for(attr, "attribute length does not match its value")),
        Err(_) => Err(fault_for(attr, "malformed attribute value")),
    }
}

/// Decode an UPDATE body (after the 19-octet header).
pub(crate) fn decode(body: &[u8], ctx: &DecodeContext) -> Result<UpdateRepr, DecodeError> {
    let sections = split(body)?;
    let mut update = UpdateRepr {
        withdrawn: read_v4_prefixes(sections.withdrawn)?,
        announced: read_v4_prefixes(sections.nlri)?,
        ..Default::default()
    };
    let classic_nlri = !update.announced.is_empty();
    if body.len() == 4 {
        update.end_of_rib = Some(Family::Ipv4Unicast);
    }
    let mut ng = BgpParsingContext::asn2_default();
    ng.set_asn4(ctx.four_octet_as);
    let mut seen = [false; 256];
    let mut rest = sections.attributes;
    while !rest.is_empty() {
        let (attr, tail) = next_attribute(rest)?;
        rest = tail;
        if std::mem::replace(&mut seen[usize::from(attr.code)], true) {
            if attr.code == MP_REACH || attr.code == MP_UNREACH {
                return Err(reset(
                    MALFORMED_ATTRIBUTE_LIST,
                    &[],
                    "MP_REACH/MP_UNREACH repeated",
                ));
            }
            continue;
        }
        let applied = parse_attribute(&attr, &mut ng).and_then(|a| apply(&attr, a, &mut update));
        match applied {
            Ok(()) | Err(Fault::Discard) => {}
            Err(Fault::Reset(e)) => return Err(e),
            Err(Fault::Withdraw(m)) => {
                update.treat_as_withdraw.get_or_insert(m);
            }
        }
    }
    check_mandatory(&mut update, &seen, classic_nlri, ctx);
    if update.treat_as_withdraw.is_some() {
        let announced = std::mem::take(&mut update.announced);
        update.withdrawn.extend(announced);
        update.attributes = PathAttributes::default();
    }
    Ok(update)
}

/// RFC 7606 3(d): a missing mandatory attribute makes the UPDATE
/// treat-as-withdraw.
fn check_mandatory(
    update: &mut UpdateRepr,
    seen: &[bool; 256],
    classic: bool,
    ctx: &DecodeContext,
) {
    if update.announced.is_empty() {
        return;
    }
    let missing = [
        (ORIGIN, true),
        (AS_PATH, true),
        (NEXT_HOP, classic),
        (LOCAL_PREF, ctx.ibgp),
    ]
    .into_iter()
    .find(|&(code, needed)| needed && !seen[usize::from(code)]);
    if let Some((type_code, _)) = missing {
        update.treat_as_withdraw.get_or_insert(MalformedAttribute {
            type_code,
            reason: "missing mandatory attribute",
        });
    }
}

/// Store one parsed attribute in `update`.
fn apply(
    raw: &RawAttribute<'_>,
    attr: PathAttribute,
    update: &mut UpdateRepr,
) -> Result<(), Fault> {
    let attrs = &mut update.attributes;
    match attr.value() {
        PathAttributeValue::Origin(o) => {
            attrs.origin = Some(match o {
                NgOrigin::IGP => Origin::Igp,
                NgOrigin::EGP => Origin::Egp,
                NgOrigin::Incomplete => Origin::Incomplete,
            })
        }
        PathAttributeValue::AsPath(p) => attrs.as_path = Some(as_path_from_netgauze(p)),
        PathAttributeValue::NextHop(nh) => attrs.next_hop = Some(nh.next_hop()),
        PathAttributeValue::MultiExitDiscriminator(m) => attrs.med = Some(m.metric()),
        PathAttributeValue::LocalPreference(l) => attrs.local_pref = Some(l.metric()),
        PathAttributeValue::Communities(c) => {
            attrs.communities = c
                .communities()
                .iter()
                .map(|c| Community(c.value()))
                .collect()
        }
        PathAttributeValue::LargeCommunities(c) => {
            attrs.large_communities = c.communities().iter().map(large_from_netgauze).collect()
        }
        PathAttributeValue::MpReach(reach) => apply_mp_reach(reach, update),
        PathAttributeValue::MpUnreach(unreach) => apply_mp_unreach(unreach, update),
        PathAttributeValue::UnknownAttribute(_) if !attr.optional() => {
            return Err(Fault::Reset(reset(
                UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                raw.tlv,
                "unrecognized well-known attribute",
            )))
        }
        _ => {}
    }
    Ok(())
}

fn apply_mp_reach(reach: &MpReach, update: &mut UpdateRepr) {
    match reach {
        MpReach::Ipv6Unicast {
            next_hop_global,
            next_hop_local,
            nlri,
        } => {
            update.attributes.mp_next_hop = Some(MpNextHop {
                global: *next_hop_global,
                link_local: *next_hop_local,
            });
            update.announced.extend(nlri.iter().map(v6_prefix));
        }
        MpReach::Ipv4Unicast { next_hop, nlri, .. } => {
            if let IpAddr::V4(nh) = next_hop {
                update.attributes.next_hop.get_or_insert(*nh);
            }
            update.announced.extend(nlri.iter().map(v4_prefix));
        }
        // Families we did not negotiate are ignored (RFC 4760 section 7).
        _ => {}
    }
}

fn apply_mp_unreach(unreach: &MpUnreach, update: &mut UpdateRepr) {
    let (family, empty) = match unreach {
        MpUnreach::Ipv6Unicast { nlri } => {
            update.withdrawn.extend(nlri.iter().map(v6_prefix));
            (Family::Ipv6Unicast, nlri.is_empty())
        }
        MpUnreach::Ipv4Unicast { nlri } => {
            update.withdrawn.extend(nlri.iter().map(v4_prefix));
            (Family::Ipv4Unicast, nlri.is_empty())
        }
        _ => return,
    };
    if empty && update.announced.is_empty() && update.withdrawn.is_empty() {
        update.end_of_rib = Some(family);
    }
}

fn v4_prefix(a: &Ipv4UnicastAddress) -> Prefix {
    let net = a.network().address();
    Prefix::V4(net.addr(), net.prefix_len())
}

fn v6_prefix(a: &Ipv6UnicastAddress) -> Prefix {
    let net = a.network().address();
    Prefix::V6(net.addr(), net.prefix_len())
}

fn large_from_netgauze(c: &NgLarge) -> LargeCommunity {
    LargeCommunity {
        global_admin: c.global_admin(),
        local_data1: c.local_data1(),
        local_data2: c.local_data2(),
    }
}

fn as_path_from_netgauze(path: &AsPath) -> Vec<AsSegment> {
    let segment = |kind: AsPathSegmentType, asns: Vec<u32>| match kind {
        AsPathSegmentType::AsSet => AsSegment::Set(asns),
        AsPathSegmentType::AsSequence => AsSegment::Sequence(asns),
    };
    match path {
        AsPath::As2PathSegments(segs) => segs
            .iter()
            .map(|s| {
                segment(
                    s.segment_type(),
                    s.as_numbers().iter().map(|&a| u32::from(a)).collect(),
                )
            })
            .collect(),
        AsPath::As4PathSegments(segs) => segs
            .iter()
            .map(|s| segment(s.segment_type(), s.as_numbers().to_vec()))
            .collect(),
    }
}

// ---- encoding ----

/// Build the netgauze UPDATE for `update`.
pub(crate) fn to_netgauze(
    update: &UpdateRepr,
    ctx: &DecodeContext,
) -> Result<BgpUpdateMessage, EncodeError> {
    let (w4, w6): (Vec<Prefix>, Vec<Prefix>) = update.withdrawn.iter().partition(|p| p.is_ipv4());
    let (a4, a6): (Vec<Prefix>, Vec<Prefix>) = update.announced.iter().partition(|p| p.is_ipv4());
    let a = &update.attributes;
    if (!a4.is_empty() && a.next_hop.is_none()) || (!a6.is_empty() && a.mp_next_hop.is_none()) {
        return Err(EncodeError::MissingNextHop);
    }
    // MP_REACH_NLRI and MP_UNREACH_NLRI first (RFC 7606 5.1), as BIRD
    // does; the others in type-code order.
    let mut attrs = Vec::new();
    if !a6.is_empty() {
        attrs.push(mp_reach(a, &a6)?);
    }
    if !w6.is_empty() || update.end_of_rib == Some(Family::Ipv6Unicast) {
        let nlri = w6.iter().map(v6_address).collect::<Result<Vec<_>, _>>()?;
        let empty = nlri.is_empty();
        let value = PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri: nlri.into() });
        attrs.push(mp_attribute(value, empty)?);
    }
    if let Some(origin) = a.origin {
        attrs.push(attribute(
            FLAG_TRANSITIVE,
            PathAttributeValue::Origin(origin_to_netgauze(origin)),
        )?);
    }
    if let Some(path) = &a.as_path {
        attrs.extend(as_path_attributes(path, ctx.four_octet_as)?);
    }
    push_scalar_attributes(a, &a4, &mut attrs)?;
    if !a.large_communities.is_empty() {
        let list: Vec<NgLarge> = a
            .large_communities
            .iter()
            .map(|c| NgLarge::new(c.global_admin, c.local_data1, c.local_data2))
            .collect();
        let value = PathAttributeValue::LargeCommunities(LargeCommunities::new(list));
        attrs.push(attribute(FLAG_OPTIONAL | FLAG_TRANSITIVE, value)?);
    }
    let withdrawn = w4.iter().map(v4_address).collect::<Result<Vec<_>, _>>()?;
    let nlri = a4.iter().map(v4_address).collect::<Result<Vec<_>, _>>()?;
    Ok(BgpUpdateMessage::new(withdrawn, attrs, nlri))
}

/// NEXT_HOP (only with IPv4 NLRI), MED, LOCAL_PREF, COMMUNITIES.
fn push_scalar_attributes(
    a: &PathAttributes,
    a4: &[Prefix],
    attrs: &mut Vec<PathAttribute>,
) -> Result<(), EncodeError> {
    if let (Some(nh), false) = (a.next_hop, a4.is_empty()) {
        attrs.push(attribute(
            FLAG_TRANSITIVE,
            PathAttributeValue::NextHop(NextHop::new(nh)),
        )?);
    }
    if let Some(med) = a.med {
        let value = PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(med));
        attrs.push(attribute(FLAG_OPTIONAL, value)?);
    }
    if let Some(pref) = a.local_pref {
        let value = PathAttributeValue::LocalPreference(LocalPreference::new(pref));
        attrs.push(attribute(FLAG_TRANSITIVE, value)?);
    }
    if !a.communities.is_empty() {
        let list: Vec<NgCommunity> = a
            .communities
            .iter()
            .map(|c| NgCommunity::new(c.0))
            .collect();
        let value = PathAttributeValue::Communities(Communities::new(list));
        attrs.push(attribute(FLAG_OPTIONAL | FLAG_TRANSITIVE, value)?);
    }
    Ok(())
}

fn mp_reach(a: &PathAttributes, a6: &[Prefix]) -> Result<PathAttribute, EncodeError> {
    let nh = a.mp_next_hop.ok_or(EncodeError::MissingNextHop)?;
    let nlri = a6.iter().map(v6_address).collect::<Result<Vec<_>, _>>()?;
    let value = PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
        next_hop_global: nh.global,
        next_hop_local: nh.link_local,
        nlri: nlri.into(),
    });
    mp_attribute(value, false)
}

/// A netgauze attribute with the extended-length bit set only when the
/// value needs it (> 255 octets).
fn attribute(flags: u8, value: PathAttributeValue) -> Result<PathAttribute, EncodeError> {
    build_attribute(flags, value, false)
}

/// MP_REACH_NLRI and non-empty MP_UNREACH_NLRI always carry the
/// extended-length flag, as BIRD and FRR write them (see the fixtures).
fn mp_attribute(value: PathAttributeValue, empty: bool) -> Result<PathAttribute, EncodeError> {
    build_attribute(FLAG_OPTIONAL, value, !empty)
}

fn build_attribute(
    flags: u8,
    value: PathAttributeValue,
    force_extended: bool,
) -> Result<PathAttribute, EncodeError> {
    let build = |ext: bool, value: PathAttributeValue| {
        PathAttribute::from(
            flags & FLAG_OPTIONAL != 0,
            flags & FLAG_TRANSITIVE != 0,
            false,
            ext,
            value,
        )
        .map_err(|(_, e)| EncodeError::Netgauze(format!("{e:?}")))
    };
    let short = build(force_extended, value)?;
    if force_extended || short.len() <= 3 + 255 {
        return Ok(short);
    }
    build(true, short.value().clone())
}

fn origin_to_netgauze(origin: Origin) -> NgOrigin {
    match origin {
        Origin::Igp => NgOrigin::IGP,
        Origin::Egp => NgOrigin::EGP,
        Origin::Incomplete => NgOrigin::Incomplete,
    }
}

/// AS_PATH with 4-octet ASNs on 4-octet sessions; on 2-octet sessions
/// AS_TRANS stands in and AS4_PATH carries the real path (RFC 6793 4.2.2).
fn as_path_attributes(
    path: &[AsSegment],
    four_octet: bool,
) -> Result<Vec<PathAttribute>, EncodeError> {
    let parts = |s: &AsSegment| match s {
        AsSegment::Sequence(v) => (AsPathSegmentType::AsSequence, v.clone()),
        AsSegment::Set(v) => (AsPathSegmentType::AsSet, v.clone()),
    };
    let as4: Vec<As4PathSegment> = path
        .iter()
        .map(|s| {
            let (kind, asns) = parts(s);
            As4PathSegment::new(kind, asns)
        })
        .collect();
    if four_octet {
        let value = PathAttributeValue::AsPath(AsPath::As4PathSegments(as4.into()));
        return Ok(vec![attribute(FLAG_TRANSITIVE, value)?]);
    }
    let to2 = |a: &u32| u16::try_from(*a).unwrap_or(AS_TRANS);
    let as2: Vec<As2PathSegment> = path
        .iter()
        .map(|s| {
            let (kind, asns) = parts(s);
            As2PathSegment::new(kind, asns.iter().map(to2).collect::<Vec<u16>>())
        })
        .collect();
    let mut out = vec![attribute(
        FLAG_TRANSITIVE,
        PathAttributeValue::AsPath(AsPath::As2PathSegments(as2.into())),
    )?];
    let needs_as4 = path.iter().any(|s| parts(s).1.iter().any(|a| *a > 0xffff));
    if needs_as4 {
        let value = PathAttributeValue::As4Path(As4Path::new(as4));
        out.push(attribute(FLAG_OPTIONAL | FLAG_TRANSITIVE, value)?);
    }
    Ok(out)
}

fn v4_address(p: &Prefix) -> Result<Ipv4UnicastAddress, EncodeError> {
    let Prefix::V4(addr, len) = *p else {
        return Err(EncodeError::NotUnicast(*p));
    };
    let net = ipnet::Ipv4Net::new(addr, len).map_err(|_| EncodeError::NotUnicast(*p))?;
    let unicast = Ipv4Unicast::from_net(net).map_err(|_| EncodeError::NotUnicast(*p))?;
    Ok(Ipv4UnicastAddress::new_no_path_id(unicast))
}

fn v6_address(p: &Prefix) -> Result<Ipv6UnicastAddress, EncodeError> {
    let Prefix::V6(addr, len) = *p else {
        return Err(EncodeError::NotUnicast(*p));
    };
    let net = ipnet::Ipv6Net::new(addr, len).map_err(|_| EncodeError::NotUnicast(*p))?;
    let unicast = Ipv6Unicast::from_net(net).map_err(|_| EncodeError::NotUnicast(*p))?;
    Ok(Ipv6UnicastAddress::new(None, unicast))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    const UPDATE_V4: &[u8] = include_bytes!("../../tests/fixtures/bird_update_v4.bin");
    const UPDATE_V6: &[u8] = include_bytes!("../../tests/fixtures/bird_update_v6.bin");
    const CTX: DecodeContext = DecodeContext {
        four_octet_as: true,
        ibgp: false,
    };
    // Offsets in bird_update_v4.bin: attributes start at 23; ORIGIN at 23,
    // AS_PATH at 27, NEXT_HOP at 36, MED at 43, COMMUNITIES at 50.
    const ORIGIN_AT: usize = 23;
    const MED_AT: usize = 43;

    fn decode(bytes: &[u8]) -> Result<UpdateRepr, DecodeError> {
        match Message::decode(bytes, &CTX)? {
            Message::Update(u) => Ok(u),
            other => panic!("not an update: {other:?}"),
        }
    }

    fn withdrawn_bird_route() -> Vec<Prefix> {
        vec!["198.18.10.1/32".parse().expect("prefix")]
    }

    #[test]
    fn bad_origin_value_is_treat_as_withdraw() {
        let mut bytes = UPDATE_V4.to_vec();
        bytes[ORIGIN_AT + 3] = 7;
        let u = decode(&bytes).expect("treat-as-withdraw, not reset");
        assert_eq!(u.treat_as_withdraw.map(|m| m.type_code), Some(ORIGIN));
        assert!(u.announced.is_empty());
        assert_eq!(u.withdrawn, withdrawn_bird_route());
        assert_eq!(u.attributes, PathAttributes::default());
    }

    #[test]
    fn bad_attribute_flags_are_treat_as_withdraw() {
        let mut bytes = UPDATE_V4.to_vec();
        bytes[MED_AT] = 0x40; // MED marked well-known
        let u = decode(&bytes).expect("treat-as-withdraw");
        assert_eq!(u.treat_as_withdraw.map(|m| m.type_code), Some(MED));
        assert_eq!(u.withdrawn, withdrawn_bird_route());
    }

    #[test]
    fn bad_med_length_is_treat_as_withdraw() {
        // MED with length 3: shorten the attribute and every length field.
        let mut bytes = UPDATE_V4.to_vec();
        bytes.remove(MED_AT + 3);
        bytes[MED_AT + 2] = 3;
        bytes[17] -= 1; // message length
        bytes[22] -= 1; // total path attribute length
        let u = decode(&bytes).expect("treat-as-withdraw");
        assert_eq!(u.treat_as_withdraw.map(|m| m.type_code), Some(MED));
    }

    #[test]
    fn missing_next_hop_is_treat_as_withdraw() {
        let mut bytes = UPDATE_V4.to_vec();
        bytes.drain(36..43); // NEXT_HOP attribute, 7 octets
        bytes[17] -= 7;
        bytes[22] -= 7;
        let u = decode(&bytes).expect("treat-as-withdraw");
        assert_eq!(u.treat_as_withdraw.map(|m| m.type_code), Some(NEXT_HOP));
    }

    #[test]
    fn missing_local_pref_on_ibgp_is_treat_as_withdraw() {
        let ibgp = DecodeContext {
            four_octet_as: true,
            ibgp: true,
        };
        let Ok(Message::Update(u)) = Message::decode(UPDATE_V4, &ibgp) else {
            panic!("decodes");
        };
        assert_eq!(u.treat_as_withdraw.map(|m| m.type_code), Some(LOCAL_PREF));
    }

    #[test]
    fn truncated_nlri_resets_the_session() {
        let mut bytes = UPDATE_V4.to_vec();
        bytes.pop();
        bytes[17] -= 1;
        let err = decode(&bytes).expect_err("truncated NLRI");
        assert_eq!(err.notification().code, UPDATE_MESSAGE);
        assert_eq!(err.notification().subcode, INVALID_NETWORK_FIELD);
    }

    #[test]
    fn attribute_overrun_resets_the_session() {
        let mut bytes = UPDATE_V4.to_vec();
        bytes[MED_AT + 2] = 200;
        let err = decode(&bytes).expect_err("overrun");
        assert_eq!(err.notification().subcode, MALFORMED_ATTRIBUTE_LIST);
    }

    #[test]
    fn malformed_mp_reach_resets_the_session() {
        let mut bytes = UPDATE_V6.to_vec();
        // MP_REACH at 23 (flags 0x90, 2-octet length), AFI at 27: say AFI 2,
        // SAFI 1 but next hop length 5.
        bytes[30] = 5;
        let err = decode(&bytes).expect_err("bad MP_REACH");
        assert_eq!(err.notification().subcode, OPTIONAL_ATTRIBUTE_ERROR);
    }

    #[test]
    fn two_octet_session_uses_as_trans_and_as4_path() {
        let attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(vec![AsSegment::Sequence(vec![4_200_000_001, 65001])]),
            next_hop: Some(Ipv4Addr::new(198, 18, 0, 1)),
            ..Default::default()
        };
        let update = UpdateRepr::announce(withdrawn_bird_route(), attributes.clone());
        let two = DecodeContext::default();
        let bytes = Message::Update(update).encode(&two, 4096).expect("encodes");
        // AS_PATH: flags, type 2, len 6, AS_SEQUENCE, 2 ASNs, AS_TRANS, 65001.
        assert_eq!(&bytes[27..36], &[0x40, 2, 6, 2, 2, 0x5b, 0xa0, 0xfd, 0xe9]);
        assert!(bytes.windows(2).any(|w| w == [0xc0, AS4_PATH]));
    }
}
