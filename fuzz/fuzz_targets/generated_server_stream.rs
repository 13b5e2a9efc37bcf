//! Server streams from qmp-test-kit's generators (`qmp_test_kit::generate::ServerStream`: a greeting, then
//! replies, events, greetings and malformed messages in every framing) into a QMP client, with commands issued
//! first so that replies route: whole, one byte at a time, and in chunks chosen by the input, draining after
//! each piece. Never a panic, and the same events in all three feedings.
//! (`scripts/fuzz` starts it from an empty corpus: its inputs are generated, not recorded.)
//!
//! Input: `arbitrary`'s encoding of `(commands: u8, chunk_seed: u8, ServerStream)`.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use qmp_fuzz::{chunks, event_key};
use qmp_proto::{Client, Config, ExecuteOptions};
use qmp_test_kit::generate::ServerStream;

fn run(commands: u8, pieces: &[&[u8]], now: Instant) -> Vec<String> {
    let mut client = Client::new(Config::qmp().max_message_size(1024).max_queued_events(1 << 16), now);
    for i in 0..commands % 4 {
        client.execute(&format!("query-{i}"), None::<&()>, ExecuteOptions::new()).expect("a valid command");
    }
    // What the client writes is not compared: a reply that arrives in the same piece as the greeting is
    // read before the client had its turn to write (a real server cannot send it, a generated one can).
    let mut events = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        client.handle_input(piece);
        while let Some(event) = client.poll_event() {
            events.push(event_key(&event));
        }
        client.poll_transmit(&mut out);
    }
    client.handle_eof();
    while let Some(event) = client.poll_event() {
        events.push(event_key(&event));
    }
    events
}

fuzz_target!(|input: (u8, u8, ServerStream)| {
    let (commands, seed, ServerStream(bytes)) = input;
    let now = Instant::now();
    let whole = run(commands, &[&bytes], now);
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(whole, run(commands, &bytewise, now), "byte by byte");
    let chunked: Vec<&[u8]> = chunks(seed, bytes.len()).into_iter().map(|r| &bytes[r]).collect();
    assert_eq!(whole, run(commands, &chunked, now), "chunked");
});
