//! One measured run of traffic through an armed candidate, the warm-up
//! before it, and the search for the highest lossless rate.
//!
//! Owns the bench's run state: the topology, the two generator sockets,
//! the gateway core's clock, the measurement tags and the harness's clock
//! epoch. A run = sink up, CPU readings, generator (on a thread pinned to
//! the load core), a drain, CPU readings, sink down. Every run is bounded
//! by the load's count and time limit.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::{CoreClock, Foreign};
use crate::gateway::Armed;
use crate::gen::{Generator, Load, Sent};
use crate::sink::Sink;
use crate::topo::{addr, stopped, Topology};

/// Time the gateway gets to forward what is still queued after the
/// generator stopped, inside the CPU window.
const CPU_DRAIN: Duration = Duration::from_millis(50);
/// Further time before the sink stops reading.
const SINK_DRAIN: Duration = Duration::from_millis(100);
/// Foreign CPU above this share of the window marks a sample as noisy.
pub const NOISY_SHARE: f64 = 0.03;

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub candidate: String,
    pub load: Load,
    pub sent: Sent,
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    /// Of the lost: receive-buffer drops of the sink host.
    pub sink_host_drops: u64,
    pub frame_bytes: u64,
    /// Busy time of the gateway core over the window.
    pub gateway_busy_ms: f64,
    /// The same from cpuidle residency (cross-check; see `cpu`).
    pub gateway_busy_by_residency_ms: Option<f64>,
    pub window_ms: f64,
    /// Gateway core busy ns per packet the sink received.
    pub gateway_ns_per_packet: f64,
    /// Busy time of the load core (generator, sink) over the window.
    pub load_busy_ms: f64,
    /// Both cores' busy ns per packet received.
    pub all_cores_ns_per_packet: f64,
    /// CPU time of processes other than the harness's during the window
    /// (all cores).
    pub foreign_ms: f64,
    pub noisy: bool,
    /// How long the run waited for the machine to be quiet first.
    pub waited_for_quiet_s: f64,
    /// Forwarded during the run by the gateway's own count, where it has
    /// one (cross-check of `received`).
    pub gateway_forwarded: Option<u64>,
    pub latency_ns: Percentiles,
}

/// Latency percentiles, nanoseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The highest lossless rate found for one candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Lossless {
    pub candidate: String,
    /// Highest rate that lost nothing (datagrams/s, offered), 0 if none.
    pub rate: f64,
    /// What stopped the search above it: "loss" (the gateway path lost
    /// datagrams), "sink" (the sink host's receive buffer overflowed),
    /// "generator" (the generator could not offer the rate) or "probes"
    /// (the probe budget ran out while still lossless).
    pub limited_by: String,
    pub probes: Vec<Probe>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub offered: f64,
    pub achieved: f64,
    pub sent: u64,
    pub received: u64,
    pub sink_host_drops: u64,
    pub gateway_ns_per_packet: f64,
}

/// The bench's running state.
pub struct Bench {
    pub topo: Topology,
    gen_c0: Generator,
    gen_d0: Generator,
    pub clock: CoreClock,
    pub load_clock: CoreClock,
    pub epoch: Instant,
    /// Longest wait for a quiet machine before each run.
    pub quiet_wait: Duration,
    next_tag: u16,
}

impl Bench {
    pub fn new(topo: Topology) -> Result<Bench> {
        let (c0, d0) = (topo.c0.clone(), topo.d0.clone());
        let gen_c0 = topo.gen.run(|| Generator::open(&c0))??;
        let gen_d0 = topo.gen.run(|| Generator::open(&d0))??;
        let clock = CoreClock::new(topo.cores.gateway)?;
        let load_clock = CoreClock::new(topo.cores.load)?;
        Ok(Bench {
            load_clock,
            topo,
            gen_c0,
            gen_d0,
            clock,
            epoch: Instant::now(),
            quiet_wait: Duration::ZERO,
            next_tag: 1,
        })
    }

