//! NIC offloads (GRO, LRO, TSO, GSO, checksums) read and switched through
//! the ethtool ioctl, and put back on exit.
//!
//! AF_PACKET sees frames after GRO/LRO merged them and hands TSO/GSO the
//! job of cutting what it sends, so a dataplane that rewrites single frames
//! wants those off. Owns the `SIOCETHTOOL` calls with the feature-string
//! interface (ETHTOOL_GSSET_INFO / GSTRINGS / GFEATURES / SFEATURES, see
//! include/uapi/linux/ethtool.h). Must not touch any other link setting.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{SysError, SystemChange};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// More feature bits than any kernel has (about 70 today); bounds the
/// buffers against a nonsense count.
const MAX_FEATURES: usize = 1024;

/// One offload as ethtool(8) `-K` names it; each maps to the kernel
/// feature bits that implement it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Offload {
    Gro,
    Lro,
    Tso,
    Gso,
    TxChecksum,
    RxChecksum,
}

impl Offload {
    /// What the dataplane turns off: everything that merges or splits
    /// frames behind AF_PACKET's back.
    pub const DATAPLANE: [Offload; 4] = [Offload::Gro, Offload::Lro, Offload::Tso, Offload::Gso];

    /// The kernel's names for the feature bits (ETH_SS_FEATURES strings).
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Offload::Gro => &["rx-gro", "rx-gro-hw"],
            Offload::Lro => &["rx-lro"],
            Offload::Tso => &[
                "tx-tcp-segmentation",
                "tx-tcp-ecn-segmentation",
                "tx-tcp-mangleid-segmentation",
                "tx-tcp6-segmentation",
                "tx-tcp-accecn-segmentation",
            ],
            Offload::Gso => &["tx-generic-segmentation"],
            Offload::TxChecksum => &[
                "tx-checksum-ipv4",
                "tx-checksum-ip-generic",
                "tx-checksum-ipv6",
                "tx-checksum-sctp",
            ],
            Offload::RxChecksum => &["rx-checksum"],
        }
    }
}

impl fmt::Display for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Offload::Gro => "gro",
            Offload::Lro => "lro",
            Offload::Tso => "tso",
            Offload::Gso => "gso",
            Offload::TxChecksum => "tx-checksum",
            Offload::RxChecksum => "rx-checksum",
        })
    }
}

/// The state of one offload on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadState {
    On,
    Off,
    /// On and the driver does not let it be turned off.
    FixedOn,
    /// Off and cannot be turned on (not implemented by the device).
    FixedOff,
    /// The kernel knows none of its feature bits.
    Unknown,
}

/// One feature bit as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The user may change it (`hw_features`).
    pub changeable: bool,
    /// What the user asked for.
    pub requested: bool,
    /// What is in effect now.
    pub active: bool,
}

/// A snapshot of a device's feature bits.
#[derive(Clone, Debug)]
pub struct Offloads {
    ifname: String,
    names: Vec<String>,
    /// Per 32 bits: available, requested, active (ethtool_get_features_block
    /// without never_changed).
    blocks: Vec<[u32; 3]>,
}

