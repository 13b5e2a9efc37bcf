//! One test per crash the fuzz targets in `fuzz/` found (see FUZZING.md), so that it stays fixed in the normal
//! test suite. Each names its target and says what broke.

use std::time::Instant;

use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions, RawJson};

fn drain(client: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

/// roundtrip: an event with `"data": null` lost its `data` member (`None`), unlike `"return": null` and
/// `"id": null`, which are kept: a member that is present is `Some`, whatever its value.
#[test]
fn event_data_null_is_present() {
    let mut client = Client::new(Config::guest_agent(), Instant::now());
    client
        .handle_input(b"{\"event\": \"E\", \"data\": null, \"timestamp\": {\"seconds\": -1, \"microseconds\": -1}}\n");
    client.handle_input(b"{\"event\": \"F\"}\n");
    let events = drain(&mut client);
    let data: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Event(e) => Some(e.data.as_ref().map(|d| d.raw_str().to_owned())),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![Some("null".to_owned()), None]);
}

/// roundtrip: `execute_raw` with an empty object spaced as `{ }` wrote `"arguments":{ }`, where `{}` and
/// `execute` omit the member (the encoding promises `arguments` only when there are some).
#[test]
fn execute_raw_spaced_empty_object_has_no_arguments() {
    let mut client = Client::new(Config::guest_agent(), Instant::now());
    for text in ["{}", "{ }", "{\n}", "{\r\n\t }"] {
        let raw = RawJson::from_json(text).unwrap();
        client.execute_raw("guest-ping", Some(&raw), ExecuteOptions::new()).unwrap();
    }
    let mut out = Vec::new();
    client.poll_transmit(&mut out);
    let expected: String = (1..=4).map(|id| format!(r#"{{"execute":"guest-ping","id":{id}}}"#)).collect();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}
