//! Round trips on ONE qemu-storage-daemon connection after a million commands, against a fresh connection to
//! the same daemon in the same rounds, side by side with raw-socket floors sending 1-digit ids and 7-digit ids
//! (what a counter reaches after a million commands). QEMU reads its monitor a byte at a time, so longer ids
//! cost round trips; the core reuses the smallest free id, so a connection after a million commands sends the
//! bytes of a fresh one and runs at its rate (issue 12's target: at least 0.98x).
//!
//! ```sh
//! cargo run --release -p qmp-bench --bin ids -- [ROUND_TRIPS [ROUNDS [COMMANDS]]]   # defaults: 500 61 1000000
//! ```
//! Rounds are short (500 round trips, a fifth of a second) and many: the shorter a round, the likelier both
//! sides of it see the same machine, and the more rounds, the steadier their median.
//!
//! First the **aged** connection (monitor 1, `qmp-blocking`) runs COMMANDS commands, 8 in flight. Then, 1 in
//! flight and 8 in flight, ROUNDS paired rounds (see `paired.rs`: each round runs every side once, ROUND_TRIPS
//! round trips of `query-version`, in an order that alternates ABBA) of four sides:
//! - the aged connection;
//! - a **fresh** `qmp-blocking` connection (monitor 2 of the same daemon, connected anew in every round: the
//!   same client at the start of its life; connecting and negotiating are not timed);
//! - the raw floors with 1-digit and 7-digit ids (monitor 2, connected anew in every run).
//!
//! **What the verdict rests on**: the median over the rounds of (aged rate / fresh rate), measured a second
//! apart on the same daemon, not the rate at the connection's start against its rate minutes later (the
//! machine's speed drifts by more than the 2% the target allows in that time), judged by its 95% confidence
//! interval (`paired.rs`): met when all of it is at or above 0.98, NOT met when all of it is below, else
//! undecided. When the wall-clock ratio is undecided (other builds on the machine's 2 cores scatter single
//! rounds widely), the same ratio of the CPU-bound rate decides, commands per second of CPU (QEMU's and this
//! process's, per command), which such load disturbs far less; the output says which one decided. The 7-digit
//! / 1-digit floor ratio, from the same rounds, is the resolution check: what ids that grew would cost, which
//! the interval must exclude for the bench to have shown anything at all. Beside both,
//! the bytes per command and the largest id on the wire show whether the aged connection sends what a fresh
//! one does.
//!
//! Printed beside the rates, to explain them: bytes sent per command and the largest id the client sent
//! (counted on the wire, by a wrapper around the aged and fresh connections' sockets; the floors' come from
//! their format), the daemon's CPU and read system calls per command (see `paired.rs`: QEMU reads a byte per
//! call, so the calls follow the bytes; the CPU is what the bytes cost QEMU, far less disturbed by other load
//! than the rate; the floors' include their negotiation, 2 commands in ROUND_TRIPS) and this process's CPU per
//! command (`measure.rs`).

#[allow(dead_code)] // the floors the roundtrip binary uses as well
mod floor;
#[allow(dead_code)] // the client CPU the roundtrip binary reports
mod measure;
#[allow(dead_code)] // what the proxy bench uses as well
mod paired;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use measure::Meter;
use paired::{Daemon, Spread};
use qmp_tests::servers::QemuServer;

/// A unix socket that counts the bytes written to it and remembers the largest `"id":N` among them.
struct Wire {
    stream: UnixStream,
    written: u64,
    max_id: u64,
    /// The end of the last write, so that an id split between two writes is still read whole.
    tail: Vec<u8>,
}

impl Wire {
    fn connect(path: &Path) -> io::Result<Wire> {
        Ok(Wire { stream: UnixStream::connect(path)?, written: 0, max_id: 0, tail: Vec::new() })
    }

