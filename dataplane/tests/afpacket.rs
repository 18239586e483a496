//! The AF_PACKET backend against the real kernel: two workers in one
//! fanout group on one end of a veth pair, frames injected from the other
//! end with a raw packet socket.
//!
//! Needs root (CAP_NET_ADMIN for the namespace and link, CAP_NET_RAW for
//! the sockets); without it the test prints why and passes. Everything
//! happens on one dedicated thread that moved into a fresh, anonymous
//! network namespace with unshare(CLONE_NEWNET): the veth pair
//! `vgt<pid>a`/`vgt<pid>b` exists only there, a guard deletes it on every
//! path, and the namespace itself disappears with the thread and its
//! sockets (also if the process is killed). Addresses are from
//! 198.18.0.0/15 and 2001:db8::/32; no frame leaves the namespace.
//!
//! Raw sockets on the injecting end have no safe API in std, so this test
//! calls libc directly; every `unsafe` block says why it is sound.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use vipgate_dataplane::io::afpacket::{
    socket_filter_program, AfPacket, AfPacketConfig, Interface, RingConfig,
};
use vipgate_dataplane::io::{PacketIo, RxMeta, Verdict};

const MAC_A: [u8; 6] = [0x02, 0x76, 0x67, 0x74, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0x76, 0x67, 0x74, 0x00, 0x0b];
/// Every injected frame's source MAC is `MARK` followed by its 16-bit id.
const MARK: [u8; 4] = [0x02, 0x76, 0x67, 0x74];

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const LATE_VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const BACKEND4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 20);

fn vip6() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)
}

fn backend6() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 7)
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Ids of frames the handler transmits (rewritten) instead of dropping.
const TX_IDS: std::ops::Range<u16> = 0x7000..0x7004;
/// Id of the frame longer than the snap length.
const BIG_ID: u16 = 0x7100;
const BIG_LEN: usize = 4000;
/// Id of the frame a worker builds and sends with `PacketIo::send`.
const SENT_ID: u16 = 0x7200;
/// TTL the handler writes into transmitted IPv4 frames.
const REWRITTEN_TTL: u8 = 7;

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn two_workers_share_flows_by_client_endpoint() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: tests/afpacket.rs needs root (network namespace, veth, AF_PACKET)");
        return;
    }
    // The namespace switch must not touch the test harness's threads.
    match std::thread::spawn(run_in_fresh_netns).join() {
        Ok(Ok(())) => {}
        Ok(Err(skip)) => println!("SKIPPED: {skip}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Returns `Err` only for a reason to skip (no namespace support); test
/// failures panic.
fn run_in_fresh_netns() -> Result<(), String> {
    // SAFETY: unshare affects only the calling thread, which is this
    // test's own, and takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        ));
    }
    // No IPv6 on new links: no router solicitations or DAD frames that
    // would mix with the injected ones. Absent without IPv6 support.
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    let veth = Veth::create(std::process::id());
    run(&veth);
    Ok(())
}

/// A veth pair in this thread's namespace, deleted on drop.
struct Veth {
    a: String,
    b: String,
}

impl Veth {
    fn create(pid: u32) -> Veth {
        let veth = Veth {
            a: format!("vgt{pid}a"),
            b: format!("vgt{pid}b"),
        };
        // From here on the guard exists: a failing step still deletes.
        ip(&[
            "link",
            "add",
            &veth.a,
            "address",
            &mac(MAC_A),
            "mtu",
            "9000",
            "type",
            "veth",
            "peer",
            "name",
            &veth.b,
            "address",
            &mac(MAC_B),
            "mtu",
            "9000",
        ]);
        ip(&["link", "set", &veth.a, "up"]);
        ip(&["link", "set", &veth.b, "up"]);
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; it may not exist if `add`
        // failed. The namespace goes away with the thread regardless.
        let _ = Command::new("ip").args(["link", "del", &self.a]).output();
    }
}

/// Run `ip` (it inherits this thread's namespace) and insist it worked.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 `ip` runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ifindex(name: &str) -> u32 {
    let name = std::ffi::CString::new(name).expect("interface names have no NUL");
    // SAFETY: `name` is a NUL-terminated string alive for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(
        index,
        0,
        "if_nametoindex({name:?}): {}",
        io::Error::last_os_error()
    );
    index
}

// ---------------------------------------------------------------------------
// The scenario

/// What one worker's handler saw.
#[derive(Default)]
struct Seen {
    /// (id, wire_len, bytes handed over) per frame, in order.
    frames: Vec<(u16, u32, usize)>,
    /// Frames without the test's mark.
    strays: usize,
}

