//! Encoding and decoding round trips, with arbitrary JSON:
//! - commands: `encode_arguments` + `encode_command` (and `Client::execute` / `execute_raw`, which must write the
//!   same bytes) parse back with serde_json to the same command name, arguments and id;
//! - replies, errors, events and echoed ids built around arbitrary JSON text and fed to a client in chunks give
//!   back exactly that text as the payload, byte for byte.
//!
//! Input: `[flags, chunk_seed, material...]`. When the material is one JSON value it is used as it is (seeds
//! are the commands and messages of the recorded transcripts); otherwise a value is built from the bytes.
#![no_main]

use std::time::Instant;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use qmp_fuzz::{chunks, parse_commands};
use qmp_proto::encode::{encode_arguments, encode_command};
use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions, ProtocolViolation, RawJson, UsageError};
use serde_json::{json, Map, Value};

/// Deeper than serde_json's default recursion limit (128), as deep as QEMU's parser allows.
const MAX_DEPTH: u32 = 1024;

/// Parses without the default recursion limit.
fn parse(bytes: &[u8]) -> Value {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v =
        serde::Deserialize::deserialize(&mut de).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)));
    de.end().expect("one value");
    v
}

fn try_parse(bytes: &[u8]) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = serde::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok().map(|()| v)
}

