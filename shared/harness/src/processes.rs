//! CPU time and memory of the processes on a benchmark's path, read from /proc over a phase:
//! each process's CPU milliseconds per operation and peak RSS, and the table that reports
//! them.
//!
//! A benchmark names the processes once ([`ProcessSet`]: this process, each daprd, Kafka's
//! JVM, the PostgreSQL server), then brackets each phase with [`ProcessSet::start`] and
//! [`PhaseMeter::stop`]. CPU is utime + stime of `/proc/<pid>/stat` at both ends (for a
//! process tree such as PostgreSQL's postmaster and its backends: the root's own and its
//! reaped children's time plus each live child's). Peak RSS is the largest `VmRSS` sampled
//! every [`RSS_EVERY`] during the phase; `VmHWM`, the peak since the process started, is
//! reported beside it. A tree's memory is the sum of `Pss` from `smaps_rollup` (so shared
//! memory is not counted once per backend), read at the phase's two ends only, outside its
//! clock: reading `smaps_rollup` walks the process's page tables under its memory map lock,
//! and doing that to every PostgreSQL backend five times a second stalled the server's
//! commits by several milliseconds (CreateTask p99 at 1,000/s: 4.5-6.4 ms sampled, 2.9-3.7
//! ms not; docs/benchmarks.md). The sampling thread's own CPU is taken off this process's.

