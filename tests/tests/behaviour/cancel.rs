//! Cancellation, as a seeded randomized property against a real qemu-storage-daemon (and our own server):
//! thousands of calls from many tasks, most given up at random points (before the first poll, right after it,
//! or after a random short wait: queued, on the wire, or answered and unread), must never put a torn command on
//! the wire (the server would answer it with an id-less JSON parse error, which the adapter reports as a
//! violation) and never hand a reply to the wrong caller (each command's error names its caller). For `qmp-blocking`, which has no futures, the
//! same plan gives up by per-call timeouts (zero, or the random wait); later calls must stay in sync.
//!
//! The seed is printed; set `QMP_SUITE_SEED` to replay one.

use std::time::{Duration, Instant};

use qmp_proto::ProtocolViolation;
use qmp_tests::servers::ServerKind;
use serde_json::Value;

use crate::harness::{assert_echo, echo, seed, Adapter, Call, DropAt, Failure, Rng, SuiteOpts};
use crate::peers::Peer;

const TASKS: usize = 16;
const CALLS_PER_TASK: usize = 200;

/// What a call in the plan is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An unknown command whose error names the tag.
    Echo,
    /// `query-version`: a success reply of another shape.
    Version,
}

pub fn dropped_calls_never_tear_or_misroute<A: Adapter, P: Peer>() {
    let Some(server) = P::start(ServerKind::StorageDaemon) else { return };
    let seed = seed();
    let mut rng = Rng::new(seed);
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let major = A::greeting(&conn).version.as_ref().expect("the greeting's version").major;

    let mut kinds = Vec::new();
    let plans: Vec<Vec<Call>> = (0..TASKS)
        .map(|task| {
            (0..CALLS_PER_TASK)
                .map(|i| {
                    let kind = if rng.below(5) == 0 { Kind::Version } else { Kind::Echo };
                    kinds.push(kind);
                    let call = match kind {
                        Kind::Echo => echo(&format!("s{seed}-t{task}-c{i}")),
                        Kind::Version => Call::new("query-version"),
                    };
                    let drop_at = match rng.below(4) {
                        0 => DropAt::Never,
                        1 => DropAt::BeforePoll,
                        2 => DropAt::AfterFirstPoll,
                        _ => DropAt::After(Duration::from_micros(rng.below(600))),
                    };
                    call.drop_at(drop_at)
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let results = A::tasks(&conn, plans);
    let took = started.elapsed();

    let (mut completed, mut given_up) = (0usize, 0usize);
    for (task, done) in results.iter().enumerate() {
        assert_eq!(done.len(), CALLS_PER_TASK);
        for (i, d) in done.iter().enumerate() {
            let context = format!("{} seed {seed} task {task} call {i}", A::NAME);
            let Some(result) = &d.result else {
                given_up += 1;
                continue;
            };
            completed += 1;
            match kinds[task * CALLS_PER_TASK + i] {
                Kind::Echo => assert_echo(result, &format!("s{seed}-t{task}-c{i}"), &context),
                Kind::Version => match result {
                    Ok(v) => assert_eq!(v["qemu"]["major"], major, "{context}: {v}"),
                    Err(Failure::Qmp(e)) => panic!("{context}: query-version got another caller's reply: {e}"),
                    Err(e) => panic!("{context}: {e:?}"),
                },
            }
        }
    }

    // Still in sync: every later call gets its own reply.
    for i in 0..20 {
        let tag = format!("s{seed}-after-{i}");
        assert_echo(&A::execute::<Value>(&conn, echo(&tag)), &tag, A::NAME);
    }
    let v: Value = A::execute(&conn, Call::new("query-version")).expect("query-version");
    assert_eq!(v["qemu"]["major"], major);
    // QEMU never saw half a command (that would have come back as an id-less parse error), and no reply
    // arrived for an id the client did not expect.
    let violations = A::take_violations(&conn);
    assert!(
        violations.is_empty(),
        "{} seed {seed}: {:?}",
        A::NAME,
        violations.iter().map(ProtocolViolation::to_string).collect::<Vec<_>>()
    );
    assert!(given_up > TASKS * CALLS_PER_TASK / 3, "{} seed {seed}: only {given_up} calls given up", A::NAME);
    eprintln!(
        "{} seed {seed}: {} calls from {TASKS} tasks in {took:?}: {completed} completed, {given_up} given up",
        A::NAME,
        TASKS * CALLS_PER_TASK
    );
    A::close(conn);
}