    fn scan(&mut self, bytes: &[u8]) {
        const KEY: &[u8] = br#""id":"#;
        let mut text = std::mem::take(&mut self.tail);
        text.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(found) = text[at..].windows(KEY.len()).position(|w| w == KEY) {
            let digits = &text[at + found + KEY.len()..];
            let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
            if let Some(id) = std::str::from_utf8(&digits[..end]).ok().and_then(|d| d.parse().ok()) {
                self.max_id = self.max_id.max(id);
            }
            at += found + 1;
        }
        self.tail = text[text.len().saturating_sub(KEY.len() + 20)..].to_vec();
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.written += n as u64;
        self.scan(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl qmp_blocking::Transport for Wire {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }
}

type Client = qmp_blocking::Client<Wire>;

fn connect(path: &Path) -> Client {
    Client::from_stream(Wire::connect(path).expect("connect"), Default::default()).expect("negotiate")
}

/// One run of one side: what `n` round trips took and cost.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    /// This process's CPU seconds.
    cpu: f64,
    /// The daemon's CPU microseconds and read calls per command.
    qemu_us: f64,
    qemu_reads: f64,
    /// Bytes written, and the largest id among them.
    bytes: u64,
    max_id: u64,
}

/// `n` round trips of `query-version` on `qmp`, `window` in flight.
fn run(qmp: &mut Client, pid: u32, n: usize, window: usize) -> Sample {
    let (qemu, written) = (Daemon::now(pid), qmp.stream().written);
    let meter = Meter::start();
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
    let cost = meter.stop();
    let (qemu_us, qemu_reads) = Daemon::per_command_since(pid, qemu, n);
    let wire = qmp.stream();
    Sample { secs: cost.secs, cpu: cost.cpu, qemu_us, qemu_reads, bytes: wire.written - written, max_id: wire.max_id }
}

/// The raw floor, `id_base` added to its ids (see `floor.rs`); its bytes and largest id follow from its format.
fn run_floor(path: &Path, pid: u32, n: usize, window: usize, id_base: usize) -> Sample {
    let qemu = Daemon::now(pid);
    let cost = floor::std_floor_ids(path, n, window, id_base);
    let (qemu_us, qemu_reads) = Daemon::per_command_since(pid, qemu, n);
    let command = |id: usize| format!(r#"{{"execute":"query-version","id":{id}}}"#).len() as u64;
    // Ids run id_base+1 ..= id_base+window, in turn.
    let bytes = (0..n).map(|k| command(id_base + k % window + 1)).sum();
    Sample { secs: cost.secs, cpu: cost.cpu, qemu_us, qemu_reads, bytes, max_id: (id_base + window.min(n)) as u64 }
}

const SIDES: [&str; 4] = ["aged connection", "fresh connection", "floor, 1-digit ids", "floor, 7-digit ids"];

/// Per-round figures of every side, and the per-round ratios: aged / fresh and 7-digit / 1-digit floor, of the
/// wall-clock rate and of the CPU-bound rate (commands per second of CPU, QEMU's and this process's).
#[derive(Default)]
struct Table {
    rate: [Spread; 4],
    qemu_us: [Spread; 4],
    qemu_reads: [Spread; 4],
    client_us: [Spread; 4],
    bytes: [f64; 4],
    max_id: [u64; 4],
    aged_vs_fresh: Spread,
    floor7_vs_floor1: Spread,
    aged_vs_fresh_cpu: Spread,
    floor7_vs_floor1_cpu: Spread,
}

fn measure(aged: &mut Client, server: &QemuServer, n: usize, rounds: usize, window: usize) -> Table {
    let (pid, second) = (server.pid(), server.second_monitor_path());
    let mut t = Table::default();
    for round in 0..rounds {
        let mut samples = [None; 4];
        for side in paired::abba(round, SIDES.len()) {
            samples[side] = Some(match side {
                0 => run(aged, pid, n, window),
                1 => {
                    let mut fresh = connect(&second);
                    let s = run(&mut fresh, pid, n, window);
                    fresh.close();
                    s
                }
                2 => run_floor(&second, pid, n, window, 0),
                _ => run_floor(&second, pid, n, window, 1_000_000),
            });
        }
        let s = samples.map(|s| s.expect("every side ran"));
        for (i, s) in s.iter().enumerate() {
            t.rate[i].push(n as f64 / s.secs);
            t.qemu_us[i].push(s.qemu_us);
            t.qemu_reads[i].push(s.qemu_reads);
            t.client_us[i].push(s.cpu * 1e6 / n as f64);
            t.bytes[i] = s.bytes as f64 / n as f64;
            t.max_id[i] = t.max_id[i].max(s.max_id);
        }
        t.aged_vs_fresh.push(s[1].secs / s[0].secs);
        t.floor7_vs_floor1.push(s[2].secs / s[3].secs);
        let cpu = |s: &Sample| s.qemu_us + s.cpu * 1e6 / n as f64;
        t.aged_vs_fresh_cpu.push(cpu(&s[1]) / cpu(&s[0]));
        t.floor7_vs_floor1_cpu.push(cpu(&s[2]) / cpu(&s[3]));
    }
    t
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, rounds, total) = (arg(1, 500), arg(2, 61), arg(3, 1_000_000));
    let ticks = paired::cpu_ticks();
    let server = QemuServer::storage_daemon_two_monitors().expect("start qemu-storage-daemon");
    println!("{}; {}", server.binary().display(), paired::machine(None));
    let mut aged = connect(server.socket_path());

    let started = Instant::now();
    let aging = run(&mut aged, server.pid(), total, 8);
    println!(
        "aged connection: {total} commands, 8 in flight, in {:.0} s ({:.0}/s): {:.1} bytes, {:.1} us of QEMU CPU and \
         {:.1} QEMU read calls per command, largest id sent {}",
        aging.secs,
        total as f64 / aging.secs,
        aging.bytes as f64 / total as f64,
        aging.qemu_us,
        aging.qemu_reads,
        aging.max_id
    );
    println!(
        "{rounds} paired rounds (ABBA) of {n} round trips of query-version per side; per-round median (IQR, all)\n"
    );

    let mut verdicts = Vec::new();
    for window in [1, 8] {
        let t = measure(&mut aged, &server, n, rounds, window);
        println!("{window} in flight:");
        println!(
            "| side | commands/s | QEMU CPU us/command | QEMU read calls/command | client CPU us/command | bytes/command | \
             largest id ever sent |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (i, side) in SIDES.iter().enumerate() {
            println!(
                "| {side} | {} | {} | {:.1} | {} | {:.1} | {} |",
                t.rate[i].show(0),
                t.qemu_us[i].show(1),
                t.qemu_reads[i].median(),
                t.client_us[i].show(1),
                t.bytes[i],
                t.max_id[i]
            );
        }
        println!("per round, aged / fresh:            rate {}", t.aged_vs_fresh.show(3));
        println!("                                    CPU-bound rate {}", t.aged_vs_fresh_cpu.show(3));
        println!("per round, 7-digit / 1-digit floor: rate {}", t.floor7_vs_floor1.show(3));
        println!("                                    CPU-bound rate {}\n", t.floor7_vs_floor1_cpu.show(3));
        let same_wire = t.bytes[0] == t.bytes[1];
        verdicts.push((
            window,
            same_wire,
            [t.aged_vs_fresh, t.aged_vs_fresh_cpu],
            [t.floor7_vs_floor1, t.floor7_vs_floor1_cpu],
        ));
    }
    aged.close();

    println!("Verdict (issue 12: the rate after {total} commands >= 0.98x that of a connection at its start), from");
    println!(
        "the 95% confidence interval of the median per-round ratio aged / fresh: met when all of it is at or above"
    );
    println!("0.98, NOT met when all of it is below, else undecided. Judged on the wall-clock rate; when that is");
    println!(
        "undecided, on the CPU-bound rate (commands per second of QEMU's and this process's CPU, which other load"
    );
    println!("on the machine disturbs far less). Resolution: what 7-digit ids cost the floor in the same rounds.");
    for (window, same_wire, ratios, floors) in verdicts {
        let what = ["wall-clock rate", "CPU-bound rate"];
        for (i, r) in ratios.iter().enumerate() {
            let ((lo, hi), grown) = (r.median_ci95(), floors[i].median());
            println!(
                "  {window} in flight, {:<15} {:.3}x (95% CI {lo:.3}-{hi:.3}): {}; 7-digit ids would give {grown:.3}x: {}",
                what[i],
                r.median(),
                r.judge(0.98),
                if lo > grown { "ruled out" } else { "NOT ruled out" }
            );
        }
        let judged = ratios.iter().position(|r| !r.judge(0.98).starts_with("undecided"));
        let verdict = match judged {
            Some(i) => format!("{} (from the {})", ratios[i].judge(0.98), what[i]),
            None => "undecided at 2% on this machine's noise".to_owned(),
        };
        println!(
            "  {window} in flight: {verdict}; the aged connection sends {} bytes per command as a fresh one does",
            if same_wire { "the same" } else { "NOT the same" }
        );
    }
    println!("({:.0} s in all; {})", started.elapsed().as_secs_f64(), paired::machine(ticks));
}
