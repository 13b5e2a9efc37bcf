//! Feeding the server one byte at a time is O(n). The work it does is counted as allocator calls and bytes
//! allocated, by a counting global allocator: deterministic for a given input, unlike a clock. Every shape of
//! input is covered: pipelined commands kept while the server does not read (answered late, answered at once,
//! out of band), one long string, an object with many members, deep nesting, garbage that is an error per
//! byte, bare values, and guest-agent syncs.
//!
//! Each shape is fed at sizes n, 2n and 4n, for a small n (what the server holds stays under 4 KiB) and a
//! larger one. The growth from 2n to 4n over the growth from n to 2n cancels constant costs out: it is 2 for
//! linear work and 4 for quadratic; the test allows 3. Bytes allocated per byte moved (input plus output) must
//! also stay under a small constant, which catches a per-command cost proportional to a buffer rather than to
//! the command (reading held input used to copy up to 4 KiB of it for every command).
//!
//! One test function only: the allocator's counters are global, so nothing else may run in this binary.

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

use qmp_proto::server::{Event, Failure, Server, ServerConfig};
use serde_json::json;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// When the commands handed over are answered.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// After each byte, as soon as they are handed over.
    AtOnce,
    /// Only once all input has been fed: the server stops reading and keeps what it is fed meanwhile.
    Late,
}

/// One shape of input: its name, the server's settings, when commands are answered, and the input for a size.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    config: fn() -> ServerConfig,
    negotiate: Option<&'static str>,
    answer: Answer,
    input: fn(usize) -> Vec<u8>,
}

