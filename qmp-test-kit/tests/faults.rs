//! Our clients (blocking, and tokio for the async driver) against each fault of the fake, asserting the exact
//! error tier and variant they report. One table of cases, run on both adapters.

use std::time::{Duration, Instant};

use qmp_proto::adapter::{Error, Options};
use qmp_proto::{ConnectionError, ProtocolViolation, RequestError};
use qmp_test_kit::{Answer, FakeQemu, Fault, Script};
use serde_json::{json, Value};

/// What a case expects of the command `query-x` (deadline 150 ms), and of `query-ok` sent after it (2 s).
struct Case {
    name: &'static str,
    script: fn() -> Script,
    options: fn() -> Options,
    check: fn(&Result<Value, Error>),
    /// The result of `query-ok` afterwards: `None` when the connection must be over (same error again).
    then_ok: bool,
    /// A violation the client must have recorded.
    violation: Option<fn(&ProtocolViolation) -> bool>,
}

fn ok_script() -> Script {
    Script::new().on("query-ok", Answer::value(json!({"fine": true})))
}

fn quick() -> Options {
    Options::default().command_timeout(Some(Duration::from_millis(150))).connect_timeout(Duration::from_millis(300))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "delay within the deadline",
            script: || ok_script().on("query-x", Answer::value(json!(1)).delay(Duration::from_millis(60))),
            options: quick,
            check: |r| assert_eq!(r.as_ref().ok(), Some(&json!(1)), "{r:?}"),
            then_ok: true,
            violation: None,
        },
        Case {
            name: "delay past the deadline",
            script: || ok_script().on("query-x", Answer::value(json!(1)).delay(Duration::from_millis(300))),
            options: quick,
            check: |r| assert!(matches!(r, Err(Error::TimedOut)), "{r:?}"),
            // The late reply comes while query-ok waits behind it (QEMU answers in order): it is swallowed.
            then_ok: true,
            violation: None,
        },
        Case {
            name: "silence",
            script: || ok_script().on("query-x", Answer::value(json!(1)).fault(Fault::Silence)),
            options: quick,
            check: |r| assert!(matches!(r, Err(Error::TimedOut)), "{r:?}"),
            then_ok: false,
            violation: None,
        },
        Case {
            name: "disconnect mid-reply",
            script: || ok_script().on("query-x", Answer::value(json!("abcdefgh")).fault(Fault::DisconnectMidReply)),
            options: quick,
            check: |r| {
                // `{"return": "abcdefgh", "id": 0}\r\n` is 33 bytes: 16 arrive.
                let expected = ConnectionError::EofMidMessage { buffered: 16 };
                assert!(matches!(r, Err(Error::Connection(e)) if *e == expected), "{r:?}")
            },
            then_ok: false,
            violation: None,
        },
        Case {
            name: "disconnect",
            script: || ok_script().on("query-x", Answer::value(json!(1)).fault(Fault::Disconnect)),
            options: quick,
            check: |r| assert!(matches!(r, Err(Error::Connection(ConnectionError::Eof))), "{r:?}"),
            then_ok: false,
            violation: None,
        },
        Case {
            name: "garbage before the reply",
            script: || {
                ok_script().on("query-x", Answer::value(json!(1)).fault(Fault::Garbage(b"garbage\r\n".to_vec())))
            },
            options: quick,
            check: |r| assert_eq!(r.as_ref().ok(), Some(&json!(1)), "{r:?}"),
            then_ok: true,
            violation: Some(|v| matches!(v, ProtocolViolation::NotJson { .. })),
        },
        Case {
            name: "a reply over the limit",
            script: || ok_script().on("query-x", Answer::value(json!(1)).fault(Fault::Oversized(4096))),
            options: || quick().max_message_size(1024),
            check: |r| {
                let too_large =
                    |e: &RequestError| matches!(e, RequestError::ReplyTooLarge { len, limit: 1024 } if *len > 4096);
                assert!(matches!(r, Err(Error::Request(e)) if too_large(e)), "{r:?}")
            },
            then_ok: true,
            violation: None,
        },
        Case {
            name: "an error reply",
            script: || ok_script().on("query-x", Answer::error("DeviceNotFound", "Device 'x' not found")),
            options: quick,
            check: |r| {
                assert!(
                    matches!(r, Err(Error::Qmp(e)) if e.class == "DeviceNotFound" && e.desc == "Device 'x' not found"),
                    "{r:?}"
                )
            },
            then_ok: true,
            violation: None,
        },
    ]
}

