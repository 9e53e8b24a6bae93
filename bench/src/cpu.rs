//! CPU time of a process, read from /proc so the figure is the process's own work whatever
//! else runs on the machine.
//!
//! Two sources: `/proc/PID/stat` utime+stime (whole process, dead threads included, but in
//! 10 ms ticks) and the sum of `/proc/PID/task/*/schedstat` (ns, live threads only). The
//! bench reports schedstat's figure, since one scenario's window holds only tens of ms of
//! relay work, and checks it against stat's.

use std::fs;

use anyhow::{Context, Result};

/// A reading of one process's CPU time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// Sum of on-CPU time of the live threads, ns (schedstat).
    pub sched_ns: u64,
    /// utime + stime, ns (ticks × 10 ms granularity).
    pub stat_ns: u64,
}

impl CpuSample {
    /// CPU used between `earlier` and `self`, ns: the precise figure unless a thread died
    /// in between (then stat's coarser one, which still counts it).
    pub fn since(&self, earlier: &CpuSample) -> u64 {
        let sched = self.sched_ns.saturating_sub(earlier.sched_ns);
        let stat = self.stat_ns.saturating_sub(earlier.stat_ns);
        // stat is rounded to ticks; a sched figure far below it means lost threads.
        if stat > sched + 30_000_000 {
            stat
        } else {
            sched
        }
    }
}

fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Reads process `pid`'s CPU time now.
pub fn sample(pid: u32) -> Result<CpuSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("read /proc stat")?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    let stat_ns = (utime + stime) * 1_000_000_000 / ticks_per_sec();
    let mut sched_ns = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task")).context("read /proc task")? {
        let Ok(t) = t else { continue };
        let Ok(s) = fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        sched_ns += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(CpuSample { sched_ns, stat_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_grows() {
        let pid = std::process::id();
        let a = sample(pid).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let b = sample(pid).unwrap();
        assert!(x > 0);
        assert!(b.since(&a) >= 30_000_000, "{a:?} {b:?}");
    }
}
