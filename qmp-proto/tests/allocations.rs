//! What one command costs the heap, counted by a counting global allocator (deterministic, unlike a clock):
//! once the client's buffers and tables have their working size, a command with a deadline, written, answered
//! by a `query-version` reply of qemu-storage-daemon 10's shape and drained, allocates exactly once (the reply's
//! own buffer, which the `RawJson` handed out owns), sequentially and with 8 in flight, with arguments as `()`
//! or none; a command whose reply is over 1 KiB allocates twice (its buffer and the shared count).
//!
//! One test function only: the allocator's counters are global, so nothing else may run in this binary.

use std::alloc::System;
use std::time::{Duration, Instant};

use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"v10.0.2\"}, \"capabilities\": [\"oob\"]}}\r\n{\"return\": {}, \"id\": 1}\r\n";

fn reply(id: usize, package: &str) -> Vec<u8> {
    format!("{{\"return\": {{\"qemu\": {{\"micro\": 2, \"minor\": 0, \"major\": 10}}, \"package\": \"{package}\"}}, \"id\": {id}}}\r\n")
        .into_bytes()
}

/// Runs `rounds` rounds of `window` commands (executed, written, then answered one read each); returns the
/// replies routed.
fn run(client: &mut Client, window: usize, rounds: usize, unit_args: bool, replies: &[Vec<u8>]) -> usize {
    // The caller's output buffer: swapped with the client's (see `poll_transmit`), so both keep their capacity.
    let (mut out, mut routed) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..rounds {
        for _ in 0..window {
            let opts = ExecuteOptions::new().deadline(deadline);
            let id = if unit_args {
                client.execute("query-version", Some(&()), opts)
            } else {
                client.execute_raw("query-version", None, opts)
            };
            id.expect("execute");
        }
        client.poll_transmit(&mut out);
        out.clear();
        client.poll_transmit(&mut out); // nothing: hands the client its buffer back
        for r in &replies[..window] {
            client.handle_input(r);
            while let Some(ev) = client.poll_event() {
                routed += usize::from(matches!(ev, ClientEvent::Reply { result: Ok(_), .. }));
            }
        }
    }
    routed
}

#[test]
fn a_command_allocates_once_for_its_reply() {
    let mut client = Client::new(Config::qmp(), Instant::now());
    client.handle_input(GREETING);
    while client.poll_event().is_some() {}
    client.poll_transmit(&mut Vec::new());
    assert!(client.is_ready());
    for (package, per_command) in [("v10.0.2", 1), (&"x".repeat(1100)[..], 2)] {
        let replies: Vec<Vec<u8>> = (1..=8).map(|id| reply(id, package)).collect();
        for window in [1, 8] {
            for unit_args in [false, true] {
                // Warm up: buffers and tables grow to their working size.
                assert_eq!(run(&mut client, window, 10, unit_args, &replies), 10 * window);
                let region = Region::new(GLOBAL);
                let rounds = 1000 / window;
                assert_eq!(run(&mut client, window, rounds, unit_args, &replies), rounds * window);
                let stats = region.change();
                let what = format!("{} in flight, () arguments: {unit_args}, reply {} bytes", window, replies[0].len());
                assert_eq!(stats.allocations, per_command * rounds * window, "{what}: {stats:?}");
                assert_eq!(stats.reallocations, 0, "{what}: {stats:?}");
                assert_eq!(stats.bytes_allocated, stats.bytes_deallocated, "{what}: nothing kept: {stats:?}");
            }
        }
    }
}