use std::{
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// Linux's USER_HZ: /proc reports CPU times in these ticks (100 on every mainstream
/// architecture).
const TICKS_PER_SEC: f64 = 100.0;

/// How often RSS is sampled while a phase runs.
pub const RSS_EVERY: Duration = Duration::from_millis(200);

/// What the table under [`usage_table`] says about how the figures were read.
pub const USAGE_NOTE: &str = "CPU = utime + stime of /proc/<pid>/stat over the phase (10 ms \
     ticks), divided by the phase's operations; PostgreSQL = the postmaster, its live children \
     and its reaped children (the whole server, whoever else uses it); peak RSS = largest \
     VmRSS sampled every 200 ms during the phase (PostgreSQL: Σ Pss over its processes, the \
     larger of the phase's start and end: sampling it while it serves stalls it); \
     this process's CPU excludes the sampling thread's.";

/// The fields of `/proc/<pid>/stat` a meter needs, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    /// CPU of children that exited and were waited for.
    pub cutime: u64,
    pub cstime: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let f: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state (3), ppid (4), ..., utime (14), stime (15), cutime (16), cstime (17).
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// The value in kB of line `field` (e.g. `"VmRSS:"`) of `/proc/<pid>/status` or
/// `/proc/<pid>/smaps_rollup`.
pub fn parse_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The pids of `/proc/<pid>/task/<tid>/children` (space-separated).
pub fn parse_children(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn read(path: String) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn stat_of(pid: u32) -> Option<Stat> {
    parse_stat(&read(format!("/proc/{pid}/stat"))?)
}

/// The children of `pid` (those of its main thread: a PostgreSQL postmaster forks from it).
fn children_of(pid: u32) -> Vec<u32> {
    read(format!("/proc/{pid}/task/{pid}/children"))
        .map(|t| parse_children(&t))
        .unwrap_or_default()
}

/// CPU ticks of `pid` alone, or of it and its children, reaped ones included.
fn ticks(pid: u32, tree: bool) -> Option<u64> {
    let s = stat_of(pid)?;
    if !tree {
        return Some(s.utime + s.stime);
    }
    let children: u64 = children_of(pid)
        .into_iter()
        .filter_map(stat_of)
        .map(|c| c.utime + c.stime + c.cutime + c.cstime)
        .sum();
    Some(s.utime + s.stime + s.cutime + s.cstime + children)
}

/// Resident memory in kB now: `VmRSS` of `pid`, or the sum of `Pss` over it and its children.
fn rss_kib(pid: u32, tree: bool) -> Option<u64> {
    if !tree {
        return parse_kib(&read(format!("/proc/{pid}/status"))?, "VmRSS:");
    }
    let root = parse_kib(&read(format!("/proc/{pid}/smaps_rollup"))?, "Pss:")?;
    let children: u64 = children_of(pid)
        .into_iter()
        .filter_map(|c| parse_kib(&read(format!("/proc/{c}/smaps_rollup"))?, "Pss:"))
        .sum();
    Some(root + children)
}

/// The memory (kB) of each watched tree now (`None` for the other processes): see the
/// module docs for why trees are not sampled during a phase.
fn tree_rss(watched: &[Watched]) -> Vec<Option<u64>> {
    watched
        .iter()
        .map(|w| w.pid.filter(|_| w.tree).and_then(|p| rss_kib(p, true)))
        .collect()
}

/// CPU ticks of the calling thread.
fn thread_ticks() -> Option<u64> {
    let s = parse_stat(&read("/proc/thread-self/stat".to_owned())?)?;
    Some(s.utime + s.stime)
}

#[derive(Debug, Clone)]
struct Watched {
    name: String,
    pid: Option<u32>,
    /// The process and its children (a PostgreSQL server).
    tree: bool,
    /// This process: the sampling thread's CPU is taken off it.
    this: bool,
}

/// The processes on a benchmark's path, each under the name its report gives it.
#[derive(Debug, Clone, Default)]
pub struct ProcessSet {
    watched: Vec<Watched>,
}

impl ProcessSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// This process (the load generator and the services built in it).
    pub fn this_process(mut self, name: impl Into<String>) -> Self {
        self.watched.push(Watched {
            name: name.into(),
            pid: Some(std::process::id()),
            tree: false,
            this: true,
        });
        self
    }

    /// Process `pid`; `None` (not found) is reported as n/a.
    pub fn process(mut self, name: impl Into<String>, pid: Option<u32>) -> Self {
        self.watched.push(Watched {
            name: name.into(),
            pid,
            tree: false,
            this: false,
        });
        self
    }

    /// Process `pid` and its children, those that exit during the phase included (a
    /// PostgreSQL server: the postmaster and its backends).
    pub fn process_tree(mut self, name: impl Into<String>, pid: Option<u32>) -> Self {
        self.watched.push(Watched {
            name: name.into(),
            pid,
            tree: true,
            this: false,
        });
        self
    }

    /// The names and pids, for a report's header.
    pub fn describe(&self) -> String {
        self.watched
            .iter()
            .map(|w| match w.pid {
                Some(pid) => format!("{} (pid {pid})", w.name),
                None => format!("{} (not found)", w.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Starts measuring a phase: reads each process's CPU and each tree's memory, and starts
    /// sampling the other processes' RSS.
    pub fn start(&self) -> PhaseMeter {
        let watched = self.watched.clone();
        let trees_at_start = tree_rss(&watched);
        let before = watched
            .iter()
            .map(|w| w.pid.and_then(|p| ticks(p, w.tree)))
            .collect();
        let (stop, stopped) = mpsc::channel::<()>();
        let sampled = watched.clone();
        let sampler = thread::Builder::new()
            .name("rss-sampler".to_owned())
            .spawn(move || {
                let mut peaks: Vec<Option<u64>> = vec![None; sampled.len()];
                loop {
                    for (peak, w) in peaks.iter_mut().zip(&sampled) {
                        if w.tree {
                            continue;
                        }
                        if let Some(kib) = w.pid.and_then(|p| rss_kib(p, w.tree)) {
                            *peak = Some(peak.map_or(kib, |p| p.max(kib)));
                        }
                    }
                    if !matches!(
                        stopped.recv_timeout(RSS_EVERY),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    ) {
                        return Sampled {
                            peaks,
                            own_ticks: thread_ticks(),
                        };
                    }
                }
            })
            .ok();
        PhaseMeter {
            watched,
            trees_at_start,
            before,
            started: Instant::now(),
            stop,
            sampler,
        }
    }
}

/// A phase being measured; [`PhaseMeter::stop`] ends it.
#[derive(Debug)]
pub struct PhaseMeter {
    watched: Vec<Watched>,
    /// Each tree's memory (kB) when the phase started (`None` for the other processes).
    trees_at_start: Vec<Option<u64>>,
    before: Vec<Option<u64>>,
    started: Instant,
    stop: mpsc::Sender<()>,
    sampler: Option<JoinHandle<Sampled>>,
}

/// What the RSS sampling thread saw: each process's peak (kB), and its own CPU ticks.
#[derive(Debug)]
struct Sampled {
    peaks: Vec<Option<u64>>,
    own_ticks: Option<u64>,
}

impl PhaseMeter {
    /// How long the phase has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the phase: each process's CPU since [`ProcessSet::start`] and its peak RSS.
    pub fn stop(self) -> PhaseUsage {
        let wall = self.started.elapsed();
        let after: Vec<Option<u64>> = self
            .watched
            .iter()
            .map(|w| w.pid.and_then(|p| ticks(p, w.tree)))
            .collect();
        let _ = self.stop.send(());
        let Sampled {
            mut peaks,
            own_ticks: sampler_ticks,
        } = self
            .sampler
            .and_then(|s| s.join().ok())
            .unwrap_or_else(|| Sampled {
                peaks: vec![None; self.watched.len()],
                own_ticks: None,
            });
        // The trees, read now that the phase's clock and CPU readings are taken.
        for ((peak, start), end) in peaks
            .iter_mut()
            .zip(&self.trees_at_start)
            .zip(tree_rss(&self.watched))
        {
            if start.is_some() || end.is_some() {
                *peak = (*start).max(end);
            }
        }
        let processes = self
            .watched
            .iter()
            .zip(self.before.iter().zip(&after))
            .zip(peaks)
            .map(|((w, (a, b)), peak)| {
                let mut spent = a.zip(*b).map(|(a, b)| b.saturating_sub(a));
                if w.this {
                    spent = spent.map(|t| t.saturating_sub(sampler_ticks.unwrap_or(0)));
                }
                ProcessUsage {
                    name: w.name.clone(),
                    cpu_ms: spent.map(|t| t as f64 * 1000.0 / TICKS_PER_SEC),
                    peak_rss_kib: peak,
                    // The kernel updates VmHWM lazily: it can trail a sampled VmRSS a little.
                    hwm_kib: match (w.pid, w.tree) {
                        (Some(pid), false) => read(format!("/proc/{pid}/status"))
                            .and_then(|s| parse_kib(&s, "VmHWM:"))
                            .map(|h| h.max(peak.unwrap_or(0))),
                        _ => None,
                    },
                }
            })
            .collect();
        PhaseUsage { wall, processes }
    }
}

/// One process over one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessUsage {
    pub name: String,
    /// CPU milliseconds over the phase (`None`: the process was not found or exited).
    pub cpu_ms: Option<f64>,
    /// The largest resident set sampled during the phase, kB.
    pub peak_rss_kib: Option<u64>,
    /// `VmHWM` at the phase's end: the peak since the process started, kB (not for trees).
    pub hwm_kib: Option<u64>,
}

/// What the processes of a [`ProcessSet`] used over one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseUsage {
    pub wall: Duration,
    pub processes: Vec<ProcessUsage>,
}

impl PhaseUsage {
    /// CPU milliseconds of process `name` per operation, of `ops` operations.
    pub fn ms_per(&self, name: &str, ops: u64) -> Option<f64> {
        let p = self.processes.iter().find(|p| p.name == name)?;
        per(p.cpu_ms?, ops)
    }

    /// CPU milliseconds of every process found, together.
    pub fn total_ms(&self) -> f64 {
        self.processes.iter().filter_map(|p| p.cpu_ms).sum()
    }

    /// "name a ms/op, …, total t ms/op": one line for a log or a report's bullet.
    pub fn summary(&self, ops: u64, unit: &str) -> String {
        let mut parts: Vec<String> = self
            .processes
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.name,
                    p.cpu_ms
                        .and_then(|ms| per(ms, ops))
                        .map_or("n/a".to_owned(), fmt_ms)
                )
            })
            .collect();
        parts.push(format!(
            "total {}",
            per(self.total_ms(), ops).map_or("n/a".to_owned(), fmt_ms)
        ));
        format!("CPU ms/{unit}: {}", parts.join(", "))
    }
}

