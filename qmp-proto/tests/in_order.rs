//! `Config::in_band_ids(false)`: in-band commands go without an id and replies without one are matched by
//! order. One scripted conversation per rule, then a property test: a fake QEMU that answers in-band commands
//! in order (OOB ones whenever it likes) and echoes each command's own number, fed whole, byte by byte and in
//! chunks, must give identical events, and every reply must reach the command whose number it echoes.

mod common;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use common::{event, idless_err, ret, Driver, Ev};
use proptest::prelude::*;
use qmp_proto::{Config, ExecuteOptions, RequestId, ORDERED_COMMAND_MAX};
use serde_json::json;

fn opts() -> ExecuteOptions {
    ExecuteOptions::new()
}

fn ordered() -> Config {
    Config::qmp().in_band_ids(false)
}

fn ready(config: Config) -> Driver {
    let mut d = Driver::new(config);
    d.handshake(true);
    d.log.clear();
    d
}

fn ok(id: RequestId, raw: &str) -> Ev {
    Ev::ReplyOk { id: id.as_u64(), raw: raw.into() }
}

/// `{"return": VALUE}`: a reply without an id.
fn ret_idless(value: &str) -> String {
    format!("{{\"return\": {value}}}\r\n")
}

#[test]
fn in_band_commands_go_without_ids_and_replies_match_by_order() {
    let mut d = Driver::new(ordered());
    d.handshake(true);
    // qmp_capabilities went with its id (the handshake routed its reply by it).
    assert_eq!(d.sent[0].name, "qmp_capabilities");
    assert_eq!(d.sent[0].id, 1);
    d.log.clear();
    let from = d.wire.len();
    let a = d.exec_args("a", &json!({"n": 1}), opts());
    let b = d.exec("b", opts());
    let oob = d.exec("query-yank", opts().oob());
    assert_eq!(
        &d.wire[from..],
        br#"{"execute":"a","arguments":{"n":1}}{"execute":"b"}{"exec-oob":"query-yank","id":3}"#
    );
    assert!(!a.is_on_wire() && !b.is_on_wire() && oob.is_on_wire());
    // OOB overtakes; in-band replies come in order, without ids.
    let evs = d.input(ret(oob.as_u64(), "[]") + &event("X", None, 1, 2) + &ret_idless("1") + &ret_idless("2"));
    assert_eq!(
        evs,
        [ok(oob, "[]"), Ev::Event { name: "X".into(), data: None, ts: Some((1, 2)) }, ok(a, "1"), ok(b, "2")]
    );
    assert_eq!((d.client.in_flight(), d.client.pending()), (0, 0));
    // An error without an id is the reply of the oldest command too.
    let c = d.exec("c", opts());
    let evs = d.input(idless_err("nope"));
    assert!(matches!(&evs[..], [Ev::ReplyErr { id, desc, .. }] if *id == c.as_u64() && desc == "nope"), "{evs:?}");
}

#[test]
fn a_reply_without_anything_outstanding_or_with_an_id_not_sent_is_a_violation() {
    let mut d = ready(ordered());
    assert_eq!(d.input(ret_idless("1")), [Ev::IdlessReply { value: "1".into() }]);
    let a = d.exec("a", opts());
    // `a` has key 1, but went without it: a reply carrying 1 is not one we asked for.
    assert_eq!(d.input(ret(a.as_u64(), "{}")), [Ev::UnknownId { id: a.as_u64().to_string() }]);
    assert_eq!(d.client.pending(), 1);
    assert_eq!(d.input(ret_idless("2")), [ok(a, "2")]);
    assert!(matches!(&d.input(idless_err("stray"))[..], [Ev::IdlessError { desc, .. }] if desc == "stray"));
}

#[test]
fn timed_out_and_cancelled_commands_keep_their_place_until_their_late_reply() {
    let mut d = ready(ordered().max_pending(3));
    let slow = d.exec_with_deadline("slow", 100);
    let dropped = d.exec("dropped", opts());
    let live = d.exec("live", opts());
    assert_eq!(d.at(100), [Ev::TimedOut { id: slow.as_u64() }]);
    assert!(d.cancel(dropped));
    assert_eq!((d.client.abandoned(), d.client.pending(), d.client.in_flight()), (2, 1, 3));
    // Their places are taken until the late replies come: bounded by max_pending.
    assert!(matches!(d.client.execute_no_args("x", opts()), Err(qmp_proto::UsageError::QueueFull { limit: 3 })));
    // Both late replies are swallowed; the third reply is `live`'s.
    assert_eq!(d.input(ret_idless("1") + &idless_err("late")), []);
    assert_eq!(d.input(ret_idless("3")), [ok(live, "3")]);
    assert_eq!((d.client.abandoned(), d.client.in_flight()), (0, 0));
    // The keys are free again, smallest first.
    assert_eq!(d.exec("next", opts()).as_u64(), 1);
}

