//! The `xdp-reflector` experiment: the reflector's job (a frame to the VIP
//! from vg-cli gets the sink's MAC as destination, vg-srv's as source, and
//! leaves through vg-srv) with AF_XDP instead of AF_PACKET for the I/O.
//!
//! - Receive: a five-instruction XDP program, assembled by hand below
//!   ([`redirect_program`]), attached in native (driver) mode to vg-cli
//!   through a BPF link, redirects every frame of queue 0 into an XSKMAP
//!   whose only entry is an AF_XDP socket bound to vg-cli queue 0 in copy
//!   mode (`XDP_COPY | XDP_USE_NEED_WAKEUP`; veth has no zero-copy).
//! - Transmit: a second AF_XDP socket bound to vg-srv (its own UMEM, TX and
//!   completion rings only in use); the frame is copied from the receive
//!   UMEM into a transmit frame and `sendto()` kicks the kernel, which in
//!   copy mode builds an skb and hands it to vg-srv's `ndo_start_xmit`.
//! - Veth runs native XDP in its own NAPI instance, which is scheduled on
//!   the CPU of the peer's sender (the generator's core); the candidate turns
//!   on threaded NAPI for vg-cli and pins the `napi/vg-cli-*` kthread to the
//!   gateway core, so the XDP program and the copy into the UMEM are charged
//!   to that core like the kernel baseline's (RPS) softirq work.
//!
//! No libbpf/libxdp: the bpf(2) and AF_XDP calls are made with libc. The
//! pure-Rust crates that exist were not used: xdpilone (EUPL-1.2, a
//! copyleft licence next to our Apache-2.0) and `xdp` (Quilkin's, "early
//! days"); aya loads programs from ELF objects, which need a BPF compiler
//! this machine does not have. This is the only file of the bench crate
//! that may use `unsafe`; every block says why it is sound.
//!
//! Owns the XSKMAP, the program, the BPF link (closing it detaches the
//! program, so no exit path, SIGKILL included, leaves XDP attached), both
//! sockets and their mappings, vg-cli's `threaded` setting, and the
//! reflector thread. It must not touch other links or namespaces.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vipgate::netns::NetNs;
use vipgate_dataplane::io::Verdict;

use crate::gateway::Rewrite;
use crate::topo::Topology;

// ------------------------------------------------------------- the program

/// `bpf_redirect_map`'s helper number (include/uapi/linux/bpf.h,
/// `FN(redirect_map, 51, ...)`).
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// XDP action returned when the map has no socket for the queue.
const XDP_PASS: i32 = 2;
/// `offsetof(struct xdp_md, rx_queue_index)`: data, data_end, data_meta,
/// ingress_ifindex are the four u32 before it.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
/// `src_reg` of a `ld_imm64` whose immediate is a map fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// One eBPF instruction, encoded as in the kernel's instruction-set
/// document: opcode, dst (low nibble) and src (high nibble) registers,
/// signed 16-bit offset, signed 32-bit immediate, little-endian.
const fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [op, (src << 4) | dst, o[0], o[1], i[0], i[1], i[2], i[3]]
}

/// Number of 8-byte instructions of [`redirect_program`] (`ld_imm64` is
/// two).
pub const PROGRAM_INSNS: usize = 6;

/// The XDP program, for the XSKMAP `map_fd`:
///
/// ```text
/// r2 = *(u32 *)(r1 + 16)        ; ctx->rx_queue_index
/// r1 = map_fd ll                ; ld_imm64, src = BPF_PSEUDO_MAP_FD
/// r3 = 2                        ; flags: XDP_PASS when the slot is empty
/// call 51                       ; bpf_redirect_map(map, queue, XDP_PASS)
/// exit                          ; return its result
/// ```
///
/// libbpf's xsk.c (before it moved to libxdp) loaded these same five
/// instructions as its default program on kernels since 5.3.
pub fn redirect_program(map_fd: RawFd) -> [u8; PROGRAM_INSNS * 8] {
    const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    let insns = [
        insn(LDX_MEM_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0), // upper 32 bits of the immediate
        insn(MOV64_K, 3, 0, 0, XDP_PASS),
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ];
    let mut out = [0u8; PROGRAM_INSNS * 8];
    for (chunk, i) in out.chunks_exact_mut(8).zip(insns) {
        chunk.copy_from_slice(&i);
    }
    out
}

