//! CPU accounting: busy time of one core, CPU time of the rest of the
//! machine, and the machine description.
//!
//! The gateway's cost is read from its core: busy = wall time − idle time
//! of that core over the measured window. Idle time is the idle and iowait
//! columns of that core's `/proc/stat` line: with NO_HZ the kernel measures
//! them with a clock (`get_cpu_idle_time_us`), and it stops the idle clock
//! on interrupt entry, so softirq work on an otherwise idle core (the
//! kernel's forwarding, which RPS steers to that core and which runs in
//! softirq context of whatever task is there) counts as busy. The unit is
//! 10 ms (USER_HZ), so windows last seconds. The cpuidle residency counters
//! (`/sys/devices/system/cpu/cpuN/cpuidle/state*/time`, µs) are read too,
//! as a cross-check only: with a driver that enables interrupts inside the
//! idle state (haltpoll: `sti; hlt`), the interrupt and softirq work done on
//! wake-up is counted as residency, i.e. as idle, and the kernel's
//! forwarding nearly vanishes from that figure. Per-task accounting
//! (`/proc/<pid>/stat`) cannot see softirq work done in the idle task's
//! context; the tick-sampled user/system/softirq columns miss short bursts
//! (this kernel has no IRQ_TIME_ACCOUNTING).
//!
//! The core figure also counts anything else that runs there. The harness
//! cannot keep other processes off the core, so it measures them:
//! [`Foreign`] sums the CPU time of every process that is not the
//! harness or a process it started, over the same window, and each sample
//! carries it so that noisy samples can be repeated or discounted.
//!
//! Owns nothing; reads /proc and /sys only.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Idle-time reader of one core.
#[derive(Debug, Clone)]
pub struct CoreClock {
    pub core: usize,
    /// cpuidle state `time` files; empty: use /proc/stat.
    states: Vec<PathBuf>,
}

/// One reading of a core's idle time.
#[derive(Debug, Clone, Copy)]
pub struct CoreReading {
    at: Instant,
    /// From /proc/stat (the figure used).
    idle: Duration,
    /// From cpuidle residency (cross-check), when there is a driver.
    residency: Option<Duration>,
}

impl CoreClock {
    pub fn new(core: usize) -> Result<CoreClock> {
        let dir = PathBuf::from(format!("/sys/devices/system/cpu/cpu{core}/cpuidle"));
        let mut states: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path().join("time"))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default();
        states.sort();
        let clock = CoreClock { core, states };
        clock.read()?;
        Ok(clock)
    }

    /// Where the idle time comes from, for the report.
    pub fn source(&self) -> &'static str {
        "/proc/stat idle+iowait of the gateway core (NO_HZ clock, 10 ms units); cpuidle residency recorded as a cross-check"
    }

    pub fn read(&self) -> Result<CoreReading> {
        let at = Instant::now();
        let idle = proc_stat_idle(self.core)?;
        let residency = if self.states.is_empty() {
            None
        } else {
            let mut us = 0u64;
            for p in &self.states {
                let text =
                    fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                us += text.trim().parse::<u64>().unwrap_or(0);
            }
            Some(Duration::from_micros(us))
        };
        Ok(CoreReading {
            at,
            idle,
            residency,
        })
    }
}

impl CoreReading {
    /// Busy time of the core between `self` and `later`.
    pub fn busy_until(&self, later: &CoreReading) -> Duration {
        let wall = later.at.saturating_duration_since(self.at);
        wall.saturating_sub(later.idle.saturating_sub(self.idle))
    }

    /// The same from cpuidle residency (see the module doc: it counts
    /// interrupt work on wake-up as idle with some drivers).
    pub fn busy_by_residency_until(&self, later: &CoreReading) -> Option<Duration> {
        let wall = later.at.saturating_duration_since(self.at);
        Some(wall.saturating_sub(later.residency?.saturating_sub(self.residency?)))
    }

    pub fn wall_until(&self, later: &CoreReading) -> Duration {
        later.at.saturating_duration_since(self.at)
    }
}