/// What a greeting fault does to connecting.
struct GreetingCase {
    name: &'static str,
    fault: Fault,
    check: fn(&Error),
}

fn greeting_cases() -> Vec<GreetingCase> {
    vec![
        GreetingCase {
            name: "no greeting",
            fault: Fault::Silence,
            check: |e| assert!(matches!(e, Error::Connection(ConnectionError::GreetingTimeout)), "{e:?}"),
        },
        GreetingCase {
            name: "half a greeting",
            fault: Fault::DisconnectMidReply,
            check: |e| {
                assert!(
                    matches!(e, Error::Connection(ConnectionError::EofMidMessage { buffered }) if *buffered > 0),
                    "{e:?}"
                )
            },
        },
        GreetingCase {
            name: "closed at once",
            fault: Fault::Disconnect,
            check: |e| assert!(matches!(e, Error::Connection(ConnectionError::Eof)), "{e:?}"),
        },
        GreetingCase {
            name: "garbage first",
            fault: Fault::Garbage(b"garbage\r\n".to_vec()),
            check: |e| assert!(matches!(e, Error::Connection(ConnectionError::BadGreeting(_))), "{e:?}"),
        },
        GreetingCase {
            name: "a greeting over the limit",
            fault: Fault::Oversized(4096),
            check: |e| assert!(matches!(e, Error::Connection(ConnectionError::BadGreeting(_))), "{e:?}"),
        },
    ]
}

#[test]
fn blocking_client_against_each_fault() {
    for case in cases() {
        eprintln!("case: {}", case.name);
        let fake = FakeQemu::start((case.script)()).unwrap();
        let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), (case.options)()).unwrap();
        let result = qmp.execute::<Value>("query-x", ());
        (case.check)(&result);
        let then = qmp.execute_with_timeout::<Value>("query-ok", (), Some(Duration::from_secs(2)));
        check_after(&case, &result, then, qmp.take_violations());
    }
}

/// Checks what followed the faulty command: the next command, and the violations recorded.
fn check_after(case: &Case, result: &Result<Value, Error>, then: Result<Value, Error>, seen: Vec<ProtocolViolation>) {
    if case.then_ok {
        assert_eq!(then.unwrap(), json!({"fine": true}), "{}", case.name);
    } else if let Err(Error::Connection(_)) = result {
        // Sticky: the same cause again.
        assert_eq!(format!("{then:?}"), format!("{result:?}"), "{}", case.name);
    } else {
        assert!(then.is_err(), "{}", case.name);
    }
    if let Some(violation) = case.violation {
        assert!(seen.iter().any(violation), "{}: {seen:?}", case.name);
    }
}

#[test]
fn tokio_client_against_each_fault() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for case in cases() {
            eprintln!("case: {}", case.name);
            let fake = FakeQemu::start((case.script)()).unwrap();
            let qmp = qmp_tokio::Qmp::connect_unix(fake.path(), (case.options)()).await.unwrap();
            let result = qmp.execute::<Value>("query-x", ()).await;
            (case.check)(&result);
            let then = qmp.execute_with_timeout::<Value>("query-ok", (), Some(Duration::from_secs(2))).await;
            check_after(&case, &result, then, qmp.take_violations());
        }
    });
}

