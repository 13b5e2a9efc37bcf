//! Round trips on ONE qemu-storage-daemon connection at its start and again after a million commands, side by
//! side with raw-socket floors sending 1-digit ids and 7-digit ids (what a counter reaches after a million
//! commands). QEMU reads its monitor a byte at a time, so longer ids cost round trips; the core reuses the
//! smallest free id, so the connection's rate after a million commands stays that of its start.
//!
//! ```sh
//! cargo run --release -p qmp-bench --bin ids -- [ROUND_TRIPS [ROUNDS [COMMANDS]]]   # defaults: 4000 5 1000000
//! ```
//! The million commands go through the same `qmp-blocking` client, 8 in flight. Each measurement interleaves
//! the client and both floors and keeps the best of ROUNDS runs (noise on a shared machine only slows runs).
//! A monitor serves one client at a time, so the floors run on a second daemon of the same binary.

#[allow(dead_code)] // the floors the roundtrip binary uses as well
mod floor;
#[allow(dead_code)] // the client CPU the roundtrip binary reports
mod measure;

use std::collections::VecDeque;
use std::time::Instant;

use qmp_tests::servers::QemuServer;

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

/// Best commands/s of the client, the 1-digit floor and the 7-digit floor, interleaved.
fn measure(qmp: &mut qmp_blocking::Client, path: &std::path::Path, n: usize, rounds: usize, window: usize) -> [f64; 3] {
    let mut best = [f64::MAX; 3];
    for _ in 0..rounds {
        best[1] = best[1].min(floor::std_floor_ids(path, n, window, 0).secs);
        best[0] = best[0].min(run(qmp, n, window));
        best[2] = best[2].min(floor::std_floor_ids(path, n, window, 1_000_000).secs);
    }
    best.map(|secs| n as f64 / secs)
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, rounds, total) = (arg(1, 4000), arg(2, 5), arg(3, 1_000_000));
    // A monitor serves one client at a time: the long-lived connection has its daemon, the floors another.
    let server = QemuServer::storage_daemon().expect("start qemu-storage-daemon");
    let floor_server = QemuServer::storage_daemon().expect("start qemu-storage-daemon");
    let path = floor_server.socket_path().to_owned();
    println!("{n} round trips of query-version per run, best of {rounds} rounds, {}", server.binary().display());
    let mut qmp = qmp_blocking::Client::connect_unix(server.socket_path(), Default::default()).expect("connect");

    let windows = [1, 8];
    let start: Vec<[f64; 3]> = windows.iter().map(|&w| measure(&mut qmp, &path, n, rounds, w)).collect();
    let t = Instant::now();
    let done = start.len() * rounds * n;
    let secs = run(&mut qmp, total.saturating_sub(done), 8);
    println!(
        "{} more commands on the same connection, 8 in flight, in {secs:.0} s ({:.0} s in all)",
        total - done,
        t.elapsed().as_secs_f64()
    );
    let after: Vec<[f64; 3]> = windows.iter().map(|&w| measure(&mut qmp, &path, n, rounds, w)).collect();
    qmp.close();

    println!("\n| in flight | when | qmp-blocking cmds/s | floor, 1-digit ids | floor, 7-digit ids | qmp-blocking / 1-digit floor | 7-digit / 1-digit floor |");
    println!("|---|---|---|---|---|---|---|");
    for (i, w) in windows.iter().enumerate() {
        for (when, [c, f1, f7]) in [("start", start[i]), ("after 1M", after[i])] {
            println!("| {w} | {when} | {c:.0} | {f1:.0} | {f7:.0} | {:.2}x | {:.2}x |", c / f1, f7 / f1);
        }
    }
    println!("\n| in flight | qmp-blocking after 1M / start | 1-digit floor after / start | client ratio to floor, after / start |");
    println!("|---|---|---|---|");
    for (i, w) in windows.iter().enumerate() {
        let (s, a) = (start[i], after[i]);
        println!("| {w} | {:.3}x | {:.3}x | {:.3}x |", a[0] / s[0], a[1] / s[1], (a[0] / a[1]) / (s[0] / s[1]));
    }
}
