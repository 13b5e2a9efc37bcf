//! The core embedded in a custom loop, as `qmp-proto/examples/mio_many.rs` drives it: N qemu-storage-daemon 10
//! monitors (one daemon, N monitor sockets) from ONE thread. Prints resident memory per live connection and
//! client CPU per command and per connection: the reference the adapters are measured against.
//!
//! ```sh
//! cargo run --release -p qmp-bench --bin embedded -- [CONNECTIONS [COMMANDS [ROUNDS]]]   # defaults: 50 2000 3
//! ```
//! Client CPU is the process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`: user + system, as getrusage's
//! RUSAGE_SELF counts it) over the run, divided by the commands; the daemon is another process and not
//! counted. Memory: RSS (`/proc/self/statm`) when every connection has had its first reply, less RSS before
//! connecting, over N. RSS counts 4 KiB pages and the allocator reuses what earlier rounds freed, so it
//! often reads 0 for a few KiB per connection: the precise figure is the live heap (bytes allocated less bytes
//! freed, counted by a `stats_alloc` global allocator) at the same moment, less before connecting, over N. It
//! covers the core, the stream and the loop's own vectors; the kernel's socket buffers are not counted.
//! Best of ROUNDS for CPU and rate, sequential (1 in flight per connection) and 8 in flight.

#[allow(dead_code)] // its `main` and `run`
#[path = "../../qmp-proto/examples/mio_many.rs"]
mod mio_many;

use std::alloc::System;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qmp_tests::servers::{locate, ServerKind};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes on the heap now: allocated less freed, as the instrumented allocator counts them (a reallocation
/// counts its growth as allocated and its shrinking as freed).
fn live_heap() -> isize {
    let s = GLOBAL.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("rss pages");
    pages * 4096
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, commands, rounds) = (arg(1, 50), arg(2, 2000), arg(3, 3));
    let binary = locate(ServerKind::StorageDaemon).expect("qemu-storage-daemon 10");
    let dir = tempfile::tempdir().expect("tempdir");
    let paths: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("m{i}.sock"))).collect();
    let mut cmd = Command::new(&binary);
    for (i, p) in paths.iter().enumerate() {
        cmd.arg("--chardev").arg(format!("socket,path={},server=on,wait=off,id=c{i}", p.display()));
        cmd.arg("--monitor").arg(format!("chardev=c{i}"));
    }
    let mut daemon = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("start qemu-storage-daemon");
    let start = Instant::now();
    while !paths.iter().all(|p| p.exists()) {
        assert!(start.elapsed() < Duration::from_secs(20), "the monitors did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    mio_many::run(&paths[..1], 10, 1).expect("warm-up");
    println!("{n} monitors of one {}, {commands} query-version per connection, best of {rounds}", binary.display());
    println!("\n| in flight per connection | connections | round trips/s (all) | client CPU per command | client CPU per connection | heap per live connection | RSS per live connection |");
    println!("|---|---|---|---|---|---|---|");
    for in_flight in [1, 8] {
        let (mut best_cpu, mut best_rate, mut rss, mut heap) = (f64::MAX, 0f64, 0u64, 0isize);
        for _ in 0..rounds {
            let (before, heap_before) = (rss_bytes(), live_heap());
            let (mut live, mut heap_live) = (0, 0);
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            let report = mio_many::run_with(&paths, commands, in_flight, || {
                live = rss_bytes();
                heap_live = live_heap();
            })
            .expect("run");
            let (cpu, secs) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
            let total: usize = report.replies.iter().sum();
            assert_eq!(total, n * commands);
            best_cpu = best_cpu.min(cpu / total as f64);
            best_rate = best_rate.max(total as f64 / secs);
            // The largest: later rounds reuse memory earlier ones freed.
            rss = rss.max(live.saturating_sub(before) / n as u64);
            heap = heap.max((heap_live - heap_before) / n as isize);
        }
        println!(
            "| {in_flight} | {n} | {best_rate:.0} | {:.2} us | {:.1} ms for {commands} commands | {:.1} KiB | {:.1} KiB |",
            best_cpu * 1e6,
            best_cpu * commands as f64 * 1e3,
            heap as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}