// ------------------------------------------------------------------ bpf(2)

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE` (include/uapi/linux/if_link.h): native XDP only.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The leading fields of `union bpf_attr` for BPF_MAP_CREATE; the kernel
/// zero-fills the ones after a shorter attribute.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// bpf(2) with `attr`; a returned fd is owned by the caller.
fn bpf<T>(cmd: i32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of `union
    // bpf_attr` and the size passed is its own; pointers inside it (program,
    // licence, log) point to buffers the caller keeps alive across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn owned(fd: i64) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: `fd` was just returned by the kernel to us and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An XSKMAP with `entries` slots (key: queue index, value: socket fd).
fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
    };
    owned(bpf(BPF_MAP_CREATE, &mut a)?)
}

fn xskmap_set(map: &OwnedFd, queue: u32, xsk: &OwnedFd) -> io::Result<()> {
    let (key, value) = (queue, xsk.as_raw_fd() as u32);
    let mut a = MapUpdateAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// Loads [`redirect_program`]; on rejection the error carries the
/// verifier's log.
fn load_program(map: &OwnedFd) -> io::Result<OwnedFd> {
    let code = redirect_program(map.as_raw_fd());
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"vgb_xskred");
    let mut a = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: PROGRAM_INSNS as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP,
    };
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => owned(fd),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(io::Error::new(
                e.kind(),
                format!(
                    "BPF_PROG_LOAD: {e}; verifier: {}",
                    String::from_utf8_lossy(&log[..end]).trim()
                ),
            ))
        }
    }
}

/// Attaches `prog` to `ifindex` (of the calling thread's namespace) in
/// native mode. Closing the returned link detaches it.
fn attach_native(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
    };
    owned(bpf(BPF_LINK_CREATE, &mut a)?)
}

// ------------------------------------------------------------------- AF_XDP

/// An anonymous or socket mapping, unmapped on drop.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access to it is
// synchronised by the owner (one reflector thread).
unsafe impl Send for Mmap {}

impl Mmap {
    fn anonymous(len: usize) -> io::Result<Mmap> {
        Mmap::map(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    }

    fn map(len: usize, flags: i32, fd: RawFd, offset: u64) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL), so it
        // aliases nothing of ours; failure is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_POPULATE,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap NULL"))?;
        Ok(Mmap { ptr, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing
        // borrows the mapping once its owner is dropped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One of the four rings: shared producer and consumer indices and an
/// array of `size` entries of type `E` (u64 addresses for fill and
/// completion, `xdp_desc` for RX and TX). `local` is our side's index.
struct Ring<E> {
    _map: Mmap,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    entries: *mut E,
    mask: u32,
    local: u32,
}

// SAFETY: the ring pointers point into `_map`, owned by the ring.
unsafe impl<E> Send for Ring<E> {}

impl<E: Copy> Ring<E> {
    /// Maps ring `pgoff` of socket `fd` with offsets `off` and `size`
    /// entries (a power of two).
    fn map(fd: RawFd, pgoff: u64, off: &libc::xdp_ring_offset, size: u32) -> io::Result<Ring<E>> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<E>();
        let map = Mmap::map(len, libc::MAP_SHARED, fd, pgoff)?;
        let base = map.ptr.as_ptr();
        // SAFETY: the kernel placed producer, consumer and the entries at
        // these offsets inside the `len` bytes just mapped (XDP_MMAP_OFFSETS),
        // each aligned for its type.
        let (producer, consumer, entries) = unsafe {
            (
                base.add(off.producer as usize).cast::<AtomicU32>(),
                base.add(off.consumer as usize).cast::<AtomicU32>(),
                base.add(off.desc as usize).cast::<E>(),
            )
        };
        // SAFETY: as above; the indices are u32 the kernel updates
        // atomically.
        let local = unsafe { (*producer).load(Ordering::Relaxed) };
        Ok(Ring {
            _map: map,
            producer,
            consumer,
            entries,
            mask: size - 1,
            local,
        })
    }

    fn shared(&self, which: *const AtomicU32) -> &AtomicU32 {
        // SAFETY: `which` is `producer` or `consumer`, inside the mapping
        // this ring owns for its whole life.
        unsafe { &*which }
    }

    // Consumer side (RX, completion): entries the kernel produced.
    fn available(&self) -> u32 {
        self.shared(self.producer)
            .load(Ordering::Acquire)
            .wrapping_sub(self.local)
    }

    fn read(&mut self, i: u32) -> E {
        // SAFETY: the index is masked into the ring; the caller reads only
        // entries counted by `available` (published with Release by the
        // kernel, seen through our Acquire).
        unsafe {
            self.entries
                .add((self.local.wrapping_add(i) & self.mask) as usize)
                .read()
        }
    }

    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.shared(self.consumer)
            .store(self.local, Ordering::Release);
    }

    fn write(&mut self, i: u32, e: E) {
        // SAFETY: masked index; the caller writes only free slots: the
        // fill and TX rings are as large as their UMEM, and a frame address
        // is in at most one place (ring, kernel or free list) at a time.
        unsafe {
            self.entries
                .add((self.local.wrapping_add(i) & self.mask) as usize)
                .write(e)
        };
    }

    fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.shared(self.producer)
            .store(self.local, Ordering::Release);
    }