fn per(ms: f64, ops: u64) -> Option<f64> {
    (ops > 0).then(|| ms / ops as f64)
}

/// Milliseconds with three significant digits or so: 0.0123, 0.123, 1.23, 12.3, 123.
pub fn fmt_ms(ms: f64) -> String {
    let a = ms.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a < 0.1 {
        format!("{ms:.4}")
    } else if a < 1.0 {
        format!("{ms:.3}")
    } else if a < 10.0 {
        format!("{ms:.2}")
    } else if a < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("–".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// One row of a [`usage_table`]: a phase, how many operations it did, what it used.
#[derive(Debug, Clone, Copy)]
pub struct UsageRow<'a> {
    pub phase: &'a str,
    pub ops: u64,
    pub usage: &'a PhaseUsage,
}

/// A Markdown table, one row per phase: CPU ms per `unit` of each process and of all of
/// them, the cores they used together, then each process's peak RSS in the phase (and
/// `VmHWM`, its peak since start, after a slash) in MiB. Columns are the processes of all
/// rows, in order of first appearance.
pub fn usage_table(unit: &str, rows: &[UsageRow<'_>]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        for p in &r.usage.processes {
            if !names.contains(&p.name.as_str()) {
                names.push(&p.name);
            }
        }
    }
    let mut out = format!("| phase | {unit}s | s |");
    for n in &names {
        out += &format!(" {n} ms/{unit} |");
    }
    out += &format!(" total ms/{unit} | cores |");
    for n in &names {
        out += &format!(" {n} RSS MiB |");
    }
    out += "\n|---|---:|---:|";
    out += &"---:|".repeat(2 * names.len() + 2);
    out += "\n";
    for r in rows {
        let find = |n: &str| r.usage.processes.iter().find(|p| p.name == n);
        let wall = r.usage.wall.as_secs_f64();
        out += &format!("| {} | {} | {wall:.1} |", r.phase, r.ops);
        for n in &names {
            let cell = match find(n) {
                None => "–".to_owned(),
                Some(p) => p
                    .cpu_ms
                    .and_then(|ms| per(ms, r.ops))
                    .map_or("n/a".to_owned(), fmt_ms),
            };
            out += &format!(" {cell} |");
        }
        let total = per(r.usage.total_ms(), r.ops).map_or("n/a".to_owned(), fmt_ms);
        let cores = if wall > 0.0 {
            format!("{:.2}", r.usage.total_ms() / 1000.0 / wall)
        } else {
            "n/a".to_owned()
        };
        out += &format!(" {total} | {cores} |");
        for n in &names {
            let cell = match find(n) {
                Some(p) if p.hwm_kib.is_some() => {
                    format!("{} / {}", mib(p.peak_rss_kib), mib(p.hwm_kib))
                }
                Some(p) => mib(p.peak_rss_kib),
                None => "–".to_owned(),
            };
            out += &format!(" {cell} |");
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line of a Go binary, with its name made awkward: spaces and parentheses.
    const STAT: &str = "4242 (dap rd) (x)) S 17 4242 17 0 -1 4194560 51234 0 12 0 \
                        1234 567 89 10 20 0 25 0 123456 1890000000 30000 18446744073709551615 \
                        1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                ppid: 17,
                utime: 1234,
                stime: 567,
                cutime: 89,
                cstime: 10,
            })
        );
    }

    #[test]
    fn a_truncated_or_garbled_stat_is_none() {
        assert_eq!(parse_stat("4242 (daprd) S 17 4242"), None);
        assert_eq!(parse_stat("no parenthesis at all"), None);
        assert_eq!(
            parse_stat(&STAT.replace(" 1234 567 ", " x 567 ")),
            None,
            "utime not a number"
        );
    }

    #[test]
    fn status_and_smaps_values_in_kib() {
        let status =
            "Name:\tdaprd\nVmPeak:\t 2000000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   70000 kB\n";
        assert_eq!(parse_kib(status, "VmRSS:"), Some(70_000));
        assert_eq!(parse_kib(status, "VmHWM:"), Some(81_234));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:   12000 kB\nPss:    4321 kB\nPss_Anon: 100 kB\n";
        assert_eq!(parse_kib(rollup, "Pss:"), Some(4321));
    }

    #[test]
    fn children_list() {
        assert_eq!(
            parse_children("21180 21181 21189 "),
            vec![21180, 21181, 21189]
        );
        assert!(parse_children("").is_empty());
    }

    #[test]
    fn this_process_is_measured_over_a_phase() {
        let set = ProcessSet::new().this_process("me").process("gone", None);
        let meter = set.start();
        // Burn a little CPU so the phase sees some.
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(150);
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let usage = meter.stop();
        let me = &usage.processes[0];
        assert!(me.cpu_ms.is_some_and(|ms| ms > 0.0), "{usage:?}");
        assert!(me.peak_rss_kib.is_some_and(|k| k > 0), "{usage:?}");
        assert!(me.hwm_kib >= me.peak_rss_kib, "{usage:?}");
        assert_eq!(usage.processes[1].cpu_ms, None);
        assert_eq!(usage.ms_per("gone", 10), None);
    }

    fn process(
        name: &str,
        cpu_ms: Option<f64>,
        peak: Option<u64>,
        hwm: Option<u64>,
    ) -> ProcessUsage {
        ProcessUsage {
            name: name.to_owned(),
            cpu_ms,
            peak_rss_kib: peak,
            hwm_kib: hwm,
        }
    }

    fn usage(processes: Vec<ProcessUsage>) -> PhaseUsage {
        PhaseUsage {
            wall: Duration::from_secs(2),
            processes,
        }
    }

    #[test]
    fn per_operation_figures_and_the_table() {
        let a = usage(vec![
            process("bench", Some(500.0), Some(102_400), Some(204_800)),
            process("daprd", Some(300.0), Some(51_200), None),
        ]);
        let b = usage(vec![
            process("bench", Some(1000.0), Some(10_240), Some(20_480)),
            process("Kafka", None, None, None),
        ]);
        assert_eq!(a.ms_per("daprd", 1000), Some(0.3));
        assert_eq!(a.ms_per("daprd", 0), None);
        assert_eq!(a.total_ms(), 800.0);
        assert_eq!(
            a.summary(1000, "event"),
            "CPU ms/event: bench 0.500, daprd 0.300, total 0.800"
        );
        let table = usage_table(
            "event",
            &[
                UsageRow {
                    phase: "pipe",
                    ops: 1000,
                    usage: &a,
                },
                UsageRow {
                    phase: "load",
                    ops: 100,
                    usage: &b,
                },
            ],
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| phase | events | s | bench ms/event | daprd ms/event | Kafka ms/event | total ms/event | cores | bench RSS MiB | daprd RSS MiB | Kafka RSS MiB |"
        );
        assert_eq!(
            lines[1],
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        assert_eq!(
            lines[2],
            "| pipe | 1000 | 2.0 | 0.500 | 0.300 | – | 0.800 | 0.40 | 100 / 200 | 50 | – |"
        );
        assert_eq!(
            lines[3],
            "| load | 100 | 2.0 | 10.0 | – | n/a | 10.0 | 0.50 | 10 / 20 | – | – |"
        );
    }

    #[test]
    fn milliseconds_keep_about_three_digits() {
        assert_eq!(fmt_ms(0.0), "0");
        assert_eq!(fmt_ms(0.01234), "0.0123");
        assert_eq!(fmt_ms(0.1234), "0.123");
        assert_eq!(fmt_ms(1.234), "1.23");
        assert_eq!(fmt_ms(12.34), "12.3");
        assert_eq!(fmt_ms(1234.0), "1234");
    }
}