#[test]
fn a_long_command_keeps_its_id_and_goes_alone() {
    let mut d = ready(ordered());
    let before = d.exec("before", opts());
    let pad = "x".repeat(ORDERED_COMMAND_MAX);
    let long = d.exec_args("long", &json!({ "pad": pad }), opts());
    let after = d.exec("after", opts());
    assert!(long.is_on_wire() && !before.is_on_wire());
    let names: Vec<_> = d.sent.iter().skip(1).map(|c| (c.name.as_str(), c.id)).collect();
    assert_eq!(names, [("before", 0), ("long", long.as_u64())], "nothing in-band follows the long command");
    assert_eq!(d.input(ret_idless("1")), [ok(before, "1")]);
    // Had QEMU's parser limits cut it up, its errors come without an id: nothing they could answer is out.
    assert!(matches!(&d.input(idless_err("JSON nesting depth limit exceeded"))[..], [Ev::IdlessError { .. }]));
    assert_eq!(d.input(ret(long.as_u64(), "2")), [ok(long, "2")]);
    assert_eq!(d.sent.last().map(|c| (c.name.as_str(), c.id)), Some(("after", 0)));
    assert_eq!(d.input(ret_idless("3")), [ok(after, "3")]);
}

#[test]
fn an_oversized_reply_without_an_id_ends_the_oldest_command_and_an_oversized_event_does_not() {
    let mut d = ready(ordered().max_message_size(200));
    let a = d.exec("a", opts());
    let b = d.exec("b", opts());
    let big_event = event("BIG", Some(&format!("\"{}\"", "e".repeat(300))), 1, 2);
    let big_reply = ret_idless(&format!("\"{}\"", "r".repeat(300)));
    let evs = d.input_bytewise(big_event.clone() + &big_reply + &ret_idless("2"));
    let (event_len, reply_len) = (big_event.len() as u64 - 2, big_reply.len() as u64 - 2);
    assert_eq!(
        evs,
        [
            Ev::Oversized { len: event_len, limit: 200 },
            Ev::ReplyTooLarge { id: a.as_u64(), len: reply_len, limit: 200 },
            ok(b, "2")
        ]
    );
}

#[test]
fn commands_answered_only_on_failure_keep_their_id() {
    let mut d = ready(ordered());
    let quiet = d.exec("quiet", opts().expect_reply(false));
    let a = d.exec("a", opts());
    assert!(quiet.is_on_wire() && !a.is_on_wire());
    assert_eq!(d.input(ret_idless("1")), [ok(a, "1")]);
}

#[test]
fn file_descriptor_passing_commands_go_without_ids_too() {
    let mut d = ready(ordered());
    d.client.execute_no_args("getfd", opts().pass_fd()).unwrap();
    let (mut out, mut fds) = (Vec::new(), Vec::new());
    d.client.poll_transmit_with_fds(&mut out, &mut fds);
    assert_eq!(out, br#" {"execute":"getfd"}"#);
    assert_eq!(fds.iter().map(|(at, id)| (*at, id.is_on_wire())).collect::<Vec<_>>(), [(0, false)]);
}

#[test]
fn guest_agent_mode_ignores_the_setting() {
    let config = Config::guest_agent().in_band_ids(false);
    assert!(config.get_in_band_ids());
    let mut d = Driver::new(config);
    let id = d.exec("guest-ping", opts());
    assert!(id.is_on_wire());
    assert_eq!(d.sent[0].id, id.as_u64());
}

// ----- property: a fake QEMU answering in order -------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// An in-band command (long: over `ORDERED_COMMAND_MAX`), with a deadline in ms from now.
    Exec {
        long: bool,
        deadline: Option<u64>,
    },
    Oob,
    Cancel(usize),
    /// The server answers: the oldest in-band command, or an OOB one if any (`oob`), with an error or not.
    Answer {
        oob: bool,
        error: bool,
    },
    Event,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop::bool::weighted(0.1), prop::option::weighted(0.3, 1u64..500))
            .prop_map(|(long, deadline)| Op::Exec { long, deadline }),
        1 => Just(Op::Oob),
        1 => any::<usize>().prop_map(Op::Cancel),
        6 => (prop::bool::weighted(0.3), prop::bool::weighted(0.2)).prop_map(|(oob, error)| Op::Answer { oob, error }),
        1 => Just(Op::Event),
        2 => (0u64..400).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Feed {
    Whole,
    Bytewise,
    Chunks(usize),
}