fn commands(k: usize) -> Vec<u8> {
    (0..k).flat_map(|i| format!(r#"{{"execute": "query-status", "id": {i}}}"#).into_bytes()).collect()
}

fn mixed_oob(k: usize) -> Vec<u8> {
    (0..k)
        .flat_map(|i| {
            let key = if i % 2 == 0 { "exec-oob" } else { "execute" };
            format!(r#"{{"{key}": "x-cmd", "id": {i}}} "#).into_bytes()
        })
        .collect()
}

fn long_string(k: usize) -> Vec<u8> {
    format!(r#"{{"execute": "echo", "arguments": {{"text": "{}"}}}}"#, "abcdefgh\\u00e9".repeat(k)).into_bytes()
}

fn many_members(k: usize) -> Vec<u8> {
    let members: Vec<String> = (0..k).map(|i| format!(r#""key-{i}": {i}"#)).collect();
    format!(r#"{{"execute": "echo", "arguments": {{{}}}}}"#, members.join(", ")).into_bytes()
}

fn deep(k: usize) -> Vec<u8> {
    // Nesting is capped at 1024 (QEMU's limit): values 200 deep, repeated.
    let one = format!("{}{}", "[".repeat(200), "]".repeat(200));
    one.repeat(k / 10).into_bytes()
}

fn garbage(k: usize) -> Vec<u8> {
    (0..k * 4).map(|i| [0x01, b'x', b'}', 0xFF][i % 4]).collect()
}

fn bare_values(k: usize) -> Vec<u8> {
    (0..k).flat_map(|i| format!("{i} \"s{i}\" [true, null] ").into_bytes()).collect()
}

fn guest_syncs(k: usize) -> Vec<u8> {
    (0..k)
        .flat_map(|i| {
            let mut m = vec![0xFF];
            m.extend(format!(r#"{{"execute": "guest-sync-delimited", "arguments": {{"id": {i}}}}}"#).bytes());
            m
        })
        .collect()
}

const NEGOTIATE: &str = r#"{"execute": "qmp_capabilities"}"#;
const NEGOTIATE_OOB: &str = r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#;

fn shapes() -> Vec<Shape> {
    let (qmp, qga) = (ServerConfig::qmp, ServerConfig::guest_agent);
    let (late, now) = (Answer::Late, Answer::AtOnce);
    let shape = |name, config, negotiate, answer, input| Shape { name, config, negotiate, answer, input };
    vec![
        shape("commands answered late", qmp, Some(NEGOTIATE), late, commands),
        shape("commands answered at once", qmp, Some(NEGOTIATE), now, commands),
        shape("oob and in-band, late", qmp, Some(NEGOTIATE_OOB), late, mixed_oob),
        shape("one long string", qmp, Some(NEGOTIATE), now, long_string),
        shape("many members", qmp, Some(NEGOTIATE), now, many_members),
        shape("deep nesting", qmp, None, now, deep),
        shape("garbage", qmp, None, now, garbage),
        shape("bare values", qmp, Some(NEGOTIATE), now, bare_values),
        shape("guest syncs", qga, None, late, guest_syncs),
    ]
}

fn answer_all(server: &mut Server) {
    while let Some(event) = server.poll_event() {
        if let Event::Command(cmd) = event {
            let reply = if cmd.name() == "echo" { Err(Failure::generic("no")) } else { Ok(json!({"ok": true})) };
            server.reply(cmd.token, reply).expect("just handed over");
        }
    }
}

/// What feeding an input one byte at a time cost: allocator calls, bytes allocated, and bytes moved.
#[derive(Debug, Clone, Copy)]
struct Cost {
    calls: usize,
    bytes: usize,
    moved: usize,
}

fn feed_bytewise(shape: &Shape, input: &[u8]) -> Cost {
    let mut out = Vec::new();
    let mut server = Server::new((shape.config)().max_held_input(usize::MAX));
    if let Some(negotiate) = shape.negotiate {
        server.handle_input(negotiate.as_bytes());
        answer_all(&mut server);
    }
    server.poll_transmit(&mut out);
    out.clear();
    let region = Region::new(GLOBAL);
    let mut written = 0;
    for b in input {
        server.handle_input(std::slice::from_ref(b));
        if shape.answer == Answer::AtOnce {
            answer_all(&mut server);
            written += server.poll_transmit(&mut out);
            out.clear();
        }
    }
    answer_all(&mut server);
    written += server.poll_transmit(&mut out);
    let stats = region.change();
    // Everything was read and answered: the server must want input again.
    assert!(server.wants_input(), "{}: not reading after every command was answered", shape.name);
    Cost { calls: stats.allocations + stats.reallocations, bytes: stats.bytes_allocated, moved: input.len() + written }
}

/// How much faster than linear a cost grows: the growth from 2n to 4n over the growth from n to 2n. Constant
/// costs cancel out; linear gives 2, quadratic 4.
fn growth(at_n: usize, at_2n: usize, at_4n: usize) -> f64 {
    (at_4n as f64 - at_2n as f64) / (at_2n as f64 - at_n as f64).max(1.0)
}

#[test]
fn byte_at_a_time_feeding_is_linear() {
    let mut failures = Vec::new();
    for (shape, n) in shapes().into_iter().flat_map(|s| [20, 300].map(|n| (s, n))) {
        let [a, b, c] = [n, 2 * n, 4 * n].map(|size| feed_bytewise(&shape, &(shape.input)(size)));
        let calls = growth(a.calls, b.calls, c.calls);
        let bytes = growth(a.bytes, b.bytes, c.bytes);
        let per_byte = c.bytes as f64 / c.moved as f64;
        eprintln!(
            "{:<26} n={n:<4} {:>6} B moved: {:>6} allocs {:>8} B | 4n: {:>6} B moved: {:>6} allocs {:>8} B \
             | growth {calls:.2} {bytes:.2}, {per_byte:.1} B/B",
            shape.name, a.moved, a.calls, a.bytes, c.moved, c.calls, c.bytes
        );
        if calls > 3.0 || bytes > 3.0 || per_byte > 64.0 {
            failures.push((shape.name, n));
        }
    }
    assert!(failures.is_empty(), "not linear: {failures:?}");
}