struct Lab {
    workers: [AfPacket; 2],
    seen: [Seen; 2],
    a_index: u32,
    injector: RawSocket,
    observer: RawSocket,
}

fn run(veth: &Veth) {
    let (a_index, b_index) = (ifindex(&veth.a), ifindex(&veth.b));
    let mut config = AfPacketConfig::new(
        vec![Interface {
            extra_macs: vec![],
            ifindex: a_index,
            name: veth.a.clone(),
        }],
        0x5a00 + (std::process::id() % 0x100) as u16,
        vec![IpAddr::V4(VIP4), IpAddr::V6(vip6())],
    );
    config.ring = RingConfig {
        block_size: 64 * 1024,
        block_count: 8,
        ..RingConfig::default()
    };
    let snap = config.ring.snap_len() as usize;
    let workers = [open(&config), open(&config)];
    let mut lab = Lab {
        workers,
        seen: [Seen::default(), Seen::default()],
        a_index,
        injector: RawSocket::open(b_index, 0),
        observer: RawSocket::open(b_index, libc::ETH_P_ALL as u16),
    };
    lab.observer.drop_outgoing();

    let mut flows = Vec::new();
    let mut frames = Vec::new();
    let mut next_id = 1u16;
    for i in 0..48u16 {
        let proto = if i % 2 == 0 { TCP } else { UDP };
        let client = Ipv4Addr::new(198, 18, 0, 10 + i as u8);
        let port = 40000 + 7 * i;
        let (fwd, rev) = (next_id, next_id + 1);
        frames.push(ipv4(fwd, client, port, VIP4, 80, proto, 0));
        frames.push(ipv4(rev, BACKEND4, 8080, client, port, proto, 0));
        flows.push((fwd, rev));
        next_id += 2;
    }
    for i in 0..48u16 {
        let proto = if i % 2 == 0 { UDP } else { TCP };
        let client = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, i, 0x42);
        let port = 50000 + 3 * i;
        let (fwd, rev) = (next_id, next_id + 1);
        frames.push(ipv6(fwd, client, port, vip6(), 443, proto));
        frames.push(ipv6(rev, backend6(), 8443, client, port, proto));
        flows.push((fwd, rev));
        next_id += 2;
    }
    let arp_ids: Vec<u16> = (0..4).map(|i| 0x6000 + i).collect();
    frames.extend(arp_ids.iter().map(|&id| arp(id)));
    frames.extend(TX_IDS.map(|id| {
        ipv4(
            id,
            Ipv4Addr::new(198, 18, 0, 200),
            1000 + id,
            VIP4,
            80,
            UDP,
            0,
        )
    }));
    frames.push(ipv4(
        BIG_ID,
        Ipv4Addr::new(198, 18, 0, 201),
        999,
        VIP4,
        80,
        UDP,
        BIG_LEN,
    ));

    for frame in &frames {
        lab.injector.send(frame);
    }
    let expected: HashSet<u16> = frames
        .iter()
        .map(|f| id_of(f).expect("injected frames carry the mark"))
        .collect();
    lab.receive_until(&expected);

    // (a) every frame exactly once, and nothing else.
    let by_id = lab.where_seen();
    for id in &expected {
        assert_eq!(
            by_id.get(id).map(Vec::len),
            Some(1),
            "frame {id:#x} received {:?}",
            by_id.get(id)
        );
    }
    assert_eq!(by_id.len(), expected.len(), "unexpected ids received");
    assert_eq!(
        lab.seen[0].strays + lab.seen[1].strays,
        0,
        "frames the test did not send"
    );
    // (b) both directions of each flow on one worker, and both workers used.
    for &(fwd, rev) in &flows {
        assert_eq!(
            by_id[&fwd], by_id[&rev],
            "flow {fwd:#x}/{rev:#x} split across workers"
        );
    }
    let on_first = flows.iter().filter(|(fwd, _)| by_id[fwd] == [0]).count();
    assert!(
        on_first > 0 && on_first < flows.len(),
        "fanout used one worker only ({on_first} of {})",
        flows.len()
    );
    // (d) the long frame arrived once, truncated to the snap length.
    let big = lab
        .seen
        .iter()
        .flat_map(|s| &s.frames)
        .find(|f| f.0 == BIG_ID)
        .copied();
    assert_eq!(
        big,
        Some((BIG_ID, BIG_LEN as u32, snap)),
        "long frame (id, wire_len, handed)"
    );

    // (c) Tx verdicts and a worker-built frame come out on the peer.
    lab.workers[1]
        .send(&[(a_index, &ipv4(SENT_ID, BACKEND4, 1, VIP4, 2, UDP, 0))])
        .expect("send");
    let wanted: HashSet<u16> = TX_IDS.chain([SENT_ID]).collect();
    let out = lab.observer.receive_marked(&wanted);
    for id in TX_IDS {
        let frame = out
            .get(&id)
            .unwrap_or_else(|| panic!("Tx frame {id:#x} not seen on the peer"));
        assert_eq!(frame[..6], MAC_B, "rewritten destination MAC");
        assert_eq!(frame[14 + 8], REWRITTEN_TTL, "rewritten TTL");
    }
    assert_eq!(out[&SENT_ID], ipv4(SENT_ID, BACKEND4, 1, VIP4, 2, UDP, 0));

    // (e) counters agree with what the handlers saw and sent.
    let mut total = vipgate_dataplane::io::IoCounters::default();
    for (worker, seen) in lab.workers.iter_mut().zip(&lab.seen) {
        worker.refresh_stats().expect("PACKET_STATISTICS");
        let c = worker.counters();
        assert_eq!(
            c.rx_frames,
            seen.frames.len() as u64,
            "rx_frames of a worker"
        );
        total.rx_frames += c.rx_frames;
        total.rx_truncated += c.rx_truncated;
        total.tx_frames += c.tx_frames;
        total.tx_errors += c.tx_errors;
        total.rx_ring_drops += c.rx_ring_drops;
    }
    assert_eq!(total.rx_frames, frames.len() as u64);
    assert_eq!(total.rx_truncated, 1);
    assert_eq!(total.tx_frames, TX_IDS.len() as u64 + 1);
    assert_eq!(total.tx_errors, 0);
    assert_eq!(total.rx_ring_drops, 0);

    lab.vip_update(next_id);
}

