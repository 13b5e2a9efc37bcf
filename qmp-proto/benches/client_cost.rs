//! The core's own cost per command, in memory: allocations and CPU nanoseconds for one `execute`, its
//! `poll_transmit`, its reply fed to `handle_input` and the `Reply` event drained, as an adapter drives it,
//! against a floor in the same process and the same turns.
//!
//! ```text
//! cargo bench -p qmp-proto --bench client_cost            # a few seconds
//! ```
//!
//! The reply is the one qemu-storage-daemon 10 sends to `query-version` (CRLF, its id last). Rows: sequential
//! (one command on the wire) and 8 in flight (8 executed, then their 8 replies, each in a read of its own);
//! with a deadline per command (what the adapters give, `now + 30 s`) and without; arguments as `()` through
//! [`Client::execute`] (what `submit(cmd, ())` does) or none through [`Client::execute_raw`].
//!
//! The floor is what any QMP loop must do for the same command: write `{"execute":"query-version","id":N}`
//! into a reused buffer, find the reply's end (CRLF) and read its id. Allocations are counted by a counting
//! global allocator over the whole measured loop, divided by the commands (deterministic). Times are the
//! thread's CPU time: per row, 15 turns of floor and client in alternation, median ns per command of each,
//! and the median of the per-turn differences (client minus floor).

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"v10.0.2\"}, \"capabilities\": [\"oob\"]}}\r\n{\"return\": {}, \"id\": 1}\r\n";

/// `query-version`'s reply with id `id`, as qemu-storage-daemon 10 writes it.
fn reply(id: u64) -> Vec<u8> {
    format!("{{\"return\": {{\"qemu\": {{\"micro\": 2, \"minor\": 0, \"major\": 10}}, \"package\": \"v10.0.2\"}}, \"id\": {id}}}\r\n")
        .into_bytes()
}

fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// How a row drives the client.
#[derive(Clone, Copy)]
struct Row {
    window: usize,
    deadline: bool,
    unit_args: bool,
}

/// A negotiated QMP client.
fn negotiated() -> Client {
    let mut client = Client::new(Config::qmp(), Instant::now());
    client.handle_input(GREETING);
    while client.poll_event().is_some() {}
    let mut out = Vec::new();
    client.poll_transmit(&mut out);
    assert!(client.is_ready());
    client
}

/// Runs `n` commands (a multiple of the window) through `client`; returns the replies seen.
fn client_loop(client: &mut Client, row: Row, n: usize, replies: &[Vec<u8>], out: &mut Vec<u8>) -> usize {
    let mut seen = 0;
    let far = Instant::now() + Duration::from_secs(30);
    for _ in 0..n / row.window {
        for _ in 0..row.window {
            let opts = if row.deadline { ExecuteOptions::new().deadline(far) } else { ExecuteOptions::new() };
            let id = if row.unit_args {
                client.execute("query-version", Some(&()), opts)
            } else {
                client.execute_raw("query-version", None, opts)
            };
            black_box(id.expect("execute"));
            while client.poll_event().is_some() {}
        }
        client.poll_transmit(out);
        black_box(&out);
        out.clear();
        for r in &replies[..row.window] {
            client.handle_input(r);
            while let Some(ev) = client.poll_event() {
                if let ClientEvent::Reply { result: Ok(raw), .. } = ev {
                    black_box(raw);
                    seen += 1;
                }
            }
            black_box(client.poll_timeout());
        }
    }
    seen
}

/// The floor: the bytes written and the reply's end and id found, nothing else.
fn floor_loop(row: Row, n: usize, replies: &[Vec<u8>], out: &mut Vec<u8>) -> usize {
    let mut seen = 0;
    for _ in 0..n / row.window {
        for id in 1..=row.window {
            out.extend_from_slice(b"{\"execute\":\"query-version\",\"id\":");
            out.push(b'0' + id as u8); // one digit, as the core's ids are here
            out.push(b'}');
        }
        black_box(&out);
        out.clear();
        for r in &replies[..row.window] {
            let r = black_box(r.as_slice());
            let end = memchr::memchr(b'\n', r).expect("CRLF") - 1;
            let at = memchr::memrchr(b' ', &r[..end]).expect("id") + 1;
            let id: u64 = std::str::from_utf8(&r[at..end - 1]).ok().and_then(|s| s.parse().ok()).expect("id");
            seen += usize::from(black_box(id) > 0);
        }
    }
    seen
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    const N: usize = 40_000;
    const TURNS: usize = 15;
    // The negotiation reply freed id 1: commands take 1 to 8 (the smallest free ids).
    let replies: Vec<Vec<u8>> = (1..=8).map(reply).collect();
    println!("| row | allocations/cmd | floor ns/cmd | client ns/cmd | client - floor ns/cmd (median of turns) |");
    println!("|---|---|---|---|---|");
    for (window, deadline, unit_args) in
        [(1, true, false), (1, false, false), (1, true, true), (8, true, false), (8, true, true)]
    {
        let row = Row { window, deadline, unit_args };
        let mut client = negotiated();
        let mut out = Vec::new();
        // Warm up (buffers and tables at their working size), then count allocations over one run.
        assert_eq!(client_loop(&mut client, row, N / 10, &replies, &mut out), N / 10);
        let region = Region::new(GLOBAL);
        assert_eq!(client_loop(&mut client, row, N, &replies, &mut out), N);
        let allocs = region.change().allocations as f64 / N as f64;
        let (mut floor, mut core, mut diff) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..TURNS {
            let t = cpu_now();
            assert_eq!(floor_loop(row, N, &replies, &mut out), N);
            let f = (cpu_now() - t).as_nanos() as f64 / N as f64;
            let t = cpu_now();
            assert_eq!(client_loop(&mut client, row, N, &replies, &mut out), N);
            let c = (cpu_now() - t).as_nanos() as f64 / N as f64;
            floor.push(f);
            core.push(c);
            diff.push(c - f);
        }
        let name = format!(
            "x{window}, {}, {}",
            if deadline { "deadline" } else { "no deadline" },
            if unit_args { "execute(())" } else { "execute_raw(None)" }
        );
        println!(
            "| {name} | {allocs:.2} | {:.0} | {:.0} | {:.0} |",
            median(&mut floor),
            median(&mut core),
            median(&mut diff)
        );
    }
}