    /// Producer side: whether the kernel has consumed everything.
    fn drained(&self) -> bool {
        self.shared(self.consumer).load(Ordering::Acquire) == self.local
    }
}

/// Sizes of one socket.
#[derive(Debug, Clone, Copy)]
struct XskConfig {
    frames: u32,
    frame_size: u32,
    rx: bool,
    tx: bool,
}

/// An AF_XDP socket with its own UMEM, bound to one queue in copy mode.
struct Xsk {
    umem: Mmap,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Option<Ring<libc::xdp_desc>>,
    tx: Option<Ring<libc::xdp_desc>>,
    frame_size: u32,
    // Last: closed after the rings are unmapped.
    fd: OwnedFd,
}

fn setsockopt<T>(fd: &OwnedFd, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the type the option expects and the
    // length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn mmap_offsets(fd: &OwnedFd) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: `off` and `len` are live and `len` is `off`'s size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
        return Err(io::Error::other("XDP_MMAP_OFFSETS: pre-5.4 layout"));
    }
    Ok(off)
}

impl Xsk {
    /// Creates, maps and binds a socket to `ifindex` queue `queue` of the
    /// calling thread's namespace.
    fn open(ifindex: u32, queue: u32, cfg: XskConfig) -> io::Result<Xsk> {
        // SAFETY: plain socket(2); the fd is checked and owned right away.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = owned(fd.into())?;
        let umem = Mmap::anonymous((cfg.frames * cfg.frame_size) as usize)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&fd, libc::XDP_UMEM_REG, &reg)?;
        let n = cfg.frames;
        setsockopt(&fd, libc::XDP_UMEM_FILL_RING, &n)?;
        setsockopt(&fd, libc::XDP_UMEM_COMPLETION_RING, &n)?;
        if cfg.rx {
            setsockopt(&fd, libc::XDP_RX_RING, &n)?;
        }
        if cfg.tx {
            setsockopt(&fd, libc::XDP_TX_RING, &n)?;
        }
        // Transmitted skbs are charged to the socket until the sink frees
        // them: room for every TX frame.
        let _ = crate::sys::set_sndbuf_force(&fd, 64 << 20);
        let off = mmap_offsets(&fd)?;
        let raw = fd.as_raw_fd();
        let fill = Ring::map(raw, libc::XDP_UMEM_PGOFF_FILL_RING, &off.fr, n)?;
        let comp = Ring::map(raw, libc::XDP_UMEM_PGOFF_COMPLETION_RING, &off.cr, n)?;
        let rx = match cfg.rx {
            true => Some(Ring::map(raw, libc::XDP_PGOFF_RX_RING as u64, &off.rx, n)?),
            false => None,
        };
        let tx = match cfg.tx {
            true => Some(Ring::map(raw, libc::XDP_PGOFF_TX_RING as u64, &off.tx, n)?),
            false => None,
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a live sockaddr_xdp and its size is passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Xsk {
            umem,
            fill,
            comp,
            rx,
            tx,
            frame_size: cfg.frame_size,
            fd,
        })
    }

    fn frame_mut(&mut self, addr: u64, len: u32) -> Option<&mut [u8]> {
        let (start, end) = (addr as usize, addr as usize + len as usize);
        if end > self.umem.len || len > self.frame_size {
            return None;
        }
        // SAFETY: [start, end) lies inside the UMEM (checked above), and
        // the frame at `addr` is ours: the kernel handed it over on the RX
        // ring (or it is a free TX frame), so it does not write it now.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(start), end - start)
        })
    }

    /// Waits up to `timeout` for the socket to be readable.
    fn wait(&self, timeout: Duration) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    }

    /// Asks the kernel to transmit what the TX ring holds (copy mode sends
    /// only from sendto/poll, at most 32 frames per call).
    fn kick(&self) {
        // SAFETY: a zero-length sendto with no buffer and no address, as
        // AF_XDP documents; MSG_DONTWAIT is required in copy mode.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
    }
}