impl Lab {
    /// Poll both workers until every id in `expected` was handed over (or
    /// `WAIT` passed), then a little longer to catch duplicates.
    fn receive_until(&mut self, expected: &HashSet<u16>) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline
            && !expected.iter().all(|id| self.where_seen().contains_key(id))
        {
            self.poll_both();
        }
        for _ in 0..10 {
            self.poll_both();
        }
    }

    fn poll_both(&mut self) {
        let a_index = self.a_index;
        for (worker, seen) in self.workers.iter_mut().zip(self.seen.iter_mut()) {
            let mut handler = |meta: &RxMeta, frame: &mut [u8]| handle(a_index, meta, frame, seen);
            worker
                .poll_batch(Duration::from_millis(5), &mut handler)
                .expect("poll_batch");
        }
    }

    /// Id -> indexes of the workers that received it (once each time).
    fn where_seen(&self) -> HashMap<u16, Vec<usize>> {
        let mut by_id: HashMap<u16, Vec<usize>> = HashMap::new();
        for (w, seen) in self.seen.iter().enumerate() {
            for &(id, _, _) in &seen.frames {
                by_id.entry(id).or_default().push(w);
            }
        }
        by_id
    }

    /// Flows towards a VIP the program does not know yet are split (the
    /// forward direction hashes the VIP side); after `set_vips` through a
    /// `FanoutHandle`, the same kind of flows stay together.
    fn vip_update(&mut self, mut next_id: u16) {
        let handle = self.workers[0].fanout_handle().expect("fanout handle");
        let mut round = |lab: &mut Lab, subnet: u8| {
            let mut flows = Vec::new();
            for i in 0..32u16 {
                let client = Ipv4Addr::new(198, 18, subnet, 10 + i as u8);
                let (fwd, rev) = (next_id, next_id + 1);
                lab.injector
                    .send(&ipv4(fwd, client, 30000 + i, LATE_VIP4, 53, UDP, 0));
                lab.injector
                    .send(&ipv4(rev, BACKEND4, 5353, client, 30000 + i, UDP, 0));
                flows.push((fwd, rev));
                next_id += 2;
            }
            lab.receive_until(&flows.iter().flat_map(|&(f, r)| [f, r]).collect());
            let by_id = lab.where_seen();
            flows
                .iter()
                .filter(|(f, r)| !by_id.contains_key(f) || by_id.get(f) != by_id.get(r))
                .count()
        };
        let split_before = round(self, 4);
        assert!(
            split_before > 0,
            "without the VIP every flow stayed together: the check below could not fail"
        );
        handle
            .set_vips(&[IpAddr::V4(VIP4), IpAddr::V6(vip6()), IpAddr::V4(LATE_VIP4)])
            .expect("set_vips");
        assert_eq!(round(self, 5), 0, "flows split after set_vips");
    }
}