impl Offloads {
    /// Reads every feature bit of `ifname`.
    pub fn read(ifname: &str) -> Result<Self, SysError> {
        let dev = Device::open(ifname)?;
        let names = dev.feature_names()?;
        let blocks = dev.get_features(names.len())?;
        Ok(Self {
            ifname: ifname.into(),
            names,
            blocks,
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The bit named `name` (as in `ethtool -k`'s long names).
    pub fn feature(&self, name: &str) -> Option<Feature> {
        self.index(name).and_then(|i| self.bit(i))
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    fn bit(&self, index: usize) -> Option<Feature> {
        let block = self.blocks.get(index / 32)?;
        let mask = 1u32 << (index % 32);
        Some(Feature {
            changeable: block[0] & mask != 0,
            requested: block[1] & mask != 0,
            active: block[2] & mask != 0,
        })
    }

    /// On when any of its bits is active; fixed when none can change.
    pub fn state(&self, offload: Offload) -> OffloadState {
        let bits: Vec<Feature> = offload
            .features()
            .iter()
            .filter_map(|n| self.feature(n))
            .collect();
        if bits.is_empty() {
            return OffloadState::Unknown;
        }
        let on = bits.iter().any(|b| b.active);
        let fixed = !bits.iter().any(|b| b.changeable);
        match (on, fixed) {
            (true, false) => OffloadState::On,
            (true, true) => OffloadState::FixedOn,
            (false, false) => OffloadState::Off,
            (false, true) => OffloadState::FixedOff,
        }
    }

    /// The bits of `offload` that are on (requested or active) and can be
    /// turned off, with their index.
    fn switchable_on(&self, offload: Offload) -> Vec<(usize, Feature)> {
        offload
            .features()
            .iter()
            .filter_map(|n| self.index(n))
            .filter_map(|i| self.bit(i).map(|b| (i, b)))
            .filter(|(_, b)| b.changeable && (b.requested || b.active))
            .collect()
    }
}

/// A feature bit this guard turned off and what was requested before.
#[derive(Clone, Debug)]
struct Changed {
    offload: Offload,
    index: usize,
    name: String,
    was_requested: bool,
}

/// Offloads turned off on one device; turned back to what was requested
/// before by `restore()` or on drop.
#[derive(Debug)]
pub struct OffloadGuard {
    ifname: String,
    changed: Vec<Changed>,
    skipped: Vec<(Offload, OffloadState)>,
    restored: bool,
}

impl OffloadGuard {
    /// Turns off every offload in `which` that is on and can be turned off.
    /// Offloads the device lacks or fixes on are skipped and reported
    /// ([`OffloadGuard::skipped`]), not errors.
    pub fn disable(ifname: &str, which: &[Offload]) -> Result<Self, SysError> {
        let before = Offloads::read(ifname)?;
        let mut guard = Self {
            ifname: ifname.into(),
            changed: Vec::new(),
            skipped: Vec::new(),
            restored: false,
        };
        for &offload in which {
            guard.plan(&before, offload);
        }
        if guard.changed.is_empty() {
            return Ok(guard);
        }
        let wanted: Vec<(usize, bool)> = guard.changed.iter().map(|c| (c.index, false)).collect();
        let dev = Device::open(ifname)?;
        dev.set_features(&wanted, before.names.len())?;
        guard.report(&Offloads::read(ifname)?);
        Ok(guard)
    }

    fn plan(&mut self, before: &Offloads, offload: Offload) {
        match before.state(offload) {
            OffloadState::Unknown | OffloadState::FixedOn | OffloadState::FixedOff => {
                let state = before.state(offload);
                if state != OffloadState::FixedOff {
                    tracing::warn!(ifname = %self.ifname, %offload, ?state, "offload cannot be turned off; skipped");
                }
                self.skipped.push((offload, state));
            }
            OffloadState::On | OffloadState::Off => {
                for (index, bit) in before.switchable_on(offload) {
                    if self.changed.iter().any(|c| c.index == index) {
                        continue;
                    }
                    self.changed.push(Changed {
                        offload,
                        index,
                        name: before.names[index].clone(),
                        was_requested: bit.requested,
                    });
                }
            }
        }
    }

    /// Logs what changed, and what the kernel kept on (a dependency, or a
    /// driver that refused).
    fn report(&self, after: &Offloads) {
        for c in &self.changed {
            let now = after.bit(c.index).map(|b| b.active);
            if now == Some(false) {
                tracing::info!(ifname = %self.ifname, offload = %c.offload, feature = %c.name, "offload turned off");
            } else {
                tracing::warn!(ifname = %self.ifname, offload = %c.offload, feature = %c.name, "offload still active after turning it off");
            }
        }
    }

    /// Offloads left alone, with the reason.
    pub fn skipped(&self) -> &[(Offload, OffloadState)] {
        &self.skipped
    }

    /// The feature bits this guard turned off.
    pub fn changed_features(&self) -> Vec<&str> {
        self.changed.iter().map(|c| c.name.as_str()).collect()
    }
}

impl SystemChange for OffloadGuard {
    fn describe(&self) -> String {
        format!(
            "offloads off on {}: {}",
            self.ifname,
            self.changed_features().join(",")
        )
    }

    fn restore(&mut self) -> Result<(), SysError> {
        if self.restored || self.changed.is_empty() {
            self.restored = true;
            return Ok(());
        }
        let wanted: Vec<(usize, bool)> = self
            .changed
            .iter()
            .map(|c| (c.index, c.was_requested))
            .collect();
        let result = Device::open(&self.ifname).and_then(|dev| {
            let count = dev.feature_names()?.len();
            dev.set_features(&wanted, count)
        });
        match result {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.restored = true;
        tracing::info!(ifname = %self.ifname, features = ?self.changed_features(), "offloads restored");
        Ok(())
    }
}

impl Drop for OffloadGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            tracing::error!(ifname = %self.ifname, error = %e, "could not restore offloads");
        }
    }
}

/// An ethtool request buffer, u64-aligned as the kernel structs need.
struct Request {
    words: Vec<u64>,
}

impl Request {
    fn new(bytes: usize) -> Self {
        Self {
            words: vec![0; bytes.div_ceil(8)],
        }
    }

    fn bytes(&self) -> &[u8] {
        let len = self.words.len() * 8;
        // SAFETY: u64 storage viewed as bytes: same memory, u8 has no
        // alignment or validity requirements, length in bytes is exact.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), len)
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.words.len() * 8;
        // SAFETY: as in `bytes`, with the unique borrow of `words`.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), len)
        }
    }

    /// Callers stay inside the size given to `new`.
    fn u32_at(&self, at: usize) -> u32 {
        let b = self.bytes();
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn set_u32(&mut self, at: usize, value: u32) {
        self.bytes_mut()[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn set_u64(&mut self, at: usize, value: u64) {
        self.bytes_mut()[at..at + 8].copy_from_slice(&value.to_ne_bytes());
    }
}

/// struct ifreq with the `ifr_data` member of its union.
#[repr(C)]
struct IfReqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// An interface and a socket to send it ethtool requests.
struct Device {
    ifname: String,
    socket: OwnedFd,
}

impl Device {
    fn open(ifname: &str) -> Result<Self, SysError> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
            return Err(SysError::InvalidInput(format!(
                "invalid interface name {ifname:?}"
            )));
        }
        let socket = udp_socket().map_err(|e| SysError::io("open socket for ethtool", e))?;
        Ok(Self {
            ifname: ifname.into(),
            socket,
        })
    }

    /// SIOCETHTOOL with `req`; returns the ioctl's non-negative result.
    fn call(&self, what: &str, req: &mut Request) -> Result<i32, SysError> {
        ethtool_ioctl(self.socket.as_raw_fd(), &self.ifname, req).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENODEV) => SysError::NoSuchInterface {
                    what: what.into(),
                    ifname: self.ifname.clone(),
                },
                _ => SysError::io(format!("{what} on {}", self.ifname), e),
            }
        })
    }

    /// The ETH_SS_FEATURES strings: index i names feature bit i.
    fn feature_names(&self) -> Result<Vec<String>, SysError> {
        // struct ethtool_sset_info { cmd, reserved, u64 sset_mask, u32 data[] }
        let mut info = Request::new(20);
        info.set_u32(0, ETHTOOL_GSSET_INFO);
        info.set_u64(8, 1 << ETH_SS_FEATURES);
        self.call("ethtool get feature count", &mut info)?;
        let count = info.u32_at(16) as usize;
        if count == 0 || count > MAX_FEATURES {
            return Err(SysError::Io {
                what: format!("ethtool get feature count on {}", self.ifname),
                source: io::Error::other(format!("kernel reported {count} features")),
            });
        }
        // struct ethtool_gstrings { cmd, string_set, len, u8 data[] }
        let mut strings = Request::new(12 + count * ETH_GSTRING_LEN);
        strings.set_u32(0, ETHTOOL_GSTRINGS);
        strings.set_u32(4, ETH_SS_FEATURES);
        strings.set_u32(8, count as u32);
        self.call("ethtool get feature names", &mut strings)?;
        Ok(parse_strings(&strings.bytes()[12..], count))
    }

    /// Per 32 feature bits: available, requested, active.
    fn get_features(&self, count: usize) -> Result<Vec<[u32; 3]>, SysError> {
        let blocks = count.div_ceil(32);
        // struct ethtool_gfeatures { cmd, size, { available, requested,
        // active, never_changed }[size] }
        let mut req = Request::new(8 + blocks * 16);
        req.set_u32(0, ETHTOOL_GFEATURES);
        req.set_u32(4, blocks as u32);
        self.call("ethtool get features", &mut req)?;
        Ok((0..blocks)
            .map(|b| {
                let at = 8 + b * 16;
                [req.u32_at(at), req.u32_at(at + 4), req.u32_at(at + 8)]
            })
            .collect())
    }

    /// Requests each `(bit, on)`; leaves all other bits as they are.
    fn set_features(&self, wanted: &[(usize, bool)], count: usize) -> Result<(), SysError> {
        let blocks = count.div_ceil(32);
        // struct ethtool_sfeatures { cmd, size, { valid, requested }[size] }
        let mut req = Request::new(8 + blocks * 8);
        req.set_u32(0, ETHTOOL_SFEATURES);
        req.set_u32(4, blocks as u32);
        for &(bit, on) in wanted.iter().filter(|(bit, _)| *bit < count) {
            let at = 8 + (bit / 32) * 8;
            let mask = 1u32 << (bit % 32);
            req.set_u32(at, req.u32_at(at) | mask);
            if on {
                req.set_u32(at + 4, req.u32_at(at + 4) | mask);
            }
        }
        // A positive result (ETHTOOL_F_WISH...) means some request is not
        // in effect; `report` logs which.
        self.call("ethtool set features", &mut req).map(|_| ())
    }
}

