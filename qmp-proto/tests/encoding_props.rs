//! Property tests of command encoding, for what the `roundtrip` fuzz target reaches only slowly: every u64 id,
//! every command name, arbitrary JSON arguments, and ids echoed back in any JSON form.

use std::time::Instant;

use proptest::prelude::*;
use qmp_proto::encode::{encode_arguments, encode_command};
use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions, ProtocolViolation, RawJson};
use serde_json::{Map, Number, Value};

/// Arbitrary JSON. Floats are decimals that parse back exactly without serde_json's `float_roundtrip`.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (any::<i32>(), 0i32..6)
            .prop_map(|(m, e)| Value::Number(Number::from_f64(f64::from(m) / 10f64.powi(e)).unwrap())),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".*", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(".*", json(), 0..6).prop_map(|m| m.into_iter().collect())
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any name, id and arguments: the command parses back to exactly those members, and nothing else.
    #[test]
    fn commands_parse_back(name in ".*", id in any::<u64>(), oob in any::<bool>(), args in object()) {
        let encoded = encode_arguments(&args).unwrap();
        prop_assert_eq!(encoded.is_some(), !args.is_empty(), "arguments only when there are some");
        let mut wire = Vec::new();
        encode_command(&mut wire, &name, encoded.as_deref(), id, oob);
        let mut expected = Map::new();
        expected.insert(if oob { "exec-oob" } else { "execute" }.to_owned(), Value::String(name));
        if !args.is_empty() {
            expected.insert("arguments".to_owned(), Value::Object(args));
        }
        expected.insert("id".to_owned(), Value::from(id));
        prop_assert_eq!(parse(&wire), Value::Object(expected));
        // One line, no terminator: QEMU needs none (a newline inside a string is escaped).
        prop_assert!(!wire.contains(&b'\n'));
    }

    /// Arguments: an object (other than `{}`) is kept and parses back equal; `null` and `{}` mean none;
    /// anything else is refused.
    #[test]
    fn arguments_are_objects_or_nothing(value in json()) {
        match (&value, encode_arguments(&value)) {
            (Value::Null, Ok(None)) => {}
            (Value::Object(m), Ok(None)) => prop_assert!(m.is_empty()),
            (Value::Object(_), Ok(Some(bytes))) => prop_assert_eq!(parse(&bytes), value.clone()),
            (Value::Null | Value::Object(_), other) => prop_assert!(false, "{:?}", other),
            (_, result) => prop_assert!(result.is_err()),
        }
    }

    /// Through a client: the ids `execute` returns are the ids on the wire, new and increasing, and the bytes
    /// are what `encode_command` writes; `execute_raw` with the same arguments as text writes the same.
    #[test]
    fn client_ids_are_the_wire_ids(commands in proptest::collection::vec(("[a-z-]{1,12}", object()), 1..12)) {
        let mut client = Client::new(Config::guest_agent().max_in_flight(64), Instant::now());
        let mut expected = Vec::new();
        let mut last = 0;
        for (i, (name, args)) in commands.iter().enumerate() {
            let id = if i % 2 == 0 {
                client.execute(name, Some(args), ExecuteOptions::new()).unwrap()
            } else {
                let raw = RawJson::from_json(&serde_json::to_string_pretty(args).unwrap()).unwrap();
                client.execute_raw(name, Some(&raw), ExecuteOptions::new()).unwrap()
            };
            prop_assert!(id.as_u64() > last);
            last = id.as_u64();
            let encoded = encode_arguments(args).unwrap();
            encode_command(&mut expected, name, encoded.as_deref(), id.as_u64(), false);
        }
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        // execute_raw keeps the caller's spacing: compare the commands, not the bytes.
        let got: Vec<Value> = serde_json::Deserializer::from_slice(&out).into_iter().map(Result::unwrap).collect();
        let want: Vec<Value> = serde_json::Deserializer::from_slice(&expected).into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(got, want);
    }

    /// An id echoed in any JSON form comes back as the very text the server wrote: replies whose id is not
    /// a request of ours are reported with it, byte for byte; an integer id that is ours routes the reply,
    /// whatever spacing surrounds it.
    #[test]
    fn echoed_ids_keep_their_text(id in json(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&id) } else { serde_json::to_string(&id) }.unwrap();
        let mut client = Client::new(Config::guest_agent(), Instant::now());
        let ours = client.execute("x", None::<&()>, ExecuteOptions::new()).unwrap();
        client.handle_input(format!("{{\"return\": {{}}, \"id\": {text}}}\n").as_bytes());
        client.handle_input(format!("{{\"id\" :\r\n {} , \"return\": 7}}\n", ours.as_u64()).as_bytes());
        let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
        prop_assert!(matches!(events[0], ClientEvent::Ready { .. }), "{:?}", events[0]);
        let routed_first = text == ours.as_u64().to_string();
        match &events[1] {
            ClientEvent::ProtocolViolation(ProtocolViolation::UnknownId { id }) if !routed_first => {
                prop_assert_eq!(id.raw_str(), text.as_str());
            }
            ClientEvent::Reply { id, result: Ok(v) } if routed_first => {
                prop_assert_eq!(*id, ours);
                prop_assert_eq!(v.raw_str(), "{}");
            }
            other => prop_assert!(false, "{:?}", other),
        }
        match &events[2] {
            ClientEvent::Reply { id, result: Ok(v) } if !routed_first => {
                prop_assert_eq!(*id, ours);
                prop_assert_eq!(v.raw_str(), "7");
            }
            ClientEvent::ProtocolViolation(ProtocolViolation::UnknownId { .. }) if routed_first => {}
            other => prop_assert!(false, "{:?}", other),
        }
        prop_assert_eq!(events.len(), 3);
    }
}