/// The test's "pipeline": record the frame; rewrite and transmit the ones
/// in `TX_IDS`, drop the rest.
fn handle(a_index: u32, meta: &RxMeta, frame: &mut [u8], seen: &mut Seen) -> Verdict {
    assert_eq!(meta.ifindex, a_index);
    let Some(id) = id_of(frame) else {
        seen.strays += 1;
        return Verdict::Drop;
    };
    seen.frames.push((id, meta.wire_len, frame.len()));
    if !TX_IDS.contains(&id) {
        return Verdict::Drop;
    }
    frame[..6].copy_from_slice(&MAC_B);
    frame[14 + 8] = REWRITTEN_TTL;
    Verdict::Tx {
        ifindex: a_index,
        len: frame.len(),
    }
}

fn open(config: &AfPacketConfig) -> AfPacket {
    AfPacket::open(config).unwrap_or_else(|e| panic!("AfPacket::open: {e}"))
}

// ---------------------------------------------------------------------------
// Frames

fn id_of(frame: &[u8]) -> Option<u16> {
    (frame.get(6..10)? == MARK).then(|| u16::from_be_bytes([frame[10], frame[11]]))
}

fn ethernet(id: u16, ethertype: u16) -> Vec<u8> {
    let mut f = MAC_A.to_vec();
    f.extend_from_slice(&MARK);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn l4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
    l4.resize(if proto == TCP { 20 } else { 8 }, 0);
    l4
}

/// An IPv4 frame, padded to `pad_to` bytes (checksums left zero: the
/// receiving kernel drops it, only the packet sockets matter).
fn ipv4(
    id: u16,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    proto: u8,
    pad_to: usize,
) -> Vec<u8> {
    let mut f = ethernet(id, 0x0800);
    let body = l4(proto, sport, dport);
    let total = (20 + body.len()).max(pad_to.saturating_sub(14)) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend(body);
    f.resize(f.len().max(pad_to).max(60), 0);
    f
}

fn ipv6(id: u16, src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, proto: u8) -> Vec<u8> {
    let mut f = ethernet(id, 0x86dd);
    let body = l4(proto, sport, dport);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(body.len() as u16).to_be_bytes());
    f.extend_from_slice(&[proto, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend(body);
    f
}

/// An ARP request (broadcast) for 198.18.1.1 from 198.18.0.9.
fn arp(id: u16) -> Vec<u8> {
    let mut f = ethernet(id, 0x0806);
    f[..6].fill(0xff);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MARK);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[198, 18, 0, 9, 0, 0, 0, 0, 0, 0, 198, 18, 1, 1]);
    f.resize(60, 0);
    f
}

// ---------------------------------------------------------------------------
// The injecting/observing end: a plain AF_PACKET socket.

struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    /// A packet socket bound to `ifindex`; protocol 0 sends only.
    fn open(ifindex: u32, protocol: u16) -> RawSocket {
        // SAFETY: plain syscall with constant arguments.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(
            raw >= 0,
            "socket(AF_PACKET): {}",
            io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = ifindex as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_ll of `len` bytes.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout);
        set_opt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &((4 << 20) as libc::c_int),
        );
        RawSocket { fd }
    }

    /// Receive only frames arriving from the wire (the dataplane's own
    /// socket filter does exactly that).
    fn drop_outgoing(&self) {
        let program = socket_filter_program(65535);
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        set_opt(&self.fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog);
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is readable for its length during the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            io::Error::last_os_error()
        );
    }

    /// Frames carrying the mark and an id in `wanted`, until all came or
    /// `WAIT` passed.
    fn receive_marked(&self, wanted: &HashSet<u16>) -> HashMap<u16, Vec<u8>> {
        let mut got = HashMap::new();
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 16 * 1024];
        while Instant::now() < deadline && !wanted.iter().all(|id| got.contains_key(id)) {
            // SAFETY: `buf` is writable for its length during the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            if let Some(id) = id_of(&buf[..n]).filter(|id| wanted.contains(id)) {
                assert!(
                    got.insert(id, buf[..n].to_vec()).is_none(),
                    "frame {id:#x} seen twice on the peer"
                );
            }
        }
        got
    }
}

fn set_opt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) {
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is readable for `len` bytes during the call.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}): {}",
        io::Error::last_os_error()
    );
}
