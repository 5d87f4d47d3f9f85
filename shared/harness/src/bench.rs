//! What the benchmark examples share: their knobs from the environment and the CPU they use.

use std::time::Duration;

use anyhow::{Context, bail, ensure};

/// The whole number at least 1 in `name`, or `default` when it is unset.
pub fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => {
            let n: usize = v
                .trim()
                .parse()
                .with_context(|| format!("{name}={v:?} is not a whole number"))?;
            ensure!(n > 0, "{name} must be at least 1, got {n}");
            Ok(n)
        }
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => bail!("{name}: {e}"),
    }
}

/// utime + stime of process `pid` (`"self"` for this one), in clock ticks.
pub fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let s = crate::processes::parse_stat(&stat)?;
    Some(s.utime + s.stime)
}

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// utime + stime of this process, in clock ticks.
    process: u64,
    /// Idle + iowait ticks of all CPUs (from /proc/stat). Busy time is derived from idle
    /// time, which a tickless kernel accounts exactly, rather than from the tick-sampled
    /// busy fields, which miss short bursts (a request every millisecond, say).
    host_idle: u64,
    /// Online CPUs.
    cpus: usize,
}

impl CpuSample {
    pub fn now() -> Option<Self> {
        let process = process_ticks("self")?;
        let host = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = host
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let host_idle = cpu.get(3)? + cpu.get(4)?;
        let cpus = host
            .lines()
            .filter(|l| {
                l.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        Some(Self {
            process,
            host_idle,
            cpus,
        })
    }
}

/// Cores used between two samples: (this process, whole machine).
pub fn cores(from: Option<CpuSample>, to: Option<CpuSample>, wall: Duration) -> Option<(f64, f64)> {
    // Linux reports these in USER_HZ, which is 100 on every mainstream architecture.
    const TICKS_PER_SEC: f64 = 100.0;
    match (from, to) {
        (Some(a), Some(b)) if wall > Duration::ZERO => {
            let ticks = wall.as_secs_f64() * TICKS_PER_SEC;
            let idle = b.host_idle.saturating_sub(a.host_idle) as f64 / ticks;
            Some((
                b.process.saturating_sub(a.process) as f64 / ticks,
                (b.cpus as f64 - idle).max(0.0),
            ))
        }
        _ => None,
    }
}

/// Cores used, as "this process / whole machine", between two samples.
pub fn cores_used(from: Option<CpuSample>, to: Option<CpuSample>, wall: Duration) -> String {
    cores(from, to, wall).map_or_else(|| "n/a".to_owned(), |(p, h)| format!("{p:.1} / {h:.1}"))
}