/// NUL-padded strings of ETH_GSTRING_LEN bytes each.
fn parse_strings(data: &[u8], count: usize) -> Vec<String> {
    data.chunks(ETH_GSTRING_LEN)
        .take(count)
        .map(|s| {
            let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        })
        .collect()
}

/// socket(AF_INET, SOCK_DGRAM): any socket carries ethtool ioctls.
#[allow(unsafe_code)]
fn udp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// ioctl(fd, SIOCETHTOOL, &ifreq) with `ifr_data` pointing at `req`.
#[allow(unsafe_code)]
fn ethtool_ioctl(fd: libc::c_int, ifname: &str, req: &mut Request) -> io::Result<i32> {
    let mut ifr = IfReqData {
        name: [0; libc::IFNAMSIZ],
        data: req.words.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    // Callers checked that the name is shorter than IFNAMSIZ (NUL stays).
    for (dst, src) in ifr.name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid ifreq whose data pointer refers to `req`,
    // which is as large as the command written in it declares (the kernel
    // copies at most the sizes given in the request header); both outlive
    // the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut ifr as *mut IfReqData) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(names: &[&str], available: u32, requested: u32, active: u32) -> Offloads {
        Offloads {
            ifname: "x".into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            blocks: vec![[available, requested, active]],
        }
    }

    #[test]
    fn parses_nul_padded_strings() {
        let mut data = vec![0u8; 3 * ETH_GSTRING_LEN];
        data[..6].copy_from_slice(b"rx-gro");
        data[32..64].copy_from_slice(&[b'a'; 32]);
        let names = parse_strings(&data, 2);
        assert_eq!(names, ["rx-gro".to_string(), "a".repeat(32)]);
        assert_eq!(parse_strings(&data[..40], 3).len(), 2);
    }

    #[test]
    fn state_combines_the_bits_of_an_offload() {
        let names = ["rx-gro", "rx-gro-hw", "rx-lro", "tx-tcp-segmentation"];
        // rx-gro changeable and on, rx-gro-hw fixed off, rx-lro fixed on,
        // tso changeable and off.
        let s = snapshot(&names, 0b1001, 0b0001, 0b0101);
        assert_eq!(s.state(Offload::Gro), OffloadState::On);
        assert_eq!(s.state(Offload::Lro), OffloadState::FixedOn);
        assert_eq!(s.state(Offload::Tso), OffloadState::Off);
        assert_eq!(s.state(Offload::RxChecksum), OffloadState::Unknown);
        assert_eq!(s.switchable_on(Offload::Gro).len(), 1);
        assert!(s.switchable_on(Offload::Tso).is_empty());
    }

    #[test]
    fn plan_records_previous_requests_and_skips_fixed() {
        let names = ["rx-gro", "rx-gro-hw", "rx-lro"];
        let s = snapshot(&names, 0b011, 0b001, 0b111);
        let mut guard = OffloadGuard {
            ifname: "x".into(),
            changed: vec![],
            skipped: vec![],
            restored: true,
        };
        guard.plan(&s, Offload::Gro);
        guard.plan(&s, Offload::Lro);
        guard.plan(&s, Offload::Gro);
        assert_eq!(guard.changed_features(), ["rx-gro", "rx-gro-hw"]);
        assert!(guard.changed[0].was_requested);
        assert!(!guard.changed[1].was_requested);
        assert_eq!(guard.skipped(), [(Offload::Lro, OffloadState::FixedOn)]);
    }
}