// ----------------------------------------------------------- the reflector

/// Frames per UMEM; ring sizes equal this.
const FRAMES: u32 = 4096;
/// UMEM chunk: the kernel keeps XDP_PACKET_HEADROOM (256) of it in front
/// of each received frame, which leaves 1792 bytes, enough for 1514.
const FRAME_SIZE: u32 = 2048;
/// Receive descriptors handled per loop.
const BATCH: u32 = 64;

/// The receive and transmit sockets and the transmit frames not in flight.
struct Sockets {
    rx: Xsk,
    tx: Xsk,
    tx_free: Vec<u64>,
}

/// Counters of the reflector thread.
#[derive(Default)]
pub struct XdpCounters {
    pub forwarded: AtomicU64,
    /// Frames dropped for want of a free TX frame.
    pub tx_full: AtomicU64,
}

impl Sockets {
    fn open(cli: u32, srv: u32) -> io::Result<Sockets> {
        let rx_cfg = XskConfig {
            frames: FRAMES,
            frame_size: FRAME_SIZE,
            rx: true,
            tx: false,
        };
        let mut rx = Xsk::open(cli, 0, rx_cfg)?;
        let tx = Xsk::open(
            srv,
            0,
            XskConfig {
                rx: false,
                tx: true,
                ..rx_cfg
            },
        )?;
        // Every receive frame goes to the fill ring once.
        for i in 0..FRAMES {
            rx.fill.write(i, u64::from(i * FRAME_SIZE));
        }
        rx.fill.submit(FRAMES);
        let tx_free = (0..FRAMES).map(|i| u64::from(i * FRAME_SIZE)).collect();
        Ok(Sockets { rx, tx, tx_free })
    }