    /// One run of `load` through `armed`; also returns the latency
    /// histogram.
    pub fn run(&mut self, armed: &Armed, load: &Load) -> Result<(Sample, Histogram<u64>)> {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        let (port, target) = armed.target(&self.topo);
        let direct = port.name == self.topo.d0.name;
        let load_core = self.topo.cores.load;
        let sink = Sink::start(&self.topo.sink, addr::UDP_PORT, load_core, tag, self.epoch)?;
        let gen = if direct {
            &mut self.gen_d0
        } else {
            &mut self.gen_c0
        };
        let epoch = self.epoch;
        let fwd0 = armed.forwarded();
        let f0 = Foreign::read();
        let r0 = self.clock.read()?;
        let l0 = self.load_clock.read()?;
        let sent = std::thread::scope(|s| {
            s.spawn(|| {
                let _ = vipgate_dataplane::io::sys::pin_current_thread(load_core);
                crate::sys::set_timer_slack_ns(1_000);
                gen.run(load, &target, tag, epoch)
            })
            .join()
        })
        .map_err(|_| anyhow!("generator thread panicked"))?;
        std::thread::sleep(CPU_DRAIN);
        let r1 = self.clock.read()?;
        let l1 = self.load_clock.read()?;
        let f1 = Foreign::read();
        std::thread::sleep(SINK_DRAIN);
        let got = sink.finish()?;
        let fwd1 = armed.forwarded();
        let busy = r0.busy_until(&r1);
        let load_busy = l0.busy_until(&l1);
        let per_packet = |d: Duration| d.as_nanos() as f64 / got.received.max(1) as f64;
        let window = r0.wall_until(&r1);
        let foreign = f0.used_since(&f1, &armed.pids());
        let sample = Sample {
            candidate: armed.candidate().label().into(),
            load: *load,
            sent,
            received: got.received,
            lost: sent.sent.saturating_sub(got.received),
            reordered: got.reordered,
            duplicates: got.duplicates,
            sink_host_drops: got.host_drops,
            frame_bytes: got.frame_bytes,
            gateway_busy_ms: busy.as_secs_f64() * 1e3,
            gateway_busy_by_residency_ms: r0
                .busy_by_residency_until(&r1)
                .map(|d| d.as_secs_f64() * 1e3),
            window_ms: window.as_secs_f64() * 1e3,
            gateway_ns_per_packet: per_packet(busy),
            load_busy_ms: load_busy.as_secs_f64() * 1e3,
            all_cores_ns_per_packet: per_packet(busy + load_busy),
            foreign_ms: foreign.as_secs_f64() * 1e3,
            noisy: foreign.as_secs_f64() > NOISY_SHARE * window.as_secs_f64(),
            waited_for_quiet_s: 0.0,
            gateway_forwarded: fwd0.zip(fwd1).map(|(a, b)| b.saturating_sub(a)),
            latency_ns: Percentiles::of(&got.latency),
        };
        Ok((sample, got.latency))
    }

    /// A run after waiting for a quiet machine, repeated (at most `tries`
    /// times) while foreign load makes it noisy; the last one is returned
    /// either way.
    pub fn run_quiet(
        &mut self,
        armed: &Armed,
        load: &Load,
        tries: u32,
    ) -> Result<(Sample, Histogram<u64>)> {
        let mut last = self.quiet_run(armed, load)?;
        for _ in 1..tries {
            if !last.0.noisy || stopped() {
                break;
            }
            last = self.quiet_run(armed, load)?;
        }
        Ok(last)
    }

    fn quiet_run(&mut self, armed: &Armed, load: &Load) -> Result<(Sample, Histogram<u64>)> {
        let waited = wait_quiet(&armed.pids(), self.quiet_wait);
        let (mut s, h) = self.run(armed, load)?;
        s.waited_for_quiet_s = waited.as_secs_f64();
        Ok((s, h))
    }

