//! Wall time and client CPU time of one measured loop.
//!
//! CPU is the process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`: user + system of every thread, runtime workers
//! included, as getrusage's RUSAGE_SELF counts it). The qemu-storage-daemon is another process and is not
//! counted, so what is measured is what the client costs. Beside it, the context switches of this process's
//! threads (voluntary and not, from `/proc/self/task/*/status`): a wake-up that crosses threads shows there.

use std::time::Instant;

/// What one run cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Wall seconds.
    pub secs: f64,
    /// CPU seconds of this process.
    pub cpu: f64,
    /// Context switches of this process's threads (of those alive at both ends of the run).
    #[allow(dead_code)] // the roundtrip bench prints them; the others do not (yet)
    pub switches: u64,
}

/// A started measurement.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    wall: Instant,
    cpu: f64,
    switches: u64,
}

impl Meter {
    /// Starts measuring now.
    pub fn start() -> Self {
        let switches = context_switches();
        Meter { wall: Instant::now(), cpu: cpu_seconds(), switches }
    }

    /// What the run cost since [`start`](Self::start).
    pub fn stop(self) -> Cost {
        let (secs, cpu) = (self.wall.elapsed().as_secs_f64(), cpu_seconds() - self.cpu);
        Cost { secs, cpu, switches: context_switches().saturating_sub(self.switches) }
    }
}

/// CPU seconds this process has used.
pub fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Context switches of this process's threads so far (0 where `/proc` does not tell).
pub fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}