    /// Reaps completions, then handles up to a batch of received frames
    /// with `rw`; returns how many were received.
    fn step(&mut self, rw: &Rewrite, cli: u32, c: &XdpCounters) -> u32 {
        self.reap();
        let Some(rxr) = self.rx.rx.as_mut() else {
            return 0;
        };
        let n = rxr.available().min(BATCH);
        let mut sent = 0u32;
        let mut full = 0u64;
        for i in 0..n {
            let d = self.rx.rx.as_mut().map(|r| r.read(i));
            let Some(d) = d else { break };
            let out = match self.rx.frame_mut(d.addr, d.len) {
                Some(frame) => match rw.apply(cli, frame) {
                    Verdict::Tx { .. } => Some(&*frame),
                    _ => None,
                },
                None => None,
            };
            if let Some(frame) = out {
                let len = frame.len() as u32;
                match self.tx_free.pop() {
                    Some(t) => {
                        // Copy into the TX UMEM (separate UMEMs: see the
                        // module doc).
                        let src = frame.as_ptr();
                        if let Some(dst) = self.tx.frame_mut(t, len) {
                            // SAFETY: `src` points to `len` bytes of the RX
                            // UMEM, `dst` to `len` bytes of the TX UMEM:
                            // two different mappings, no overlap.
                            unsafe {
                                std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), len as usize)
                            };
                            if let Some(txr) = self.tx.tx.as_mut() {
                                txr.write(
                                    sent,
                                    libc::xdp_desc {
                                        addr: t,
                                        len,
                                        options: 0,
                                    },
                                );
                                sent += 1;
                            }
                        }
                    }
                    None => full += 1,
                }
            }
            // The RX frame goes straight back to the fill ring (its slot is
            // free: the fill ring is as large as the UMEM).
            self.rx.fill.write(i, d.addr & !u64::from(FRAME_SIZE - 1));
        }
        if let Some(r) = self.rx.rx.as_mut() {
            r.release(n);
        }
        self.rx.fill.submit(n);
        if let Some(t) = self.tx.tx.as_mut() {
            t.submit(sent);
        }
        self.flush();
        c.forwarded.fetch_add(u64::from(sent), Ordering::Relaxed);
        if full > 0 {
            c.tx_full.fetch_add(full, Ordering::Relaxed);
        }
        n
    }

    /// Kicks until the kernel took every TX descriptor (bounded).
    fn flush(&mut self) {
        for _ in 0..64 {
            match self.tx.tx.as_ref() {
                Some(t) if !t.drained() => self.tx.kick(),
                _ => return,
            }
        }
    }

    fn reap(&mut self) {
        let n = self.tx.comp.available();
        for i in 0..n {
            let a = self.tx.comp.read(i);
            self.tx_free.push(a);
        }
        self.tx.comp.release(n);
    }
}

/// The armed `xdp-reflector`: program attached, sockets bound, thread
/// running. Dropping it stops the thread, closes the link (detaching the
/// program) and the sockets, and turns threaded NAPI off again.
pub struct XdpReflector {
    gw: NetNs,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<XdpCounters>,
    /// The BPF link; dropped after the thread.
    link: Option<OwnedFd>,
    _prog: OwnedFd,
    _map: OwnedFd,
}

impl XdpReflector {
    pub fn start(topo: &Topology, rw: Rewrite) -> Result<XdpReflector> {
        let (cli, srv) = (topo.vg_cli.index, topo.vg_srv.index);
        // Before the attach: veth adds its NAPI instance then, and with
        // `threaded` still set from an earlier arming its kthread starts
        // right away.
        let before = napi_threads()?;
        let (map, prog, link, sockets) = topo.gw.run(|| -> Result<_> {
            let map = create_xskmap(1).context("creating the XSKMAP")?;
            let prog = load_program(&map).context("loading the XDP program")?;
            let sockets = Sockets::open(cli, srv).context("opening the AF_XDP sockets")?;
            xskmap_set(&map, 0, &sockets.rx.fd).context("XSKMAP update")?;
            let link = attach_native(&prog, cli).context("attaching XDP (native) to vg-cli")?;
            Ok((map, prog, link, sockets))
        })??;
        let mut armed = XdpReflector {
            gw: topo.gw.try_clone()?,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            counters: Arc::new(XdpCounters::default()),
            link: Some(link),
            _prog: prog,
            _map: map,
        };
        // From here on, `armed`'s drop undoes everything.
        armed.threaded_napi(topo, &before)?;
        let (core, stop, c) = (
            topo.cores.gateway,
            armed.stop.clone(),
            armed.counters.clone(),
        );
        armed.thread = Some(
            std::thread::Builder::new()
                .name("bench-xdp-refl".into())
                .spawn(move || {
                    let _ = vipgate_dataplane::io::sys::pin_current_thread(core);
                    reflect(sockets, rw, cli, &stop, &c);
                })?,
        );
        Ok(armed)
    }

    /// Turns threaded NAPI of vg-cli on and pins its kthread (the
    /// `napi/vg-cli-*` not in `before`) to the gateway core.
    fn threaded_napi(&self, topo: &Topology, before: &[u32]) -> Result<()> {
        write_sysfs(&self.gw, "vg-cli", "threaded", "1")?;
        let new: Vec<u32> = napi_threads()?
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if new.is_empty() {
            bail!("no napi/vg-cli-* kthread appeared after threaded=1");
        }
        for pid in new {
            pin(pid, topo.cores.gateway)?;
        }
        Ok(())
    }
}