/// The same cases with the fake on the runtime itself (serve_stream over a socket pair), in paused time.
#[test]
fn tokio_client_against_each_fault_with_the_fake_on_the_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        for case in cases() {
            eprintln!("case: {}", case.name);
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            let (_fake, serving) = qmp_test_kit::serve_stream(qmp_tokio::Tokio, theirs, (case.script)());
            tokio::spawn(serving);
            let qmp = qmp_tokio::Qmp::from_stream(ours, (case.options)()).await.unwrap();
            let result = qmp.execute::<Value>("query-x", ()).await;
            (case.check)(&result);
            let then = qmp.execute_with_timeout::<Value>("query-ok", (), Some(Duration::from_secs(2))).await;
            check_after(&case, &result, then, qmp.take_violations());
        }
        for case in greeting_cases() {
            eprintln!("case: {}", case.name);
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            let script = Script::new().greeting_fault(case.fault);
            tokio::spawn(qmp_test_kit::serve_stream(qmp_tokio::Tokio, theirs, script).1);
            let result = qmp_tokio::Qmp::from_stream(ours, quick().max_message_size(1024)).await;
            (case.check)(&result.expect_err(case.name));
        }
    });
}

#[test]
fn injected_events_and_commands_with_the_fake_on_the_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let script = ok_script().on("stop", Answer::value(json!({})).event_before("STOP", None));
        let (fake, serving) = qmp_test_kit::serve_stream(qmp_tokio::Tokio, theirs, script);
        tokio::spawn(serving);
        let qmp = qmp_tokio::Qmp::from_stream(ours, quick()).await.unwrap();
        let mut events = qmp.events();
        qmp.execute::<Value>("stop", ()).await.unwrap();
        fake.event("RESUME", Some(json!({"reason": "test"})));
        let mut names = Vec::new();
        while names.len() < 2 {
            match tokio_stream_next(&mut events).await {
                Some(qmp_tokio::EventItem::Event(e)) => names.push(e.name.clone()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(names, ["STOP", "RESUME"]);
        assert_eq!(fake.commands().iter().map(|c| c.name()).collect::<Vec<_>>(), ["stop"]);
    });
}

async fn tokio_stream_next<S: futures_core::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

#[test]
fn greeting_faults_on_both_adapters() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for case in greeting_cases() {
        eprintln!("case: {}", case.name);
        let fake = FakeQemu::start(Script::new().greeting_fault(case.fault.clone())).unwrap();
        let blocking = qmp_blocking::Client::connect_unix(fake.path(), quick().max_message_size(1024));
        (case.check)(&blocking.expect_err(case.name));
        drop(fake);
        let fake = FakeQemu::start(Script::new().greeting_fault(case.fault)).unwrap();
        let tokio = rt.block_on(qmp_tokio::Qmp::connect_unix(fake.path(), quick().max_message_size(1024)));
        (case.check)(&tokio.expect_err(case.name));
    }
}

#[test]
fn a_late_greeting_is_waited_for() {
    let fake = FakeQemu::start(ok_script().greeting_delay(Duration::from_millis(80))).unwrap();
    let started = Instant::now();
    let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), quick()).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(80));
    assert_eq!(qmp.execute::<Value>("query-ok", ()).unwrap(), json!({"fine": true}));
}

#[test]
fn events_around_replies_and_injected() {
    let script = Script::new().on(
        "blockdev-create",
        Answer::value(json!({}))
            .event_before("JOB_STATUS_CHANGE", Some(json!({"id": "j0", "status": "created"})))
            .event_after("JOB_STATUS_CHANGE", Some(json!({"id": "j0", "status": "concluded"}))),
    );
    let fake = FakeQemu::start(script).unwrap();
    let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), quick()).unwrap();
    qmp.execute::<Value>("blockdev-create", json!({"job-id": "j0"})).unwrap();
    fake.event("BLOCK_JOB_READY", Some(json!({"device": "j0"})));
    let mut seen = Vec::new();
    while let Some(event) = qmp.next_event(Some(Duration::from_millis(500))).unwrap() {
        seen.push((event.name.clone(), event.data.map(|d| d.as_value().unwrap()["status"].clone())));
        if event.name == "BLOCK_JOB_READY" {
            break;
        }
    }
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["JOB_STATUS_CHANGE", "JOB_STATUS_CHANGE", "BLOCK_JOB_READY"]);
    assert_eq!(seen[0].1, Some(json!("created")));
    assert_eq!(seen[1].1, Some(json!("concluded")));
}