/// Runs `ops` against a fake QEMU; returns the events. Checks on the way that every reply reaches the command
/// whose number it echoes and every command ends once.
fn run(ops: &[Op], feed: Feed) -> Vec<Ev> {
    let mut d = ready(ordered().max_in_flight(4).max_message_size(1 << 20));
    // The test's number of each command, by request id; commands in issue order, for cancelling.
    let mut number: HashMap<RequestId, u64> = HashMap::new();
    let mut issued: Vec<RequestId> = Vec::new();
    // What the server read and has not answered: (the command's number, its id if it carried one).
    let mut in_band: VecDeque<(u64, u64)> = VecDeque::new();
    let mut oob: Vec<(u64, u64)> = Vec::new();
    let mut read = d.sent.len();
    let mut next = 0u64;
    let mut ended: HashMap<RequestId, usize> = HashMap::new();
    // The request that holds each key now (keys are reused once free), and how much of the log was checked.
    let mut owner: HashMap<u64, RequestId> = HashMap::new();
    let mut checked = 0;
    for op in ops {
        match *op {
            Op::Exec { long, deadline } => {
                next += 1;
                let pad = if long { "p".repeat(ORDERED_COMMAND_MAX) } else { String::new() };
                let at = deadline.map(|ms| d.now + Duration::from_millis(ms));
                let rid = d.exec_args("cmd", &json!({"n": next, "pad": pad}), opts().deadline_opt(at));
                number.insert(rid, next);
                issued.push(rid);
                owner.insert(rid.as_u64(), rid);
            }
            Op::Oob => {
                next += 1;
                let rid = d.exec_args("query-yank", &json!({"n": next}), opts().oob());
                number.insert(rid, next);
                issued.push(rid);
                owner.insert(rid.as_u64(), rid);
            }
            Op::Cancel(k) if !issued.is_empty() => {
                let rid = issued[k % issued.len()];
                if d.cancel(rid) {
                    *ended.entry(rid).or_default() += 1;
                }
            }
            Op::Cancel(_) => {}
            Op::Answer { oob: pick_oob, error } => {
                let (n, id) = if pick_oob && !oob.is_empty() {
                    oob.remove(0)
                } else if let Some(front) = in_band.pop_front() {
                    front
                } else {
                    continue;
                };
                let id = if id == 0 { String::new() } else { format!(", \"id\": {id}") };
                let bytes = if error {
                    format!("{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"{n}\"}}{id}}}\r\n")
                } else {
                    format!("{{\"return\": {n}{id}}}\r\n")
                };
                match feed {
                    Feed::Whole => d.input(bytes.as_bytes()),
                    Feed::Bytewise => d.input_bytewise(bytes.as_bytes()),
                    Feed::Chunks(k) => bytes.as_bytes().chunks(k).flat_map(|c| d.input(c)).collect(),
                };
            }
            Op::Event => {
                d.input(event("E", None, 1, 2));
            }
            Op::Advance(ms) => {
                let at = (d.now - d.base).as_millis() as u64 + ms;
                d.at(at);
            }
        }
        // What the client wrote since: the server reads it. In-band commands in order, OOB aside.
        for cmd in &d.sent[read..] {
            let n = cmd.args.as_ref().and_then(|a| a["n"].as_u64()).expect("every test command has a number");
            if cmd.oob {
                oob.push((n, cmd.id));
            } else {
                in_band.push_back((n, cmd.id));
            }
        }
        read = d.sent.len();
        assert!(d.client.in_flight() <= 4);
        for ev in &d.log[checked..] {
            let (rid, echoed) = match ev {
                Ev::ReplyOk { id, raw } => (owner[id], Some(raw)),
                Ev::ReplyErr { id, desc, .. } => (owner[id], Some(desc)),
                Ev::TimedOut { id } => (owner[id], None),
                Ev::Event { .. } => continue,
                other => panic!("unexpected {other:?}"),
            };
            if let Some(echoed) = echoed {
                assert_eq!(echoed, &number[&rid].to_string(), "reply routed to the wrong command");
            }
            *ended.entry(rid).or_default() += 1;
        }
        checked = d.log.len();
    }
    assert!(ended.values().all(|&n| n == 1), "a request ended twice: {ended:?}");
    assert_eq!(d.client.pending(), issued.len() - ended.len(), "pending() vs requests not ended");
    d.log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replies_by_order_reach_their_commands_however_the_input_is_cut(
        ops in prop::collection::vec(op(), 0..60),
        chunk in 2usize..9,
    ) {
        let whole = run(&ops, Feed::Whole);
        prop_assert_eq!(&whole, &run(&ops, Feed::Bytewise));
        prop_assert_eq!(&whole, &run(&ops, Feed::Chunks(chunk)));
    }
}
