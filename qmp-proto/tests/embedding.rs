//! What an embedder's own I/O loop relies on, each as a scripted in-memory conversation on virtual time: calls
//! without arguments, the default command timeout taken from the `now` the caller passes, the two closes, calls
//! while earlier bytes are unwritten, and several reads before draining.

mod common;

use std::time::Duration;

use common::{event, ret, Driver, Ev};
use qmp_proto::{Config, ConnectionError, ExecuteOptions, UsageError};

fn opts() -> ExecuteOptions {
    ExecuteOptions::new()
}

#[test]
fn execute_no_args_sends_no_arguments_member() {
    let mut d = Driver::new(Config::qmp());
    d.handshake(true);
    let id = d.client.execute_no_args("query-status", opts()).expect("execute");
    d.pump();
    assert!(d.wire.ends_with(format!(r#"{{"execute":"query-status","id":{id}}}"#).as_bytes()));
}

#[test]
fn command_timeout_starts_from_the_now_passed() {
    let mut d = Driver::new(Config::qmp().command_timeout(Some(Duration::from_millis(500))));
    d.handshake(false);
    let now = d.deadline(100);
    let a = d.client.execute_no_args("query-status", opts().now(now)).expect("execute");
    d.pump();
    assert_eq!(d.timeout, Some(d.deadline(600)), "now + command_timeout");
    // An explicit deadline wins over the default.
    let b = d.client.execute_no_args("query-name", opts().now(now).deadline(d.deadline(2_000))).expect("execute");
    // Without `now` or a deadline the core cannot start the default: refused, nothing sent.
    let before = d.wire.len();
    let e = d.client.execute_no_args("query-uuid", opts()).expect_err("no clock");
    assert!(matches!(e, UsageError::NoClock), "{e:?}");
    assert!(matches!(d.client.guest_sync(1, opts()), Err(UsageError::NotGuestAgent)));
    d.pump();
    assert_eq!(d.wire.len() - before, r#"{"execute":"query-name","id":2}"#.len(), "only b went out");
    assert!(d.at(599).is_empty());
    assert_eq!(d.at(600), [Ev::TimedOut { id: a.as_u64() }]);
    assert_eq!(d.at(2_000), [Ev::TimedOut { id: b.as_u64() }]);
    // Whatever the order of the builder calls, an explicit deadline wins and `get_deadline` is only ever one.
    let (now, at) = (d.deadline(0), d.deadline(7));
    assert_eq!(opts().deadline(at).now(now).get_deadline(), Some(at));
    assert_eq!(opts().now(now).deadline(at).get_deadline(), Some(at));
    assert_eq!(opts().now(now).deadline_opt(None).get_deadline(), None);
    let c = d.client.execute_no_args("query-kvm", opts().now(d.deadline(3_000)).deadline_opt(None)).expect("now kept");
    d.pump();
    assert_eq!(d.timeout, Some(d.deadline(3_500)));
    assert_eq!(d.at(3_500), [Ev::TimedOut { id: c.as_u64() }]);
    // Without a configured timeout, `now` alone sets no deadline.
    let mut d = Driver::new(Config::guest_agent());
    d.client.execute_no_args("guest-ping", opts().now(d.deadline(0))).expect("execute");
    d.pump();
    assert_eq!(d.timeout, None);
}

#[test]
fn close_gracefully_flushes_what_was_accepted() {
    let mut d = Driver::new(Config::qmp().max_in_flight(1));
    // Accepted before the greeting, and more than the in-flight limit: all of them still go out.
    let ids: Vec<_> = ["a", "b", "c"].iter().map(|n| d.exec(n, opts())).collect();
    d.client.close_gracefully();
    let e = d.client.execute_no_args("late", opts()).expect_err("closing");
    assert!(matches!(e, UsageError::Closing), "{e:?}");
    d.handshake(false);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(d.sent.last().map(|c| c.name.as_str()), Some(["a", "b", "c"][i]));
        // Events still come while closing.
        let evs = d.input(format!("{}{}", event("STOP", None, 1, 0), ret(id.as_u64(), "{}")));
        assert!(matches!(&evs[0], Ev::Event { name, .. } if name == "STOP"), "{evs:?}");
        let mut expected = vec![Ev::ReplyOk { id: id.as_u64(), raw: "{}".into() }];
        if i == 2 {
            expected.push(Ev::Closed(ConnectionError::Local));
        }
        assert_eq!(evs[1..], expected);
    }
    assert!(d.sent.iter().all(|c| c.name != "late"));
    // Nothing pending: closes at once. A timeout or a cancel can end the last command too.
    let mut d = Driver::new(Config::guest_agent());
    d.client.close_gracefully();
    assert_eq!(d.pump(), [Ev::Closed(ConnectionError::Local)]);
    let mut d = Driver::new(Config::guest_agent());
    let slow = d.exec("guest-info", opts().deadline(d.deadline(50)));
    let other = d.exec("guest-ping", opts());
    d.client.close_gracefully();
    assert!(d.pump().is_empty());
    assert!(d.cancel(other));
    assert_eq!(d.at(50), [Ev::TimedOut { id: slow.as_u64() }, Ev::Closed(ConnectionError::Local)]);
}

#[test]
fn close_drops_what_was_not_written() {
    let mut d = Driver::new(Config::qmp());
    let id = d.exec("query-status", opts());
    let before = d.wire.len();
    d.client.close();
    assert_eq!(d.pump(), [Ev::Closed(ConnectionError::Local)]);
    d.input(common::greeting(true));
    assert_eq!(d.wire.len(), before, "the queued command never goes out");
    assert!(id.serial() > 0);
}

/// Reads of any size, several before draining; commands issued while earlier bytes are unwritten go behind them.
#[test]
fn partial_writes_and_batched_reads() {
    let mut client = qmp_proto::Client::new(Config::qmp(), std::time::Instant::now());
    let mut out = Vec::new();
    for b in common::greeting(true).bytes() {
        client.handle_input(&[b]); // a one-byte read buffer
    }
    client.poll_transmit(&mut out);
    let negotiate = out.clone();
    out.drain(..7); // a partial write
    let id = client.execute_no_args("query-status", opts()).expect("queued until ready");
    assert_eq!(client.poll_transmit(&mut out), 0, "not ready yet");
    assert_eq!(out, negotiate[7..]);
    client.handle_input(ret(1, "{}").as_bytes());
    client.handle_input(event("RESUME", None, 1, 2).as_bytes()); // two reads before draining
    assert!(client.poll_transmit(&mut out) > 0);
    assert_eq!(out, [&negotiate[7..], format!(r#"{{"execute":"query-status","id":{id}}}"#).as_bytes()].concat());
    let evs = common::drain(&mut client);
    assert!(matches!(evs.as_slice(), [Ev::Greeting { .. }, Ev::Ready { oob: true }, Ev::Event { .. }]), "{evs:?}");
}