#[test]
fn once_answers_then_the_standing_one_then_command_not_found() {
    let script = Script::new()
        .once("blockdev-del", Answer::error("GenericError", "busy"))
        .once("blockdev-del", Answer::handler(|cmd| Ok(json!({"second": cmd.arguments["node-name"].clone()}))))
        .on("blockdev-del", Answer::value(json!("standing")));
    let fake = FakeQemu::start(script).unwrap();
    let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), quick()).unwrap();
    let args = json!({"node-name": "n0"});
    let first = qmp.execute::<Value>("blockdev-del", &args);
    assert!(matches!(first, Err(Error::Qmp(e)) if e.desc == "busy"));
    assert_eq!(qmp.execute::<Value>("blockdev-del", &args).unwrap(), json!({"second": "n0"}));
    assert_eq!(qmp.execute::<Value>("blockdev-del", &args).unwrap(), json!("standing"));
    assert_eq!(qmp.execute::<Value>("blockdev-del", &args).unwrap(), json!("standing"));
    let unknown = qmp.execute::<Value>("query-nothing", ());
    assert!(matches!(unknown, Err(Error::Qmp(e)) if e.class == "CommandNotFound"
        && e.desc == "The command query-nothing has not been found"));
    let names: Vec<String> = fake.commands().into_iter().map(|c| c.name().to_owned()).collect();
    assert_eq!(names, ["blockdev-del", "blockdev-del", "blockdev-del", "blockdev-del", "query-nothing"]);
    assert_eq!(fake.commands()[0].arguments["node-name"], "n0");
}

#[test]
fn a_client_leaving_a_silent_fake_frees_it_for_the_next() {
    let script = ok_script().once("query-x", Answer::value(json!(1)).fault(Fault::Silence));
    let fake = FakeQemu::start(script).unwrap();
    let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), quick()).unwrap();
    assert!(matches!(qmp.execute::<Value>("query-x", ()), Err(Error::TimedOut)));
    drop(qmp);
    let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), quick()).unwrap();
    assert_eq!(qmp.execute::<Value>("query-ok", ()).unwrap(), json!({"fine": true}));
    assert_eq!(fake.connections(), 2);
}

#[test]
fn a_fake_guest_agent() {
    let script = Script::new()
        .guest_agent()
        .on("guest-info", Answer::value(json!({"version": "7.2.22"})))
        .on("guest-get-time", Answer::value(json!(0)).fault(Fault::DisconnectMidReply));
    let fake = FakeQemu::start(script).unwrap();
    // Connecting synchronises with guest-sync-delimited, which the server answers itself.
    let mut ga = qmp_blocking::GuestAgent::connect_unix(fake.path(), quick()).unwrap();
    assert_eq!(ga.execute::<Value>("guest-info", ()).unwrap(), json!({"version": "7.2.22"}));
    let cut = ga.execute::<Value>("guest-get-time", ());
    assert!(matches!(cut, Err(Error::Connection(ConnectionError::EofMidMessage { .. }))), "{cut:?}");
    let names: Vec<String> = fake.commands().into_iter().map(|c| c.name().to_owned()).collect();
    assert_eq!(names, ["guest-info", "guest-get-time"]);
}

#[test]
fn the_script_lives_on_across_connections() {
    let script = Script::new()
        .once("query-x", Answer::value(json!(1)).fault(Fault::Disconnect))
        .on("query-x", Answer::value(json!(2)));
    let fake = FakeQemu::start(script).unwrap();
    let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), quick()).unwrap();
    assert!(matches!(qmp.execute::<Value>("query-x", ()), Err(Error::Connection(ConnectionError::Eof))));
    let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), quick()).unwrap();
    assert_eq!(qmp.execute::<Value>("query-x", ()).unwrap(), json!(2));
    assert_eq!(fake.connections(), 2);
}
