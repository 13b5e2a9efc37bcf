//! Property tests on qmp-test-kit's generated messages (its `strategies`, the generators users get too): the
//! core's client and server, fed a generated stream whole, one byte at a time, and in generated chunks, see
//! the same events and write the same bytes (the client: the same events, and what it writes differs only in
//! how far it got: a stream that closes the client in the chunk that greeted it leaves no time to write
//! `qmp_capabilities`, so one feeding's bytes are a prefix of another's).

use std::time::Instant;

use proptest::prelude::*;
use qmp_proto::server::{Event, Server, ServerConfig};
use qmp_proto::{Client, Config};
use qmp_test_kit::{generate, strategies};
use serde_json::json;

/// Everything a client reports and writes for `chunks` of server bytes, draining after each.
fn client_outcome(chunks: &[&[u8]], now: Instant) -> (Vec<String>, Vec<u8>) {
    let mut client = Client::new(Config::qmp().max_message_size(1024), now);
    let (mut events, mut out) = (Vec::new(), Vec::new());
    for chunk in chunks {
        client.handle_input(chunk);
        while let Some(event) = client.poll_event() {
            events.push(format!("{event:?}"));
        }
        client.poll_transmit(&mut out);
    }
    client.handle_eof();
    while let Some(event) = client.poll_event() {
        events.push(format!("{event:?}"));
    }
    (events, out)
}

/// Everything a server hands over and writes for `chunks` of client bytes, answering each command at once.
fn server_outcome(chunks: &[&[u8]]) -> (Vec<String>, Vec<u8>) {
    let mut server = Server::new(ServerConfig::qmp().max_message_size(1024));
    let (mut events, mut out) = (Vec::new(), Vec::new());
    for chunk in chunks {
        server.handle_input(chunk);
        while let Some(event) = server.poll_event() {
            if let Event::Command(command) = &event {
                server.reply(command.token, Ok(json!({"name": command.name()}))).unwrap();
            }
            events.push(format!("{event:?}"));
        }
        server.poll_transmit(&mut out);
    }
    // The greeting is there before any input: a feeding of no chunks must write it too.
    server.poll_transmit(&mut out);
    (events, out)
}

fn feedings(bytes: &[u8], points: &[usize]) -> [Vec<Vec<u8>>; 3] {
    [
        vec![bytes.to_vec()],
        bytes.iter().map(|&b| vec![b]).collect(),
        generate::chunks(bytes, points).into_iter().map(<[u8]>::to_vec).collect(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn client_sees_the_same_whatever_the_chunks((bytes, points) in strategies::chunked(strategies::server_stream(2048))) {
        let now = Instant::now();
        let [whole, bytewise, chunked] = feedings(&bytes, &points).map(|f| {
            let chunks: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
            client_outcome(&chunks, now)
        });
        prop_assert!(!whole.0.is_empty());
        prop_assert_eq!(&whole.0, &bytewise.0);
        prop_assert_eq!(&whole.0, &chunked.0);
        for other in [&bytewise.1, &chunked.1] {
            let (short, long) = if whole.1.len() <= other.len() { (&whole.1, other) } else { (other, &whole.1) };
            prop_assert!(long.starts_with(short), "writes differ beyond how far each feeding got");
        }
    }

    #[test]
    fn server_answers_the_same_whatever_the_chunks((bytes, points) in strategies::chunked(strategies::client_stream(2048))) {
        let [whole, bytewise, chunked] = feedings(&bytes, &points).map(|f| {
            let chunks: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
            server_outcome(&chunks)
        });
        prop_assert_eq!(&whole, &bytewise);
        prop_assert_eq!(&whole, &chunked);
    }

    #[test]
    fn generated_valid_messages_are_what_they_claim(
        command in strategies::command(),
        reply in strategies::reply(),
        event in strategies::event(),
        greeting in strategies::greeting(),
    ) {
        prop_assert!(command.get("execute").or(command.get("exec-oob")).is_some_and(|n| n.is_string()));
        prop_assert!(reply.get("return").is_some() != reply.get("error").is_some());
        prop_assert!(event["event"].is_string() && event["timestamp"]["seconds"].is_i64());
        prop_assert!(greeting["QMP"]["capabilities"].is_array());
    }

    #[test]
    fn the_server_answers_malformed_input_in_whole_lines(bad in strategies::malformed(1024)) {
        // QEMU writes one JSON object per CRLF-ended line, whatever it was sent; so does the server.
        let (_, out) = server_outcome(&[b"{\"execute\": \"qmp_capabilities\"}", &bad, b"\n"]);
        prop_assert!(out.ends_with(b"\r\n"));
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        prop_assert!(lines.len() >= 2, "greeting and negotiation at least");
        for line in lines {
            prop_assert!(line.starts_with(b"{") && line.ends_with(b"}\r"), "{}", String::from_utf8_lossy(line));
        }
    }
}