fn value(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Value> {
    let top = if depth >= MAX_DEPTH { 5 } else { 7 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(u.arbitrary()?),
        6 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array((0..n).map(|_| value(u, depth + 1)).collect::<Result<_, _>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=3)?;
            let mut map = Map::new();
            for _ in 0..n {
                map.insert(u.arbitrary()?, value(u, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks one command's encoding, by the encoder and through a client.
fn command(name: &str, args: &Value, args_text: &str, id: u64, oob: bool) {
    let encoded = encode_arguments(args);
    match args {
        Value::Null => assert!(matches!(encoded, Ok(None))),
        Value::Object(m) if m.is_empty() => assert!(matches!(encoded, Ok(None))),
        Value::Object(_) => {}
        _ => assert!(matches!(encoded, Err(UsageError::InvalidArguments(_))), "non-object arguments accepted"),
    }
    let Ok(encoded) = encoded else { return };
    let mut wire = Vec::new();
    encode_command(&mut wire, name, encoded.as_deref(), id, oob);
    let cmd = parse(&wire);
    let obj = cmd.as_object().expect("a command is an object");
    assert_eq!(obj.get(if oob { "exec-oob" } else { "execute" }), Some(&Value::String(name.into())));
    assert_eq!(obj.get("id").and_then(Value::as_u64), Some(id), "id");
    let written_args = obj.get("arguments").cloned().unwrap_or(json!({}));
    let expected_args = if args.is_null() { json!({}) } else { args.clone() };
    assert_eq!(written_args, expected_args, "arguments");
    assert_eq!(obj.len(), 2 + usize::from(obj.contains_key("arguments")));

    // A client writes the same bytes (a guest-agent client is ready at once; its first id is 1).
    let mut client = Client::new(Config::guest_agent(), Instant::now());
    let by_value = client.execute(name, Some(args), ExecuteOptions::new());
    // The same arguments as text: whatever spacing, they must arrive as the same object.
    let raw = RawJson::from_json(args_text).expect("valid JSON");
    let by_raw = client.execute_raw(name, Some(&raw), ExecuteOptions::new());
    let mut out = Vec::new();
    client.poll_transmit(&mut out);
    if name.is_empty() {
        assert!(matches!(by_value, Err(UsageError::EmptyCommand)));
        assert!(out.is_empty());
        return;
    }
    assert_eq!(by_value.expect("execute").as_u64(), 1);
    let mut expected = Vec::new();
    encode_command(&mut expected, name, encoded.as_deref(), 1, false);
    assert!(out.starts_with(&expected), "execute wrote other bytes than encode_command");
    let cmds = parse_commands(&out, true);
    if args.is_object() {
        assert_eq!(by_raw.expect("execute_raw of an object").as_u64(), 2);
        let raw_cmd = parse(&out[expected.len()..]);
        assert_eq!(raw_cmd.get("arguments").cloned().unwrap_or(json!({})), expected_args, "execute_raw arguments");
        assert_eq!(cmds.len(), 2);
    } else {
        assert!(matches!(by_raw, Err(UsageError::InvalidArguments(_))), "execute_raw of a non-object");
        assert_eq!(cmds.len(), 1);
    }
}

/// Feeds replies, an error, an event and an echoed id, all carrying `text`, to a client in chunks.
fn replies(text: &str, seed: u8, crlf: bool) {
    let value = parse(text.as_bytes());
    let mut client = Client::new(Config::guest_agent(), Instant::now());
    for _ in 0..3 {
        client.execute("x", None::<&()>, ExecuteOptions::new()).expect("execute");
    }
    let class = value.as_str().unwrap_or("GenericError");
    let desc = format!("desc {text}");
    let class_json = serde_json::to_string(class).expect("string");
    let desc_json = serde_json::to_string(&desc).expect("string");
    let nl = if crlf { "\r\n" } else { "\n" };
    let stream = format!(
        "{{\"return\": {text}, \"id\": 1}}{nl}\
         {{\"id\":2,\"error\":{{\"class\":{class_json},\"desc\":{desc_json},\"data\":{text}}}}}{nl}\
         {{\"event\": \"E\", \"data\": {text}, \"timestamp\": {{\"seconds\": -1, \"microseconds\": -1}}}}{nl}\
         {{\"id\": {text}, \"return\": {text}}}{nl}\
         {{\n    \"id\": 3,\n    \"return\": {text}\n}}{nl}"
    );
    let bytes = stream.as_bytes();
    for cut in chunks(seed, bytes.len()) {
        client.handle_input(&bytes[cut]);
    }
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    let ok = |ev: &ClientEvent, want: u64| match ev {
        ClientEvent::Reply { id, result: Ok(v) } if id.as_u64() == want => assert_eq!(v.raw_str(), text, "payload"),
        other => panic!("expected the reply to {want}, got {other:?}"),
    };
    assert!(matches!(events[0], ClientEvent::Ready { .. }), "{:?}", events[0]);
    ok(&events[1], 1);
    match &events[2] {
        ClientEvent::Reply { id, result: Err(e) } if id.as_u64() == 2 => {
            assert_eq!((e.class.as_str(), e.desc.as_str()), (class, desc.as_str()));
            assert_eq!(parse(e.raw.as_bytes())["data"], value);
        }
        other => panic!("expected the error to 2, got {other:?}"),
    }
    match &events[3] {
        ClientEvent::Event(e) => {
            assert_eq!(e.name, "E");
            assert_eq!(e.data.as_ref().map(RawJson::raw_str), Some(text));
            assert_eq!(e.timestamp.map(|t| (t.seconds, t.microseconds)), Some((-1, -1)));
        }
        other => panic!("expected the event, got {other:?}"),
    }
    // Requests 1 and 2 have ended: as an id, the text is unknown, unless it is 3, which answers request 3.
    let unknown = |ev: &ClientEvent| match ev {
        ClientEvent::ProtocolViolation(ProtocolViolation::UnknownId { id }) => assert_eq!(id.raw_str(), text),
        other => panic!("expected an unknown id, got {other:?}"),
    };
    if text == "3" {
        ok(&events[4], 3);
        unknown(&events[5]);
    } else {
        unknown(&events[4]);
        ok(&events[5], 3);
    }
    assert_eq!(events.len(), 6, "{events:?}");
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let [flags, seed, ref material @ ..] = *data else { return Ok(()) };
    let mut u = Unstructured::new(material);
    let (value, text) = match try_parse(material) {
        // The material is JSON: use its text as it is (trimmed of the whitespace around it).
        Some(v) => {
            (v, std::str::from_utf8(material).expect("JSON is UTF-8").trim_matches([' ', '\t', '\r', '\n']).to_string())
        }
        None => {
            let v = value(&mut u, 0)?;
            let compact = serde_json::to_string(&v).expect("a Value serializes");
            // Pretty text indents each level: deep values would make megabytes of it (and slow runs).
            let text = if flags & 1 == 0 || depth(&v) > 32 {
                compact
            } else {
                serde_json::to_string_pretty(&v).expect("a Value serializes")
            };
            (v, text)
        }
    };
    // Commands: the value as arguments, and wrapped in an object, under a name taken from the value or the input.
    let name = match &value {
        Value::Object(m) => m.get("execute").or(m.get("exec-oob")).and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let name = match name {
        Some(n) => n,
        None => u.arbitrary::<String>()?,
    };
    let id = u.arbitrary::<u64>()?;
    let oob = flags & 2 != 0;
    command(&name, &value, &text, id, oob);
    if let Some(args) = value.get("arguments") {
        command(&name, args, &serde_json::to_string(args).expect("a Value serializes"), id, oob);
    }
    let wrapped = json!({ "arg": value });
    command(&name, &wrapped, &format!("{{\"arg\":{text}}}"), id, oob);
    replies(&text, seed, flags & 4 != 0);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