impl Drop for XdpReflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Off while the NAPI instance exists (the kernel refuses the
        // write on a link without one), then detach.
        let _ = write_sysfs(&self.gw, "vg-cli", "threaded", "0");
        drop(self.link.take());
    }
}

fn reflect(mut s: Sockets, rw: Rewrite, cli: u32, stop: &AtomicBool, c: &XdpCounters) {
    // Same idle wait as the AF_PACKET reflector's poll timeout.
    let timeout = Duration::from_millis(10);
    while !stop.load(Ordering::Relaxed) {
        if s.step(&rw, cli, c) == 0 {
            s.rx.wait(timeout);
        }
    }
}

/// Pids of the `napi/vg-cli-*` kthreads (any namespace: the caller
/// compares before and after).
fn napi_threads() -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        let e = e?;
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.starts_with("napi/vg-cli-") {
            out.push(pid);
        }
    }
    Ok(out)
}

fn pin(pid: u32, core: usize) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-p", "-c", &core.to_string(), &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running taskset")?;
    if !out.status.success() {
        bail!(
            "pinning napi kthread {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes `/sys/class/net/<link>/<file>` as seen from `ns`.
fn write_sysfs(ns: &NetNs, link: &str, file: &str, value: &str) -> Result<()> {
    let script = format!("echo {value} > /sys/class/net/{link}/{file}");
    Topology::sh_in(ns, &script, &script)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-exact. How the bytes were checked: each instruction against the
    /// encoding of the kernel's Documentation/bpf/standardization/
    /// instruction-set.rst (opcode = class | op/size | source/mode; regs
    /// byte = src << 4 | dst; off and imm little-endian), and against the
    /// kernel: loaded by the bench on kernel 6.18 and read back with
    /// `bpftool prog dump xlated id N opcodes` (bpftool 7.1.0, Debian):
    ///
    /// ```text
    /// 0: (79) r2 = *(u64 *)(r1 +32)     79 12 20 00 00 00 00 00
    /// 1: (61) r2 = *(u32 *)(r2 +8)      61 22 08 00 00 00 00 00
    /// 2: (18) r1 = map[id:26]           18 11 00 00 1a 00 00 00 00 00 ...
    /// 4: (b7) r3 = 2                    b7 03 00 00 02 00 00 00
    /// 5: (85) call xsk_map_redirect     85 00 00 00 d0 d3 cc 00
    /// 6: (95) exit                      95 00 00 00 00 00 00 00
    /// ```
    ///
    /// The verifier rewrote our ctx->rx_queue_index load (0x61, r1 + 16)
    /// into rxq->queue_index (two loads), the map fd into the map's id and
    /// helper 51 into the XSKMAP's inlined redirect, as it does for every
    /// XDP program; ld_imm64 (18 11), r3 = 2 (b7 03 .. 02) and exit are our
    /// bytes unchanged. `bpftool prog show` gave the program tag
    /// 548a968b70885879 (the kernel's hash of the instructions as loaded,
    /// map fds zeroed): a change of any byte here changes it.
    #[test]
    fn redirect_program_bytes() {
        let p = redirect_program(7);
        #[rustfmt::skip]
        let want: [u8; 48] = [
            0x61, 0x12, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, // r2 = *(u32 *)(r1 + 16)
            0x18, 0x11, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, // r1 = fd 7 (pseudo map fd), low
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   high 32 bits
            0xb7, 0x03, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // r3 = 2 (XDP_PASS)
            0x85, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00, // call 51 (bpf_redirect_map)
            0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
        ];
        assert_eq!(p, want);
        // The map fd lands in the immediate, little-endian, and nowhere
        // else.
        let q = redirect_program(0x0102_0304);
        assert_eq!(&q[12..16], &[0x04, 0x03, 0x02, 0x01]);
        assert_eq!(&q[..12], &p[..12]);
        assert_eq!(&q[16..], &p[16..]);
    }
}
