//! `ExecuteOptions::pass_fd`: the byte a file descriptor rides on, and one such command on the wire at a time
//! (QEMU keeps only the latest descriptor it received and, with OOB, reads ahead of the command it runs:
//! observed on qemu-system-x86_64 7.2, where three pipelined `add-fd`s all got the third descriptor or none).

use std::time::{Duration, Instant};

use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions, RequestId, UsageError};

const GREETING: &[u8] =
    br#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

fn ready() -> Client {
    let mut c = Client::new(Config::qmp(), Instant::now());
    c.handle_input(GREETING);
    c.handle_input(br#"{"return": {}, "id": 1}"#);
    while c.poll_event().is_some() {}
    let mut out = Vec::new();
    c.poll_transmit(&mut out);
    assert!(c.is_ready());
    c
}

fn transmit(c: &mut Client) -> (String, Vec<(usize, RequestId)>) {
    while c.poll_event().is_some() {}
    let (mut out, mut fds) = (b"prefix".to_vec(), Vec::new());
    c.poll_transmit_with_fds(&mut out, &mut fds);
    (String::from_utf8(out).unwrap(), fds)
}

#[test]
fn the_descriptor_byte_is_a_space_before_the_command() {
    let mut c = ready();
    let id = c.execute("getfd", Some(&serde_json::json!({"fdname": "f"})), ExecuteOptions::new().pass_fd()).unwrap();
    let (out, fds) = transmit(&mut c);
    assert_eq!(out, format!(r#"prefix {{"execute":"getfd","arguments":{{"fdname":"f"}},"id":{id}}}"#));
    assert_eq!(fds, vec![(6, id)]);
    assert_eq!(&out[6..7], " ");
}

#[test]
fn one_descriptor_command_at_a_time_in_order() {
    let mut c = ready();
    let fd = || ExecuteOptions::new().pass_fd();
    let a = c.execute("add-fd", None::<&()>, fd()).unwrap();
    let b = c.execute("add-fd", None::<&()>, fd()).unwrap();
    let (out, fds) = transmit(&mut c);
    assert_eq!(fds.len(), 1, "{out}");
    assert_eq!(fds[0].1, a);
    // A plain command behind the waiting one waits too: order is kept.
    let q = c.execute("query-status", None::<&()>, ExecuteOptions::new()).unwrap();
    assert_eq!(transmit(&mut c), ("prefix".to_string(), vec![]));

    c.handle_input(format!(r#"{{"return": {{"fd": 11, "fdset-id": 1}}, "id": {a}}}"#).as_bytes());
    let (out, fds) = transmit(&mut c);
    assert_eq!(fds, vec![(6, b)]);
    assert!(out.contains(&format!(r#""id":{q}"#)), "{out}");
}

#[test]
fn a_cancelled_descriptor_command_still_holds_the_next_until_its_reply() {
    let mut c = ready();
    let fd = || ExecuteOptions::new().pass_fd();
    let a = c.execute("getfd", Some(&serde_json::json!({"fdname": "a"})), fd()).unwrap();
    transmit(&mut c);
    assert!(c.cancel(a));
    let b = c.execute("getfd", Some(&serde_json::json!({"fdname": "b"})), fd()).unwrap();
    assert!(transmit(&mut c).1.is_empty(), "QEMU may not have taken the first descriptor yet");
    c.handle_input(format!(r#"{{"return": {{}}, "id": {a}}}"#).as_bytes());
    assert_eq!(transmit(&mut c).1, vec![(6, b)]);
}

#[test]
fn a_timed_out_descriptor_command_still_holds_the_next_until_its_reply() {
    let start = Instant::now();
    let mut c = ready();
    let a = c
        .execute(
            "getfd",
            Some(&serde_json::json!({"fdname": "a"})),
            ExecuteOptions::new().pass_fd().deadline(start + Duration::from_secs(1)),
        )
        .unwrap();
    transmit(&mut c);
    c.handle_timeout(start + Duration::from_secs(2));
    assert!(matches!(c.poll_event(), Some(ClientEvent::TimedOut { id }) if id == a));
    let b = c.execute("getfd", Some(&serde_json::json!({"fdname": "b"})), ExecuteOptions::new().pass_fd()).unwrap();
    assert!(transmit(&mut c).1.is_empty());
    c.handle_input(format!(r#"{{"return": {{}}, "id": {a}}}"#).as_bytes());
    assert_eq!(transmit(&mut c).1, vec![(6, b)]);
}

#[test]
fn descriptor_commands_are_in_band_only() {
    let mut c = ready();
    let err = c.execute("getfd", None::<&()>, ExecuteOptions::new().pass_fd().oob()).unwrap_err();
    assert!(matches!(err, UsageError::InvalidArguments(_)), "{err}");
}

/// A descriptor-passing command answered only on failure holds the next one back until it ends; its grace
/// deadline ending it lets the next go.
#[test]
fn a_silent_descriptor_command_releases_the_next_at_its_deadline() {
    let base = Instant::now();
    let mut c = ready();
    let at = base + Duration::from_secs(2);
    let silent = ExecuteOptions::new().pass_fd().expect_reply(false).deadline(at);
    let a = c.execute("add-fd", Some(&serde_json::json!({"fdset-id": 1})), silent).unwrap();
    let b = c.execute("add-fd", Some(&serde_json::json!({"fdset-id": 2})), ExecuteOptions::new().pass_fd()).unwrap();
    let (_, fds) = transmit(&mut c);
    assert_eq!(fds.iter().map(|f| f.1).collect::<Vec<_>>(), [a]);
    c.handle_timeout(at);
    let ev = c.poll_event();
    assert!(matches!(ev, Some(ClientEvent::Reply { id, result: Ok(_) }) if id == a), "{ev:?}");
    let (_, fds) = transmit(&mut c);
    assert_eq!(fds.iter().map(|f| f.1).collect::<Vec<_>>(), [b]);
}
