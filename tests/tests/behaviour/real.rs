//! Scenarios against real servers started by the tests: qemu-storage-daemon (10; 7.2 where it is the only one:
//! the `qsd10_` scenarios check what the server announces, not a fixed version), `qemu-system-x86_64 -M none`
//! (with and without OOB, and with a pretty-printing monitor) and qemu-ga.
//!
//! The happy-path scenarios generic over a [`Peer`] run against our own server too (see `peers.rs`): they
//! assert only what a correct QMP server shows, whoever wrote it.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qmp_proto::{ConnectionError, UsageError};
use qmp_tests::require;
use qmp_tests::servers::{self, QemuServer, ServerKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::harness::{assert_echo, echo, finished, Adapter, Call, Failure, Next, SuiteOpts};
use crate::peers::Peer;

#[derive(Debug, Deserialize)]
struct VersionTriple {
    major: u64,
    minor: u64,
    micro: u64,
}

#[derive(Debug, Deserialize)]
struct VersionInfo {
    qemu: VersionTriple,
    package: String,
}

/// The next item of `sub`, which must be an event that has already arrived (zero wait), or arrives within `wait`.
#[track_caller]
fn expect_event<A: Adapter>(conn: &A::Conn, sub: &mut A::Sub, wait: Duration, context: &str) -> qmp_proto::ServerEvent {
    match A::next_event(conn, sub, wait) {
        Next::Event(ev) => ev,
        other => panic!("{}: {context}: expected an event, got {other:?}", A::NAME),
    }
}

/// query-version, typed, agrees with the greeting; a server error is a value and the session goes on.
pub fn qsd10_query_version_typed<A: Adapter, P: Peer>() {
    let Some(server) = P::start(ServerKind::StorageDaemon) else { return };
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let greeting = A::greeting(&conn);
    assert!(greeting.capabilities.iter().any(|c| c == "oob"), "{greeting:?}");
    assert!(A::oob_enabled(&conn), "oob is negotiated when offered");
    let v: VersionInfo = A::execute(&conn, Call::new("query-version")).expect("query-version");
    assert_eq!(
        (v.qemu.major, v.qemu.minor, v.qemu.micro),
        (
            greeting.version.as_ref().expect("the greeting\'s version").major,
            greeting.version.as_ref().expect("the greeting\'s version").minor,
            greeting.version.as_ref().expect("the greeting\'s version").micro
        )
    );
    assert_eq!(v.package.trim(), greeting.version.as_ref().expect("the greeting\'s version").package.trim());
    assert_echo(&A::execute::<Value>(&conn, echo("qsd10")), "qsd10", A::NAME);
    // A reply that does not fit the requested type is the caller's problem, not the session's.
    assert!(matches!(A::execute::<Vec<String>>(&conn, Call::new("query-version")), Err(Failure::Other(_))));
    let v: VersionInfo = A::execute(&conn, Call::new("query-version")).expect("the session goes on");
    assert_eq!(v.qemu.major, greeting.version.as_ref().expect("the greeting\'s version").major);
    assert!(A::take_violations(&conn).is_empty());
    A::close(conn);
}

/// A block job's events arrive between the command and its reply, and after it; the adapter delivers both, in
/// order, and the reply reaches its caller (QEMU writes `created` and `running` before the blockdev-create reply,
/// and the `null` event before the job-dismiss reply).
pub fn qsd10_events_interleaved_with_replies<A: Adapter>() {
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let mut sub = A::subscribe(&conn);
    let added: Value = A::execute(
        &conn,
        Call::new("blockdev-add").args(json!({"driver": "null-co", "node-name": "null0", "size": 64 << 20})),
    )
    .expect("blockdev-add");
    assert_eq!(added, json!({}));
    let created: Value = A::execute(
        &conn,
        Call::new("blockdev-create")
            .args(json!({"job-id": "j1", "options": {"driver": "qcow2", "file": "null0", "size": 16 << 20}})),
    )
    .expect("blockdev-create");
    assert_eq!(created, json!({}));
    let status = |ev: &qmp_proto::ServerEvent| -> String {
        assert_eq!(ev.name, "JOB_STATUS_CHANGE", "{ev:?}");
        let data: Value = ev.data.as_ref().expect("event data").deserialize().expect("data parses");
        assert_eq!(data["id"], "j1", "{data}");
        data["status"].as_str().expect("status").to_owned()
    };
    // Already here when the reply is: they came before it.
    for expected in ["created", "running"] {
        let ev = expect_event::<A>(&conn, &mut sub, Duration::ZERO, "an event written before the reply");
        assert_eq!(status(&ev), expected);
        assert!(ev.timestamp.and_then(|t| t.to_system_time()).is_some(), "{ev:?}");
    }
    // The job fails (a null-co node reads back no qcow2 header) after the reply.
    for expected in ["aborting", "concluded"] {
        let ev = expect_event::<A>(&conn, &mut sub, Duration::from_secs(10), "a job event after the reply");
        assert_eq!(status(&ev), expected);
    }
    let jobs: Vec<Value> = A::execute(&conn, Call::new("query-jobs")).expect("query-jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["status"], "concluded");
    assert!(jobs[0]["error"].is_string(), "{jobs:?}");
    let _: Value = A::execute(&conn, Call::new("job-dismiss").args(json!({"id": "j1"}))).expect("job-dismiss");
    assert_eq!(status(&expect_event::<A>(&conn, &mut sub, Duration::ZERO, "job-dismiss's event")), "null");
    assert!(matches!(A::next_event(&conn, &mut sub, Duration::from_millis(50)), Next::Quiet));
    let jobs: Vec<Value> = A::execute(&conn, Call::new("query-jobs")).expect("query-jobs");
    assert!(jobs.is_empty(), "{jobs:?}");
    assert!(A::take_violations(&conn).is_empty());
    A::close(conn);
}

/// Many tasks (threads for `qmp-blocking`) issue commands at once on one connection; every reply reaches its
/// caller: each command is unknown to QEMU and its error names the task and call that sent it.
pub fn qsd10_many_tasks_every_reply_to_its_caller<A: Adapter, P: Peer>() {
    const TASKS: usize = 24;
    const CALLS: usize = 25;
    let Some(server) = P::start(ServerKind::StorageDaemon) else { return };
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let major = A::greeting(&conn).version.as_ref().expect("the greeting's version").major;
    let plans: Vec<Vec<Call>> = (0..TASKS)
        .map(|task| {
            (0..CALLS)
                .map(|i| if i % 6 == 5 { Call::new("query-version") } else { echo(&format!("t{task}-c{i}")) })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let results = A::tasks(&conn, plans);
    let took = started.elapsed();
    assert_eq!(results.len(), TASKS);
    let mut order = Vec::new();
    for (task, done) in results.iter().enumerate() {
        assert_eq!(done.len(), CALLS);
        for (i, d) in done.iter().enumerate() {
            order.push(d.finished);
            if i % 6 == 5 {
                let v = finished(d).as_ref().expect("query-version");
                assert_eq!(v["qemu"]["major"], major);
            } else {
                assert_echo(finished(d), &format!("t{task}-c{i}"), A::NAME);
            }
        }
    }
    order.sort_unstable();
    assert_eq!(order, (0..TASKS * CALLS).collect::<Vec<_>>(), "every call ended exactly once");
    assert!(A::take_violations(&conn).is_empty());
    eprintln!("{} against {}: {} calls from {TASKS} tasks in {took:?}", A::NAME, P::NAME, TASKS * CALLS);
    A::close(conn);
}

/// With OOB negotiated, `exec-oob` works for the commands that allow it, is refused for the others, and an OOB
/// command overtakes slow in-band ones queued before it (`query-qmp-schema`, ~100 KB each, against
/// `query-yank`): it is not the last to finish.
pub fn qsys_oob_overtakes_in_band<A: Adapter, P: Peer>() {
    let Some(server) = P::start(ServerKind::System) else { return };
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    assert!(A::oob_enabled(&conn));
    let yank: Value = A::execute(&conn, Call::new("query-yank").oob()).expect("OOB query-yank");
    assert!(yank.is_array(), "{yank}");
    match A::execute::<Value>(&conn, Call::new("query-version").oob()) {
        Err(Failure::Qmp(e)) => assert!(e.desc.contains("does not support OOB"), "{e}"),
        other => panic!("{other:?}"),
    }
    let mut calls: Vec<Call> = (0..6).map(|_| Call::new("query-qmp-schema")).collect();
    calls.push(Call::new("query-yank").oob());
    let done = A::pipelined(&conn, calls);
    for d in &done[..6] {
        let schema = finished(d).as_ref().expect("schema");
        assert!(schema.as_array().is_some_and(|s| s.len() > 100), "a schema");
    }
    assert!(finished(&done[6]).as_ref().expect("OOB query-yank").is_array());
    let oob_place = done[6].finished;
    if A::PIPELINES {
        assert!(
            oob_place < 6,
            "{} against {}: the OOB command did not overtake (finished {oob_place} of 7)",
            A::NAME,
            P::NAME
        );
    } else {
        // The in-band commands were on the wire while the OOB call waited, and every reply was routed; but a
        // blocking caller sees replies in the order it waits for them, so the overtaking itself is not visible.
        eprintln!("NOTE: {}: OOB overtaking is not observable through a blocking API; replies checked only", A::NAME);
    }
    assert!(A::take_violations(&conn).is_empty());
    A::close(conn);
}

/// With OOB not enabled, `exec-oob` is refused by the client as a usage error (nothing sent) and the session
/// is fine.
pub fn qsys_without_oob_exec_oob_is_a_usage_error<A: Adapter, P: Peer>() {
    let Some(server) = P::start(ServerKind::System) else { return };
    let conn = A::connect(server.socket_path(), &SuiteOpts::default().oob(false)).expect("connect");
    assert!(A::greeting(&conn).capabilities.iter().any(|c| c == "oob"), "offered");
    assert!(!A::oob_enabled(&conn), "but not enabled");
    match A::execute::<Value>(&conn, Call::new("query-yank").oob()) {
        Err(Failure::Usage(UsageError::OobNotNegotiated)) => {}
        other => panic!("{}: {other:?}", A::NAME),
    }
    let yank: Value = A::execute(&conn, Call::new("query-yank")).expect("in-band query-yank");
    assert!(yank.is_array());
    assert_echo(&A::execute::<Value>(&conn, echo("no-oob")), "no-oob", A::NAME);
    assert!(A::take_violations(&conn).is_empty(), "QEMU never saw an exec-oob");
    A::close(conn);
}

/// A pretty-printing monitor (every message over many lines): commands, errors and events before replies.
/// (Our server plays it without pretty-printing: commands, errors and events before replies.)
pub fn qsys_pretty_monitor<A: Adapter, P: Peer>() {
    let Some(server) = P::start(ServerKind::SystemPretty) else { return };
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let v: VersionInfo = A::execute(&conn, Call::new("query-version")).expect("query-version");
    assert_eq!(v.qemu.major, A::greeting(&conn).version.as_ref().expect("the greeting\'s version").major);
    assert_echo(&A::execute::<Value>(&conn, echo("pretty")), "pretty", A::NAME);
    let mut sub = A::subscribe(&conn);
    for (command, event) in [("stop", "STOP"), ("cont", "RESUME"), ("stop", "STOP"), ("cont", "RESUME")] {
        let ret: Value = A::execute(&conn, Call::new(command)).expect(command);
        assert_eq!(ret, json!({}));
        // QEMU writes a command's own event before its reply.
        assert_eq!(expect_event::<A>(&conn, &mut sub, Duration::ZERO, command).name, event);
    }
    assert!(A::take_violations(&conn).is_empty());
    A::close(conn);
}

/// qemu-ga: synchronised on connect (past a previous client's half-written command, which leaves the agent's
/// parser stuck until the sync resets it), then guest-info, guest-ping, guest-sync; qmp_capabilities is unknown
/// there. Every reply was read, so the agent survives the close and the next client synchronises too.
pub fn qga_sync_info_ping<A: Adapter>() {
    let server = require!(QemuServer::guest_agent());
    {
        // Only a half command: a complete one left unanswered would make qemu-ga 7.2 exit (see qmp_tests::servers).
        use std::io::Write;
        let mut crashed = server.connect().expect("raw connect");
        crashed.write_all(br#"{"execute":"guest-in"#).expect("write");
    }
    // Right after a client leaves, the agent's listen backlog can be full for a moment: connecting waits for room
    // (connect_waits_while_the_backlog_is_full checks that deterministically).
    let agent = A::agent_connect(server.socket_path(), &SuiteOpts::default()).expect("connect and sync");
    let pong: Value = A::agent_execute(&agent, Call::new("guest-ping")).expect("guest-ping");
    assert_eq!(pong, json!({}));
    let info: Value = A::agent_execute(&agent, Call::new("guest-info")).expect("guest-info");
    assert!(info["version"].as_str().is_some_and(|v| v.starts_with('7')), "{info}");
    let commands = info["supported_commands"].as_array().expect("supported_commands");
    assert!(commands.iter().any(|c| c["name"] == "guest-ping" && c["enabled"] == true), "{info}");
    let echoed: u64 = A::agent_execute(&agent, Call::new("guest-sync").args(json!({"id": 4242}))).expect("guest-sync");
    assert_eq!(echoed, 4242);
    match A::agent_execute::<Value>(&agent, Call::new("qmp_capabilities")) {
        Err(Failure::Qmp(e)) => assert_eq!(e.class, "CommandNotFound", "{e}"),
        other => panic!("{other:?}"),
    }
    A::agent_close(agent);
    let again = A::agent_connect(server.socket_path(), &SuiteOpts::default()).expect("reconnect");
    let t: i64 = A::agent_execute(&again, Call::new("guest-get-time")).expect("guest-get-time");
    assert!(t > 1_600_000_000_000_000_000, "{t}");
    A::agent_close(again);
}

/// The agent's power commands (answered only when they fail) come back as the agent's error when it refuses
/// them (here: disabled with `-b`), at once, not after the grace period; the agent stays up and the next
/// command works. (Their success, the agent going away or staying silent, is covered against the scripted peer:
/// a real one would shut this host down.)
pub fn qga_power_commands_refused_are_errors<A: Adapter>() {
    let server = require!(QemuServer::guest_agent_power_disabled());
    let agent = A::agent_connect(server.socket_path(), &SuiteOpts::default()).expect("connect and sync");
    for command in qmp_tests::servers::POWER_COMMANDS {
        let args = if command == "guest-shutdown" { json!({"mode": "powerdown"}) } else { Value::Null };
        let started = Instant::now();
        match A::agent_execute::<Value>(&agent, Call::new(command).args(args)) {
            Err(Failure::Qmp(e)) => {
                assert_eq!(e.class, "CommandNotFound", "{}: {command}: {e}", A::NAME);
                assert_eq!(e.desc, format!("Command {command} has been disabled"), "{}", A::NAME);
            }
            other => panic!("{}: {command}: {other:?}", A::NAME),
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{command}: the refusal ends the call, not the grace");
    }
    let pong: Value = A::agent_execute(&agent, Call::new("guest-ping")).expect("the agent is still there");
    assert_eq!(pong, json!({}));
    A::agent_close(agent);
}

/// `qemu-system-x86_64 -M none` with `extra` arguments, its stderr discarded.
fn system_command(binary: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command.args(["-M", "none", "-display", "none", "-nodefaults"]).args(extra).stderr(Stdio::null());
    command
}

/// A session that ends with `quit`: the reply, then the end of the stream, then the process exits cleanly.
fn query_then_quit<A: Adapter>(conn: A::Conn, child: &mut Child, how: &str) {
    assert_eq!(A::greeting(&conn).version.as_ref().map(|v| v.major), Some(7), "{}: {how}", A::NAME);
    let v: VersionInfo = A::execute(&conn, Call::new("query-version")).expect("query-version");
    assert_eq!(v.qemu.major, 7);
    let _: Value = A::execute(&conn, Call::new("quit")).expect("quit");
    assert_eq!(A::closed(&conn, Duration::from_secs(10)), Some(ConnectionError::Eof), "{}: {how}", A::NAME);
    A::close(conn);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{}: {how}: {status}", A::NAME);
}

/// A QEMU started by the adapter with its monitor on stdio (`-qmp stdio`).
pub fn qsys_monitor_on_stdio<A: Adapter>() {
    let Some(binary) = servers::locate_or_skip(ServerKind::System) else { return };
    let command = system_command(&binary, &["-qmp", "stdio"]);
    let (mut child, conn) = A::spawn_stdio(command, &SuiteOpts::default()).expect("spawn with the monitor on stdio");
    query_then_quit::<A>(conn, &mut child, "-qmp stdio");
}

/// A QEMU whose monitor is on two FIFOs (`-qmp pipe:NAME`: it reads `NAME.in` and writes `NAME.out`).
pub fn qsys_monitor_on_fifos<A: Adapter>() {
    let Some(binary) = servers::locate_or_skip(ServerKind::System) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("monitor");
    let (fifo_in, fifo_out) = (base.with_extension("in"), base.with_extension("out"));
    for fifo in [&fifo_in, &fifo_out] {
        let mode = rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR;
        rustix::fs::mknodat(rustix::fs::CWD, fifo, rustix::fs::FileType::Fifo, mode, 0).expect("mkfifo");
    }
    let pipe_arg = format!("pipe:{}", base.display());
    let mut child = system_command(&binary, &["-qmp", &pipe_arg]).stdin(Stdio::null()).spawn().expect("spawn");
    // Opening a FIFO waits for the other end: QEMU opens both of its ends read-write as it starts.
    let (opened_tx, opened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let read = std::fs::File::open(&fifo_out).map(OwnedFd::from);
        let write = std::fs::OpenOptions::new().write(true).open(&fifo_in).map(OwnedFd::from);
        let _ = opened_tx.send(read.and_then(|r| write.map(|w| (r, w))));
    });
    let (read, write) = opened.recv_timeout(Duration::from_secs(20)).expect("QEMU opened its FIFOs").expect("open");
    let conn = A::connect_pipes(read, write, &SuiteOpts::default()).expect("connect over the FIFOs");
    query_then_quit::<A>(conn, &mut child, "-qmp pipe:");
}

/// Closing while a reply is still on its way (its caller gave up): the adapter shuts its write half and reads
/// until the agent closes too, so the kernel never resets the connection, and qemu-ga 7.2 (which exits on such a
/// reset) is still there for the next client. Async adapters only: a blocking `close` hands the stream back.
pub fn qga_close_with_a_reply_unread_keeps_the_agent<A: Adapter>() {
    let server = require!(QemuServer::guest_agent());
    for round in 0..3 {
        let agent = A::agent_connect(server.socket_path(), &SuiteOpts::default()).expect("connect and sync");
        A::agent_give_up(&agent, Call::new("guest-info"));
        A::agent_close(agent);
        assert!(
            std::path::Path::new(&format!("/proc/{}", server.pid())).exists(),
            "{}: round {round}: the agent exited",
            A::NAME
        );
    }
    let agent = A::agent_connect(server.socket_path(), &SuiteOpts::default()).expect("the agent is still there");
    let pong: Value = A::agent_execute(&agent, Call::new("guest-ping")).expect("guest-ping");
    assert_eq!(pong, json!({}));
    A::agent_close(agent);
}

/// QEMU greets a second client only once the first has gone: the second one's connect timeout fires
/// (GreetingTimeout), the first is unaffected, and after it leaves a new client connects at once.
pub fn second_client_gets_no_greeting<A: Adapter, P: Peer>() {
    let Some(server) = P::start(ServerKind::StorageDaemon) else { return };
    let first = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let started = Instant::now();
    let second = A::connect(server.socket_path(), &SuiteOpts::default().connect_timeout(Duration::from_millis(300)));
    let took = started.elapsed();
    match second {
        Err(Failure::Disconnected(ConnectionError::GreetingTimeout)) => {}
        Err(other) => panic!("{}: expected GreetingTimeout, got {other:?}", A::NAME),
        Ok(_) => panic!("{}: a second client was greeted", A::NAME),
    }
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_echo(&A::execute::<Value>(&first, echo("first")), "first", "the first client is unaffected");
    A::close(first);
    let third = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect after the first left");
    let _: Value = A::execute(&third, Call::new("query-version")).expect("query-version");
    A::close(third);
}
