//! Round trips on ONE qemu-storage-daemon connection at its start and again after a million commands, side by
//! side with raw-socket floors sending 1-digit ids and 7-digit ids (what a counter reaches after a million
//! commands). QEMU reads its monitor a byte at a time, so longer ids cost round trips; the core reuses the
//! smallest free id, so the connection's rate after a million commands stays that of its start.
//!
//! ```sh
//! cargo run --release -p qmp-bench --bin ids -- [ROUND_TRIPS [ROUNDS [COMMANDS]]]   # defaults: 4000 7 1000000
//! ```
//! The million commands go through the same `qmp-blocking` client, 8 in flight. The floors run on a second
//! monitor of the SAME daemon (a monitor serves one client at a time), so whatever the daemon itself does after
//! a million commands shows in the floors as well and can be told apart from what the client does.
//!
//! Two measures per run: commands/s (best of ROUNDS interleaved runs: noise on a shared machine only slows a
//! run down) and the daemon's CPU time per command (the sum of its threads' on-CPU nanoseconds from
//! `/proc/PID/task/*/schedstat`, median of the rounds), which is what the id's bytes cost QEMU and is far less
//! sensitive to other load on the machine than the wall-clock rate.

#[allow(dead_code)] // the floors the roundtrip binary uses as well
mod floor;
#[allow(dead_code)] // the client CPU the roundtrip binary reports
mod measure;

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use qmp_tests::servers::QemuServer;

/// What the daemon spent: the on-CPU nanoseconds of all its threads so far.
fn daemon_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `n` round trips of `query-version` on `qmp`, `window` in flight; the seconds they took.
fn run(qmp: &mut qmp_blocking::Client, n: usize, window: usize) -> f64 {
    let start = Instant::now();
    let mut pending = VecDeque::new();
    for _ in 0..n {
        if pending.len() == window {
            qmp.wait(pending.pop_front().expect("non-empty")).expect("reply");
        }
        pending.push_back(qmp.submit("query-version", ()).expect("submit"));
    }
    for p in pending {
        qmp.wait(p).expect("reply");
    }
    start.elapsed().as_secs_f64()
}

/// The client's and the two floors' figures at one moment of the connection's life.
#[derive(Clone, Copy)]
struct Point {
    /// Best commands/s: client, 1-digit floor, 7-digit floor.
    rate: [f64; 3],
    /// Median daemon CPU microseconds per command, same order.
    qemu_us: [f64; 3],
}

/// Interleaves the client and both floors for `rounds` rounds.
fn measure(qmp: &mut qmp_blocking::Client, pid: u32, floor: &Path, n: usize, rounds: usize, window: usize) -> Point {
    let mut secs = [f64::MAX; 3];
    let mut cpu: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        let runs: [&mut dyn FnMut() -> f64; 3] =
            [&mut || run(qmp, n, window), &mut || floor::std_floor_ids(floor, n, window, 0).secs, &mut || {
                floor::std_floor_ids(floor, n, window, 1_000_000).secs
            }];
        for (i, f) in runs.into_iter().enumerate() {
            let before = daemon_cpu_ns(pid);
            secs[i] = secs[i].min(f());
            // The floors' negotiation is in the count too: two commands in `n`, a fraction of a percent.
            cpu[i].push((daemon_cpu_ns(pid) - before) as f64 / 1e3 / n as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Point { rate: secs.map(|s| n as f64 / s), qemu_us: cpu.each_mut().map(median) }
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, rounds, total) = (arg(1, 4000), arg(2, 7), arg(3, 1_000_000));
    let server = QemuServer::storage_daemon_two_monitors().expect("start qemu-storage-daemon");
    let (pid, floor) = (server.pid(), server.second_monitor_path());
    println!("{n} round trips of query-version per run, {rounds} rounds, {}", server.binary().display());
    let mut qmp = qmp_blocking::Client::connect_unix(server.socket_path(), Default::default()).expect("connect");

    let windows = [1, 8];
    let start: Vec<Point> = windows.iter().map(|&w| measure(&mut qmp, pid, &floor, n, rounds, w)).collect();
    let t = Instant::now();
    let done = start.len() * rounds * n;
    let secs = run(&mut qmp, total.saturating_sub(done), 8);
    println!(
        "{} more commands on the same connection, 8 in flight, in {secs:.0} s ({:.0} s in all)",
        total.saturating_sub(done),
        t.elapsed().as_secs_f64()
    );
    let after: Vec<Point> = windows.iter().map(|&w| measure(&mut qmp, pid, &floor, n, rounds, w)).collect();
    qmp.close();

    println!("\nCommands/s (best of {rounds}) and the daemon's CPU per command (median, us):\n");
    println!("| in flight | when | qmp-blocking | floor, 1-digit ids | floor, 7-digit ids | QEMU us/cmd: qmp-blocking | 1-digit floor | 7-digit floor |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, w) in windows.iter().enumerate() {
        for (when, p) in [("start".to_owned(), start[i]), (format!("after {total}"), after[i])] {
            let ([c, f1, f7], [qc, q1, q7]) = (p.rate, p.qemu_us);
            println!("| {w} | {when} | {c:.0} | {f1:.0} | {f7:.0} | {qc:.1} | {q1:.1} | {q7:.1} |");
        }
    }
    println!("\nAfter {total} commands / at the start (the issue's target: qmp-blocking's rate >= 0.98x):\n");
    println!("| in flight | qmp-blocking rate | 1-digit floor rate (the daemon alone) | qmp-blocking / floor | QEMU us/cmd, qmp-blocking | 7-digit / 1-digit floor rate, after |");
    println!("|---|---|---|---|---|---|");
    for (i, w) in windows.iter().enumerate() {
        let (s, a) = (start[i], after[i]);
        println!(
            "| {w} | {:.3}x | {:.3}x | {:.3}x | {:.3}x | {:.3}x |",
            a.rate[0] / s.rate[0],
            a.rate[1] / s.rate[1],
            (a.rate[0] / a.rate[1]) / (s.rate[0] / s.rate[1]),
            a.qemu_us[0] / s.qemu_us[0],
            a.rate[2] / a.rate[1],
        );
    }
}
