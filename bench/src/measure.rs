//! Wall time and client CPU time of one measured loop.
//!
//! CPU is the process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`: user + system of every thread, runtime workers
//! included, as getrusage's RUSAGE_SELF counts it). The qemu-storage-daemon is another process and is not
//! counted, so what is measured is what the client costs.

use std::time::Instant;

/// What one run cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Wall seconds.
    pub secs: f64,
    /// CPU seconds of this process.
    pub cpu: f64,
}

/// A started measurement.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    wall: Instant,
    cpu: f64,
}

impl Meter {
    /// Starts measuring now.
    pub fn start() -> Self {
        Meter { wall: Instant::now(), cpu: cpu_seconds() }
    }

    /// What the run cost since [`start`](Self::start).
    pub fn stop(self) -> Cost {
        Cost { secs: self.wall.elapsed().as_secs_f64(), cpu: cpu_seconds() - self.cpu }
    }
}

/// CPU seconds this process has used.
pub fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}
