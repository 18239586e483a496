//! Worker threads: the I/O shell around the sans-IO [`Pipeline`].
//!
//! A worker owns its packet I/O, its pipeline (and so its connection
//! table), and its counters block. It loops: read the current snapshots
//! (a pointer compare unless the control plane published new ones), poll one
//! batch, transmit what the pipeline built, expire a bounded number of
//! connections, publish gauges, report neighbour misses. Worker 0 also announces VIPs (gratuitous ARP,
//! unsolicited NA) when the VIP set changes. It reads the clock
//! once per batch; nothing in the loop takes a lock.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::counters::{BackendGauges, Counter, WorkerCounters};
use crate::flow::Addr16;
use crate::io::{sys, PacketIo};
use crate::pipeline::Pipeline;
use crate::snapshot::{NextHopSnapshot, Published, ServiceSnapshot};

/// What a worker tells the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEvent {
    /// No MAC known for `addr` on `ifindex`: ask the kernel to resolve it
    /// and publish a new next-hop snapshot.
    NeighbourMiss { ifindex: u32, addr: Addr16 },
}

/// The snapshots every worker reads.
#[derive(Clone)]
pub struct Tables {
    pub services: Arc<Published<ServiceSnapshot>>,
    pub nexthops: Arc<Published<NextHopSnapshot>>,
}

/// The control plane's handle on a running worker.
pub struct WorkerHandle {
    pub id: usize,
    pub counters: Arc<WorkerCounters>,
    /// Live connections of this worker per backend id.
    pub backends: Arc<BackendGauges>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl WorkerHandle {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the worker and waits for it; returns its I/O error, if any.
    pub fn join(mut self) -> io::Result<()> {
        self.stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other(format!("worker {} panicked", self.id))),
            None => Ok(()),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long one poll may block; bounds how late a stop or a snapshot swap
/// is noticed when no traffic flows (a VRRP move waits for every worker to
/// take the new snapshot before announcing it, so keep this short).
const POLL_TIMEOUT: Duration = Duration::from_millis(10);

/// Starts worker `id` on its own thread, pinned to `core` when given.
pub fn spawn<I: PacketIo + Send + 'static>(
    id: usize,
    core: Option<usize>,
    io: I,
    pipeline: Pipeline,
    tables: Tables,
    events: SyncSender<WorkerEvent>,
) -> io::Result<WorkerHandle> {
    let counters = pipeline.counters();
    let backends = pipeline.backend_gauges();
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vipgate-w{id}"))
        .spawn(move || {
            if let Some(core) = core {
                // Pinning is best effort: a cpuset that forbids the core
                // only costs locality, not correctness.
                let _ = sys::pin_current_thread(core);
            }
            run(io, pipeline, tables, events, &thread_stop, id == 0)
        })?;
    Ok(WorkerHandle {
        id,
        counters,
        backends,
        stop,
        thread: Some(thread),
    })
}

fn run<I: PacketIo>(
    mut io: I,
    mut pipeline: Pipeline,
    tables: Tables,
    events: SyncSender<WorkerEvent>,
    stop: &AtomicBool,
    announcer: bool,
) -> io::Result<()> {
    let mut services = tables.services.reader();
    let mut nexthops = tables.nexthops.reader();
    let epoch = Instant::now();
    let counters = pipeline.counters();
    // The VIP set can only change with a new service snapshot.
    let mut announced_generation = None;
    while !stop.load(Ordering::Relaxed) {
        let now = epoch.elapsed().as_millis() as u64;
        // Borrowed, not cloned: cloning the Arc would write its shared
        // reference count every batch.
        let svc = services.current();
        let nh = nexthops.current();
        counters.set(Counter::ServiceGeneration, svc.generation);
        if announcer && announced_generation != Some(svc.generation) {
            announced_generation = Some(svc.generation);
            pipeline.announce_if_changed(svc);
        }
        io.poll_batch(POLL_TIMEOUT, &mut |meta, frame| {
            pipeline.process(now, svc, nh, meta, frame)
        })?;
        if pipeline.has_built() {
            io.send(&pipeline.built_frames())?;
            pipeline.clear_built();
        }
        pipeline.expire(now);
        for (ifindex, addr) in pipeline.take_neighbour_misses() {
            // A full channel means the control plane already has a queue
            // of misses to resolve; the next packet will ask again.
            let _ = events.try_send(WorkerEvent::NeighbourMiss { ifindex, addr });
        }
        let ioc = io.counters();
        counters.set(Counter::Rx, ioc.rx_frames);
        counters.set(Counter::Tx, ioc.tx_frames);
        counters.set(Counter::RxRingDrops, ioc.rx_ring_drops);
        counters.set(Counter::TxErrors, ioc.tx_errors);
        counters.set(Counter::RxTruncated, ioc.rx_truncated);
    }
    Ok(())
}
