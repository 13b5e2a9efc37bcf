//! Against the scripted fake server: what no real QEMU does on demand.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use qmp_smol::{ConnectionError, Error, EventItem, ProtocolViolation};
use qmp_tests::fake_server::{event, reply, FakeConfig, FakeServer, Step};
use serde_json::Value;

use crate::common::{run, Qmp, Rt};

const LIMIT: Duration = Duration::from_secs(60);

fn id_of(msg: &Value) -> u64 {
    msg["id"].as_u64().expect("integer id")
}

pub fn late_reply_is_swallowed<R: Rt>() {
    let server = FakeServer::spawn(vec![
        Step::SendGreeting,
        Step::AnswerNegotiation,
        Step::ReadMessage, // the command that times out; no answer yet
        Step::respond(|msg| {
            // The late reply to the previous command, then this one's.
            let id = id_of(msg);
            let mut out = reply(r#"{"late": true}"#, Some(&(id - 1).to_string()));
            out.extend(reply(r#"{"late": false}"#, Some(&id.to_string())));
            out
        }),
        Step::Silence,
    ]);
    let path = server.socket_path().to_owned();
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(&path, R::options()).await.expect("connect");
        let started = Instant::now();
        match qmp.execute_with_timeout::<Value>("slow", (), Some(Duration::from_millis(200))).await {
            Err(Error::TimedOut) => {}
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(200));
        let second: Value = qmp.execute("next", ()).await.expect("second command");
        assert_eq!(second["late"], false, "the late reply went to the wrong caller");
        assert!(qmp.take_violations().is_empty(), "a known late reply is swallowed, not reported");
        qmp.close().await;
    });
    assert_eq!(server.received().len(), 3);
}

pub fn disconnect_mid_reply_ends_every_call_once<R: Rt>() {
    let server = FakeServer::spawn(vec![
        Step::SendGreeting,
        Step::AnswerNegotiation,
        Step::ReadMessage,
        Step::ReadMessage,
        Step::ReadMessage,
        Step::send(r#"{"return": {"cut": "#),
        Step::Close,
    ]);
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let qmp = qmp.clone();
                R::spawn(async move { qmp.execute::<Value>(&format!("cmd{i}"), ()).await })
            })
            .collect();
        for call in calls {
            match call.await {
                Err(Error::Connection(ConnectionError::EofMidMessage { buffered })) => assert!(buffered > 0),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(qmp.closed().await, ConnectionError::EofMidMessage { .. }));
        assert!(matches!(qmp.execute::<Value>("after", ()).await, Err(Error::Connection(_))));
    });
}