    /// Sends `flows` flows (one datagram each, at `rate`) until the sink
    /// sees them: connection state created, rings and caches warm.
    pub fn warm_up(&mut self, armed: &Armed, flows: u32, rate: u64) -> Result<Sample> {
        self.fill(armed, 0, flows, rate)
    }

    /// Sends one datagram to each of flows `first..first+flows` (at least
    /// 1000 datagrams) until the sink sees 99% of them, at most 5 tries.
    pub fn fill(&mut self, armed: &Armed, first: u32, flows: u32, rate: u64) -> Result<Sample> {
        let load = Load {
            rate,
            count: u64::from(flows.max(1000)),
            max_time: Duration::from_secs(30),
            flows,
            first_flow: first,
            new_flow_share: 0.0,
            frame_size: 64,
        };
        let mut last = None;
        for _ in 0..5 {
            let (s, _) = self.run(armed, &load)?;
            let ok = s.received >= s.sent.sent * 99 / 100 && s.received > 0;
            last = Some(s);
            if ok || stopped() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        last.ok_or_else(|| anyhow!("no warm-up run"))
    }

    /// Exponential search then bisection for the highest rate at which
    /// `base` (its rate replaced) loses nothing; `probe` long per try, at
    /// most `max_probes` tries.
    pub fn lossless(
        &mut self,
        armed: &Armed,
        base: &Load,
        probe: Duration,
        max_probes: u32,
        start_rate: f64,
    ) -> Result<Lossless> {
        let mut good = 0.0f64;
        let mut bad: Option<(f64, &'static str)> = None;
        let mut rate = start_rate;
        let mut probes = Vec::new();
        for _ in 0..max_probes {
            if stopped() {
                break;
            }
            let load = Load {
                rate: rate as u64,
                count: (rate * probe.as_secs_f64()) as u64,
                max_time: probe * 3,
                ..*base
            };
            let (s, _) = self.run(armed, &load)?;
            probes.push(Probe {
                offered: rate,
                achieved: s.sent.achieved_pps,
                sent: s.sent.sent,
                received: s.received,
                sink_host_drops: s.sink_host_drops,
                gateway_ns_per_packet: s.gateway_ns_per_packet,
            });
            let verdict = if s.sent.achieved_pps < 0.97 * rate {
                Some("generator")
            } else if s.lost > 0 && s.sink_host_drops >= s.lost {
                Some("sink")
            } else if s.lost > 0 {
                Some("loss")
            } else {
                None
            };
            match verdict {
                None => good = good.max(rate),
                Some(why) => {
                    if bad.is_none_or(|(b, _)| rate < b) {
                        bad = Some((rate, why));
                    }
                }
            }
            rate = match bad {
                None => rate * 2.0,
                Some((b, _)) => {
                    if good > 0.0 && b / good < 1.08 {
                        break;
                    }
                    if good == 0.0 {
                        b / 2.0
                    } else {
                        (good + b) / 2.0
                    }
                }
            };
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Lossless {
            candidate: armed.candidate().label().into(),
            rate: good,
            limited_by: bad.map_or("probes", |(_, why)| why).into(),
            probes,
        })
    }
}

/// Waits (at most `limit`) until other processes used less than
/// [`NOISY_SHARE`] of a core over a quarter of a second: the other jobs on
/// a shared machine come in bursts (compilers). Returns the time waited.
fn wait_quiet(ours: &[u32], limit: Duration) -> Duration {
    let start = Instant::now();
    let window = Duration::from_millis(250);
    while start.elapsed() < limit && !stopped() {
        let a = Foreign::read();
        std::thread::sleep(window);
        let used = a.used_since(&Foreign::read(), ours);
        if used.as_secs_f64() <= NOISY_SHARE * window.as_secs_f64() {
            break;
        }
    }
    start.elapsed()
}