fn proc_stat_idle(core: usize) -> Result<Duration> {
    let text = fs::read_to_string("/proc/stat")?;
    let tag = format!("cpu{core} ");
    let Some(line) = text.lines().find(|l| l.starts_with(&tag)) else {
        bail!("no {tag}line in /proc/stat");
    };
    let cols: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait ...; USER_HZ is 100 on Linux.
    let ticks = cols.get(3).copied().unwrap_or(0) + cols.get(4).copied().unwrap_or(0);
    Ok(Duration::from_millis(ticks * 10))
}

/// CPU time of processes that are not ours, machine-wide.
#[derive(Debug, Clone)]
pub struct Foreign {
    /// Per pid: utime + stime (clock ticks) at the last reading.
    ticks: HashMap<u32, u64>,
}

impl Foreign {
    /// A reading now.
    pub fn read() -> Foreign {
        Foreign {
            ticks: process_ticks(),
        }
    }

    /// CPU time used by foreign processes since `self`; `ours` are the
    /// harness's own pids (this process and the ones it started).
    /// Processes that started in between count in full; ones that ended
    /// are missed.
    pub fn used_since(&self, later: &Foreign, ours: &[u32]) -> Duration {
        let me = std::process::id();
        let mut ticks = 0;
        for (pid, t) in &later.ticks {
            if *pid == me || ours.contains(pid) {
                continue;
            }
            ticks += t.saturating_sub(self.ticks.get(pid).copied().unwrap_or(0));
        }
        Duration::from_millis(ticks * 10)
    }
}

/// utime + stime of every user-space process (kernel threads, which have
/// no command line, are left out: ksoftirqd may be doing the gateway's
/// work).
fn process_ticks() -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces) in parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); utime is field 14, stime 15; flags
        // (field 9) has PF_KTHREAD (0x00200000) for kernel threads.
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if num(6) & 0x0020_0000 != 0 {
            continue;
        }
        out.insert(pid, num(11) + num(12));
    }
    out
}

/// Resident memory of a process in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What the figures were measured on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub date_utc: String,
    pub commit: String,
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub idle_source: String,
    pub vipgate_binary: String,
}

impl Machine {
    pub fn describe(idle_source: &str, vipgate_binary: &str) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or("unknown".into(), |s| s.trim().to_string());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            date_utc: utc_now(),
            commit: git_commit(),
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("unknown".into(), |s| s.trim().to_string()),
            memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            idle_source: idle_source.into(),
            vipgate_binary: vipgate_binary.into(),
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{} · commit {} · {} × {} · kernel {} · {} GiB",
            self.date_utc, self.commit, self.cores, self.cpu_model, self.kernel, self.memory_gib
        )
    }
}

fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(hash) = run(&["rev-parse", "--short=10", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{hash}+dirty")
    } else {
        hash
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    }

    #[test]
    fn busy_is_wall_minus_idle() {
        let t = Instant::now();
        let a = CoreReading {
            at: t,
            idle: Duration::from_millis(100),
            residency: None,
        };
        let b = CoreReading {
            at: t + Duration::from_millis(1000),
            idle: Duration::from_millis(800),
            residency: None,
        };
        assert_eq!(a.busy_until(&b), Duration::from_millis(300));
    }

    #[test]
    fn a_busy_thread_shows_on_its_core() {
        // Pin a spinning thread to the last allowed core and check the
        // core's busy time covers most of the spin.
        let cpus = vipgate_dataplane::io::sys::allowed_cpus();
        let core = *cpus.last().expect("at least one allowed cpu");
        let clock = CoreClock::new(core).expect("core clock");
        let busy = std::thread::spawn(move || {
            vipgate_dataplane::io::sys::pin_current_thread(core).expect("pin");
            let a = clock.read().expect("read");
            let end = Instant::now() + Duration::from_millis(500);
            let mut x = 0u64;
            while Instant::now() < end {
                x = x.wrapping_add(1);
            }
            std::hint::black_box(x);
            let b = clock.read().expect("read");
            a.busy_until(&b)
        })
        .join()
        .expect("join");
        // /proc/stat's unit is 10 ms.
        assert!(busy >= Duration::from_millis(400), "busy {busy:?}");
    }
}