/// One subscriber reads every event of a flood while another stalls. 200,000 events: the million-event flood
/// with a stalled subscriber runs on every adapter in the behavioural suite (`qmp-tests`); here a debug build's
/// reading subscriber sets the pace, and a million took 25-60 s of CI time.
pub fn event_flood_with_a_stalled_subscriber<R: Rt>() {
    const FLOOD: usize = 200_000;
    let config = FakeConfig::default().with_deadline(Duration::from_secs(280));
    let server = FakeServer::spawn_with(
        config,
        vec![
            Step::SendGreeting,
            Step::AnswerNegotiation,
            Step::ReadMessage, // "start": the client has subscribed
            Step::Flood { count: FLOOD, event: event("BLOCK_JOB_READY", Some(r#"{"device": "j0"}"#)) },
            Step::reply_to(r#"{"after": "flood"}"#),
            Step::Silence,
        ],
    );
    run::<R, _>(Duration::from_secs(300), async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options().event_buffer(64)).await.expect("connect");
        let mut stalled = qmp.events();
        let mut counting = qmp.events();
        let counter = R::spawn(async move {
            let (mut events, mut lost) = (0u64, 0u64);
            while let Some(item) = counting.next().await {
                match item {
                    EventItem::Event(_) => events += 1,
                    EventItem::Lagged(n) => lost += n,
                    _ => {}
                }
                if events + lost == FLOOD as u64 {
                    break;
                }
            }
            (events, lost)
        });
        // Sent before the flood; the flood runs while we wait; answered after it.
        let started = Instant::now();
        let _ = qmp.execute_with_timeout::<Value>("start", (), Some(Duration::ZERO)).await;
        let after: Value =
            qmp.execute_with_timeout("after", (), Some(Duration::from_secs(240))).await.expect("answered after it");
        assert_eq!(after["after"], "flood");
        eprintln!("{}: {FLOOD} events in {:?}", R::NAME, started.elapsed());
        assert!(stalled.buffered() <= 64, "memory stays bounded: {} buffered", stalled.buffered());
        let (events, lost) = counter.await;
        assert_eq!(events + lost, FLOOD as u64, "every event is either delivered or counted as lost");
        match stalled.next().await {
            Some(EventItem::Lagged(n)) => assert!(n >= FLOOD as u64 - 64, "lagged by {n}"),
            other => panic!("expected a lag marker, got {other:?}"),
        }
        qmp.close().await;
    });
}

pub fn garbage_is_reported_and_the_session_survives<R: Rt>() {
    let server = FakeServer::spawn(vec![
        Step::SendGreeting,
        Step::AnswerNegotiation,
        Step::send("garbage\r\n{\"unknown\": 1}\r\n"),
        Step::send(br#"{"return": {}, "id": 999999}"#.as_slice()),
        Step::reply_to(r#"{"fine": true}"#),
        Step::Silence,
    ]);
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let fine: Value = qmp.execute("x", ()).await.expect("the session survives");
        assert_eq!(fine["fine"], true);
        let violations = qmp.take_violations();
        assert!(
            violations
                .iter()
                .any(|v| matches!(v, ProtocolViolation::NotJson { .. } | ProtocolViolation::UnknownShape { .. })),
            "{violations:?}"
        );
        assert!(violations.iter().any(|v| matches!(v, ProtocolViolation::UnknownId { .. })), "{violations:?}");
        qmp.close().await;
    });
}

pub fn pending_limit_makes_callers_wait<R: Rt>() {
    const CALLS: usize = 40;
    let mut script = vec![Step::SendGreeting, Step::AnswerNegotiation];
    script.extend(
        (0..CALLS).map(|_| Step::respond(|msg| reply(&msg["execute"].to_string(), Some(&id_of(msg).to_string())))),
    );
    script.push(Step::Silence);
    let server = FakeServer::spawn(script);
    run::<R, _>(LIMIT, async move {
        let options = R::options().max_pending(2).max_in_flight(1);
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), options).await.expect("connect");
        let calls: Vec<_> = (0..CALLS)
            .map(|i| {
                let qmp = qmp.clone();
                R::spawn(async move {
                    let name = format!("cmd{i}");
                    let echoed: String = qmp.execute(&name, ()).await.expect("waits for room, never QueueFull");
                    assert_eq!(echoed, name);
                })
            })
            .collect();
        for call in calls {
            call.await;
        }
        qmp.close().await;
    });
}

pub fn timeouts_fire_in_deadline_order<R: Rt>() {
    let server = FakeServer::spawn(vec![Step::SendGreeting, Step::AnswerNegotiation, Step::Silence]);
    let path = server.socket_path().to_owned();
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(&path, R::options()).await.expect("connect");
        // A long deadline first: the timer is armed for it; shorter ones after it must still fire on time.
        let long = {
            let qmp = qmp.clone();
            R::spawn(async move { qmp.execute_with_timeout::<Value>("long", (), Some(Duration::from_secs(30))).await })
        };
        R::sleep(Duration::from_millis(20)).await;
        for ms in [300u64, 150, 50] {
            let started = Instant::now();
            match qmp.execute_with_timeout::<Value>("short", (), Some(Duration::from_millis(ms))).await {
                Err(Error::TimedOut) => {}
                other => panic!("{other:?}"),
            }
            let took = started.elapsed();
            assert!(took >= Duration::from_millis(ms), "{ms} ms deadline fired after {took:?}");
            assert!(took < Duration::from_millis(ms + 2000), "{ms} ms deadline fired after {took:?}");
        }
        // Two at once: both end, the shorter first.
        let (a, b) = futures_lite::future::zip(
            qmp.execute_with_timeout::<Value>("a", (), Some(Duration::from_millis(200))),
            qmp.execute_with_timeout::<Value>("b", (), Some(Duration::from_millis(100))),
        )
        .await;
        assert!(matches!((a, b), (Err(Error::TimedOut), Err(Error::TimedOut))));
        qmp.close().await;
        assert!(matches!(long.await, Err(Error::Connection(ConnectionError::Local))));
    });
}
