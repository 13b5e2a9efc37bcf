//! Arbitrary client bytes into `qmp_proto::Server` (QMP and guest-agent modes): whole, one byte at a time, and
//! in chunks chosen by the input. Never a panic; one `Closed` at EOF; the same output in all three feedings:
//! - answering every command once all input is in: byte for byte the same output;
//! - answering as soon as events are drained after each piece: the same lines, compared as a multiset
//!   (what goes out of band, replies and exec-oob errors alike, overtakes in-band replies or not depending on
//!   when the caller answered, which depends on where the input was cut: QEMU behaves the same).
//!
//! Input: `[flags, chunk_seed, client bytes...]`. `flags` picks the mode, the message-size limit, the command
//! queue length, whether OOB is negotiated before the bytes, and when commands are answered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_fuzz::chunks;
use qmp_proto::server::{Event, Failure, Server, ServerConfig};
use serde_json::json;

fn config(flags: u8) -> ServerConfig {
    let base = if flags & 1 == 0 { ServerConfig::qmp() } else { ServerConfig::guest_agent() };
    base.max_message_size([64 << 20, 256, 32, 8][usize::from((flags >> 1) & 3)])
        .max_queued_commands(if flags & 8 == 0 { 8 } else { 1 })
        .max_held_input(4096)
}

/// Answers every command handed over: OOB ones with a marker value, in-band ones by name (some fail).
fn answer(server: &mut Server, closed: &mut u32) {
    while let Some(ev) = server.poll_event() {
        match ev {
            Event::Command(c) => {
                let reply = if c.oob {
                    Ok(json!("oob-reply"))
                } else if c.name().len() % 3 == 0 {
                    Err(Failure::generic(format!("no {}", c.name())))
                } else {
                    // The arguments are always a standard JSON object (QEMU's extensions normalised); only
                    // serde_json's nesting limit (128, QEMU's is 1024) may refuse them.
                    let parsed = c.arguments.deserialize::<serde_json::Map<String, serde_json::Value>>();
                    if let Err(e) = &parsed {
                        assert!(e.to_string().contains("recursion limit"), "arguments not JSON: {e}: {}", c.arguments);
                    }
                    Ok(json!({"name": c.name(), "args": c.arguments.map()}))
                };
                server.reply(c.token, reply).expect("the token was just handed over");
            }
            Event::Closed(_) => *closed += 1,
            _ => {}
        }
    }
}

enum Feeding<'a> {
    Whole,
    Bytes,
    Chunks(&'a [std::ops::Range<usize>]),
}

/// Every line of output: in order, or sorted when commands were answered during the feeding.
fn run(flags: u8, input: &[u8], feeding: &Feeding) -> Vec<Vec<u8>> {
    let answer_as_you_go = flags & 0x20 != 0;
    let mut server = Server::new(config(flags));
    let mut closed = 0;
    if flags & 0x10 != 0 {
        server.handle_input(br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#);
        answer(&mut server, &mut closed);
    }
    let mut feed = |server: &mut Server, piece: &[u8]| {
        server.handle_input(piece);
        if answer_as_you_go {
            answer(server, &mut closed);
        }
    };
    match feeding {
        Feeding::Whole => feed(&mut server, input),
        Feeding::Bytes => input.iter().for_each(|b| feed(&mut server, std::slice::from_ref(b))),
        Feeding::Chunks(ranges) => ranges.iter().for_each(|r| feed(&mut server, &input[r.clone()])),
    }
    // Answering lets held input be read, which hands over more commands: `answer` drains those too.
    answer(&mut server, &mut closed);
    assert!(server.wants_input(), "every command answered: the server reads again");
    server.handle_eof();
    answer(&mut server, &mut closed);
    assert_eq!(closed, 1, "exactly one Closed");
    let mut out = Vec::new();
    server.poll_transmit(&mut out);
    let mut lines: Vec<Vec<u8>> = out.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if answer_as_you_go {
        lines.sort();
    }
    lines
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, input @ ..] = data else { return };
    let whole = run(*flags, input, &Feeding::Whole);
    assert_eq!(run(*flags, input, &Feeding::Bytes), whole, "byte by byte");
    let ranges = chunks(*seed, input.len());
    assert_eq!(run(*flags, input, &Feeding::Chunks(&ranges)), whole, "chunks");
});
