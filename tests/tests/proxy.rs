//! The proxy (`qmp_async::proxy`) on tokio, against a real qemu-storage-daemon 10 and against our own server
//! flooding events: replies routed to their sender whatever the ids, the greeting and ids exactly as QEMU
//! writes them, events to every client, policy denials that never reach QEMU, a client killed mid-command,
//! QEMU killed, and a client that stops reading events disconnected while the others go on.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use qmp_async::proxy::{self, Policy, Profile, Proxy, ProxyOptions, Rule};
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use qmp_tokio::{Error, EventItem, Options, Qmp, Tokio};
use serde_json::{json, Value};

fn upstream_options() -> Options {
    // As `qmp proxy` connects: in-band commands without ids, QEMU's replies matched by order.
    Options::default().command_timeout(None).in_band_ids(false)
}

/// A proxy on `upstream` serving `listeners` (socket paths) until the test ends.
async fn start_proxy(upstream: &Path, policy: Policy, listeners: &[&Path]) -> Proxy<Tokio> {
    let qemu = Qmp::connect_unix(upstream, upstream_options()).await.expect("connect to QEMU");
    let proxy = Proxy::new(qemu, policy.validate().expect("valid policy"), ProxyOptions::default());
    for path in listeners {
        let serving = proxy::serve_unix(Tokio, &proxy, path).expect("bind");
        tokio::spawn(serving);
    }
    proxy
}

fn everyone() -> Policy {
    Policy::new(vec![Rule::new("all").profile(Profile::Full)])
}

fn qmp_error(result: Result<Value, Error>) -> (String, String) {
    match result {
        Err(Error::Qmp(e)) => (e.class, e.desc),
        other => panic!("expected a QMP error, got {other:?}"),
    }
}

/// A plain client: reads one CRLF line at a time.
struct Raw {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Raw { reader: BufReader::new(stream.try_clone().expect("clone")), stream }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read");
        line
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).expect("write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_with_colliding_ids_get_only_their_own_replies() {
    let server = require!(QemuServer::storage_daemon());
    let path = server.dir().join("proxy.sock");
    let proxy = start_proxy(server.socket_path(), everyone(), &[&path]).await;
    let clients: Vec<Qmp> = futures_lite::stream::iter(0..3)
        .then(|_| Qmp::connect_unix(&path, Options::default()))
        .map(|c| c.expect("client"))
        .collect()
        .await;
    assert_eq!(proxy.clients(), 3);
    let mut tasks = Vec::new();
    for (n, qmp) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Every client uses ids 1..=8 at once: they collide upstream unless the proxy rewrites them. Each
            // command's error names the client's own node, so a reply routed to the wrong client shows.
            for round in 0..25 {
                let calls = (0..8).map(|i| {
                    let qmp = qmp.clone();
                    let node = format!("c{n}-r{round}-i{i}");
                    async move { (node.clone(), qmp.execute::<Value>("blockdev-del", json!({"node-name": node})).await) }
                });
                for (node, result) in futures_util::future::join_all(calls).await {
                    let (class, desc) = qmp_error(result);
                    assert_eq!(class, "GenericError");
                    assert_eq!(desc, format!("Failed to find node with node-name='{node}'"));
                }
                let version: Value = qmp.execute("query-version", ()).await.expect("query-version");
                assert_eq!(version["qemu"]["major"], 10);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
}

/// qemu.qmp (Python): 25 rounds of 8 concurrent `blockdev-del` of nodes named after the client, each error
/// checked to name the client's own node; prints how many were right.
const PYTHON_CLIENT: &str = r#"
import asyncio, sys
from qemu.qmp import QMPClient, ExecuteError

async def main(path, name, rounds):
    qmp = QMPClient(name)
    await qmp.connect(path)
    async def one(i):
        node = f"{name}-{i}"
        try:
            await qmp.execute("blockdev-del", {"node-name": node})
        except ExecuteError as e:
            assert str(e) == f"Failed to find node with node-name='{node}'", str(e)
            return 1
        raise AssertionError("blockdev-del succeeded")
    ok = 0
    for r in range(rounds):
        ok += sum(await asyncio.gather(*(one(r * 8 + i) for i in range(8))))
    await qmp.disconnect()
    print(ok)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"#;

/// The virtualenv with qemu.qmp and qmp-shell (`QMP_TEST_PYTHON_VENV`, else the main tree's), if present.
fn python_venv() -> Option<std::path::PathBuf> {
    let venv: std::path::PathBuf =
        std::env::var_os("QMP_TEST_PYTHON_VENV").map_or_else(|| "/work/main/target/venv".into(), Into::into);
    if venv.join("bin/qmp-shell").exists() {
        return Some(venv);
    }
    assert!(std::env::var_os("QMP_TEST_REQUIRE_ALL").is_none(), "no Python venv with qemu.qmp at {}", venv.display());
    eprintln!("SKIPPED: no Python venv with qemu.qmp at {} (QMP_TEST_PYTHON_VENV)", venv.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_qmp_qmp_shell_and_ours_at_once() {
    use std::process::{Command, Stdio};
    let Some(venv) = python_venv() else { return };
    let server = require!(QemuServer::storage_daemon());
    let path = server.dir().join("proxy.sock");
    let _proxy = start_proxy(server.socket_path(), everyone(), &[&path]).await;
    let python = Command::new(venv.join("bin/python3"))
        .args(["-c", PYTHON_CLIENT])
        .arg(&path)
        .args(["py", "25"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    // qmp-shell reads commands from a pipe and sends them without ids.
    let mut shell = Command::new(venv.join("bin/qmp-shell"))
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qmp-shell");
    let mut stdin = shell.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for i in 0..200 {
            writeln!(stdin, "blockdev-del node-name=shell-{i}").expect("to qmp-shell");
        }
    });
    let ours = Qmp::connect_unix(&path, Options::default()).await.expect("ours");
    for round in 0..25 {
        let calls = (0..8).map(|i| {
            let (qmp, node) = (ours.clone(), format!("ours-{}", round * 8 + i));
            async move { (node.clone(), qmp.execute::<Value>("blockdev-del", json!({"node-name": node})).await) }
        });
        for (node, result) in futures_util::future::join_all(calls).await {
            assert_eq!(qmp_error(result).1, format!("Failed to find node with node-name='{node}'"));
        }
    }
    feeder.join().expect("feeder");
    let python = tokio::task::spawn_blocking(move || python.wait_with_output()).await.expect("join").expect("python");
    assert!(python.status.success(), "{}", String::from_utf8_lossy(&python.stderr));
    assert_eq!(String::from_utf8_lossy(&python.stdout).trim(), "200");
    let shell = tokio::task::spawn_blocking(move || shell.wait_with_output()).await.expect("join").expect("shell");
    let out = String::from_utf8_lossy(&shell.stdout);
    for i in 0..200 {
        let expected = format!("Failed to find node with node-name='shell-{i}'");
        assert_eq!(out.matches(&expected).count(), 1, "qmp-shell's reply {i} in:\n{out}");
    }
    assert_eq!(out.matches("Failed to find node").count(), 200, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_and_ids_come_back_exactly_as_qemu_writes_them() {
    let server = require!(QemuServer::storage_daemon_two_monitors());
    let path = server.dir().join("proxy.sock");
    let _proxy = start_proxy(server.socket_path(), everyone(), &[&path]).await;
    let second = server.second_monitor_path();
    let script = concat!(
        r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#,
        r#"{"execute":"query-version","id":{"a":[1,"x",null],"b":1.5}}"#,
        r#"{"execute":"query-version","id":1e3}"#,
        r#"{"execute":"query-version"}"#,
        r#"{"execute":"query-version","id":null}"#,
        r#"{"execute":"query-version","id":"caf\u00e9"}"#,
        r#"{"execute":"no-such-command","id":[7]}"#,
        r#"{"exec-oob":"query-version","id":"oob"}"#,
        r#"{"execute":"blockdev-del","arguments":{"node-name":"x"},"id":-3}"#,
        r#"{"execute":"qmp_capabilities","id":"again"}"#,
    );
    let transcript = |path: &Path| {
        let mut client = Raw::connect(path);
        let greeting = client.line();
        client.send(script);
        let replies: Vec<Value> = (0..9).map(|_| serde_json::from_str(&client.line()).expect("a JSON reply")).collect();
        // OOB overtakes in-band replies when it can: timing, not order, decides where it lands.
        let (oob, in_band): (Vec<Value>, Vec<Value>) = replies.into_iter().partition(|r| r["id"] == "oob");
        (greeting, in_band, oob)
    };
    let direct = tokio::task::spawn_blocking(move || transcript(&second)).await.expect("direct");
    let proxied = tokio::task::spawn_blocking(move || transcript(&path)).await.expect("proxied");
    assert_eq!(proxied.0, direct.0, "the greeting is QEMU's, byte for byte");
    assert_eq!(proxied.1, direct.1, "in-band replies in order, ids exactly as QEMU echoes them");
    assert_eq!(proxied.2, direct.2, "the OOB reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_events_reach_every_client_and_denied_commands_never_reach_qemu() {
    let server = require!(QemuServer::storage_daemon());
    let (admin_path, viewer_path) = (server.dir().join("admin.sock"), server.dir().join("viewer.sock"));
    let policy = Policy::new(vec![
        Rule::new("admin").listener(admin_path.display().to_string()).profile(Profile::Full),
        Rule::new("viewer").listener(viewer_path.display().to_string()).profile(Profile::ReadOnly),
    ]);
    let _proxy = start_proxy(server.socket_path(), policy, &[&admin_path, &viewer_path]).await;
    let admin = Qmp::connect_unix(&admin_path, Options::default()).await.expect("admin");
    let viewer = Qmp::connect_unix(&viewer_path, Options::default()).await.expect("viewer");
    let (mut admin_events, mut viewer_events) =
        (admin.events_named(&["JOB_STATUS_CHANGE"]), viewer.events_named(&["JOB_STATUS_CHANGE"]));

    let denied = viewer.execute::<Value>("blockdev-add", json!({"driver": "null-co", "node-name": "v0"})).await;
    assert_eq!(
        qmp_error(denied),
        ("GenericError".into(), "The command blockdev-add is denied by the proxy policy 'viewer'".into())
    );
    let nodes: Value = viewer.execute("query-named-block-nodes", ()).await.expect("a query is read-only");
    assert_eq!(nodes, json!([]), "the denied command never reached QEMU");

    let _: Value = admin
        .execute("blockdev-add", json!({"driver": "null-co", "node-name": "n0", "size": 1 << 20}))
        .await
        .expect("add");
    let create = json!({"job-id": "j1", "options": {"driver": "qcow2", "file": "n0", "size": 1 << 20}});
    let _: Value = admin.execute("blockdev-create", create).await.expect("create");
    for events in [&mut admin_events, &mut viewer_events] {
        let mut statuses = Vec::new();
        while statuses.last().map(String::as_str) != Some("concluded") {
            let item = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("in time");
            let Some(EventItem::Event(event)) = item else { panic!("{item:?}") };
            let data = event.data.expect("data").as_value().expect("json");
            assert_eq!(data["id"], "j1");
            statuses.push(data["status"].as_str().expect("status").to_owned());
        }
        assert_eq!(statuses[..2], ["created", "running"]);
    }
}

/// `n` commands sent at once through `qmp` (`blockdev-del` of nodes that do not exist: QEMU answers each with
/// an error, unless it goes away first), each awaited by its own task.
fn commands_in_flight(qmp: &Qmp, n: usize) -> Vec<tokio::task::JoinHandle<Result<Value, Error>>> {
    (0..n)
        .map(|i| {
            let qmp = qmp.clone();
            tokio::spawn(
                async move { qmp.execute::<Value>("blockdev-del", json!({"node-name": format!("n{i}")})).await },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_command_then_qemu_killed() {
    let mut server = require!(QemuServer::storage_daemon());
    let path = server.dir().join("proxy.sock");
    let proxy = start_proxy(server.socket_path(), everyone(), &[&path]).await;
    let survivor = Qmp::connect_unix(&path, Options::default()).await.expect("survivor");

    // A client sends eight commands and goes away before reading any reply: the replies are swallowed.
    let killed = path.clone();
    tokio::task::spawn_blocking(move || {
        let mut client = Raw::connect(&killed);
        client.line();
        client.send(r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#);
        for i in 0..8 {
            client.send(&format!(r#"{{"execute":"query-named-block-nodes","id":{i}}}"#));
        }
    })
    .await
    .expect("killed client");
    for _ in 0..50 {
        let version: Value = survivor.execute("query-version", ()).await.expect("the proxy goes on");
        assert_eq!(version["qemu"]["major"], 10);
    }

    // QEMU goes away with commands in flight: each ends with an error, then the client is closed.
    let calls = commands_in_flight(&survivor, 16);
    server.kill().expect("kill QEMU");
    for call in calls {
        match call.await.expect("task") {
            Err(Error::Qmp(e)) => assert_eq!(e.class, "GenericError", "{e:?}"),
            Err(Error::Connection(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    tokio::time::timeout(Duration::from_secs(5), survivor.closed()).await.expect("the client is closed");
    assert!(proxy.is_stopped());
}

/// Round trips of `client` until `over`, each answered with its own arguments (`echo`): how many ended while
/// the flood ran.
async fn echo_until(client: Qmp, who: &'static str, over: Arc<AtomicBool>) -> usize {
    let (mut n, mut during) = (0u64, 0);
    while !over.load(Ordering::SeqCst) {
        let sent = json!({"client": who, "n": n});
        let echoed: Value = client.execute("echo", &sent).await.expect("the client goes on during the flood");
        assert_eq!(echoed, sent, "every reply to its sender");
        during += usize::from(!over.load(Ordering::SeqCst));
        n += 1;
    }
    during
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_events_is_disconnected_and_the_others_go_on() {
    // What it shows is functional: the flood ends with every event at the client that reads, the client that
    // does not read is cut off with what it lost bounded, and clients that read, or take no events at all
    // (a rule with `events = []`), get their own replies all along. How fast they go during the flood, with and
    // without a stalled client, is the proxy bench's (bench/src/proxy_flood.rs): timing has no place here.
    use qmp_async::serve::{ServeOptions, ServerConfig, Service};
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, path, metrics) =
        (dir.path().join("fake.sock"), dir.path().join("proxy.sock"), dir.path().join("metrics.sock"));
    let service = Service::new(ServerConfig::qmp().version(10, 0, 2, "fake"))
        .command("echo", |req| async move { Ok(Value::Object(req.arguments.into_map())) });
    let (events, serving) = qmp_tokio::serve_unix(&fake, service, ServeOptions::default()).expect("fake upstream");
    tokio::spawn(serving);
    // The flood comes in bursts of 200 events, each sent once the reading client has received the one before:
    // however slow the machine, the fake upstream (which drops the oldest of more than 256 queued events) and a
    // client that reads never have more than 200 waiting, while a client that does not read is cut off once
    // 4,096 wait for it.
    let qemu = Qmp::connect_unix(&fake, upstream_options().event_buffer(1 << 17)).await.expect("connect");
    let policy = Policy::new(vec![
        Rule::new("metrics").listener(metrics.display().to_string()).allow(["echo"]).events(Vec::<String>::new()),
        Rule::new("all").profile(Profile::Full),
    ]);
    let proxy = Proxy::new(qemu, policy.validate().expect("valid"), ProxyOptions::default().event_queue(4096));
    for listener in [&path, &metrics] {
        tokio::spawn(proxy::serve_unix(Tokio, &proxy, listener).expect("bind"));
    }

    // The slow client negotiates, then never reads.
    let mut slow = Raw::connect(&path);
    slow.line();
    slow.send(r#"{"execute":"qmp_capabilities"}"#);
    assert_eq!(slow.line(), "{\"return\": {}}\r\n");
    let good = Qmp::connect_unix(&path, Options::default().event_buffer(1 << 17)).await.expect("good");
    let quiet = Qmp::connect_unix(&metrics, Options::default().event_buffer(1 << 17)).await.expect("metrics");
    let (received, lagged) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut good_events = good.events_named(&["FLOOD"]);
    let mut quiet_events = quiet.events();
    let (counter, lag_counter) = (received.clone(), lagged.clone());
    tokio::spawn(async move {
        while let Some(item) = good_events.next().await {
            match item {
                EventItem::Lagged(n) => lag_counter.fetch_add(n as usize, Ordering::SeqCst),
                _ => counter.fetch_add(1, Ordering::SeqCst),
            };
        }
    });
    let quiet_got = tokio::spawn(async move {
        let mut got = 0usize;
        while quiet_events.next().await.is_some() {
            got += 1;
        }
        got
    });

    let flood_over = Arc::new(AtomicBool::new(false));
    let over = flood_over.clone();
    let flood = tokio::task::spawn_blocking(move || {
        for n in 0..100_000 {
            while events.event("FLOOD", Some(json!({"n": n}))) == 0 {
                std::thread::yield_now();
            }
            if n % 200 == 199 {
                let burst = Instant::now();
                while received.load(Ordering::SeqCst) + lagged.load(Ordering::SeqCst) <= n {
                    assert!(burst.elapsed() < Duration::from_secs(30), "the reading client got {n} events late");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        over.store(true, Ordering::SeqCst);
        (received, lagged)
    });
    let (good_during, quiet_during) = tokio::join!(
        echo_until(good.clone(), "good", flood_over.clone()),
        echo_until(quiet.clone(), "metrics", flood_over.clone())
    );
    let (received, lagged) = flood.await.expect("the flood finished");
    eprintln!("round trips during the flood: {good_during} (takes the events), {quiet_during} (events = [])");
    assert_eq!(received.load(Ordering::SeqCst), 100_000, "the reading client got every event");
    assert_eq!(lagged.load(Ordering::SeqCst), 0, "and lost none");
    // Loose: a few round trips in however many seconds the flood took, on however loaded a machine.
    assert!(good_during >= 10 && quiet_during >= 10, "{good_during} and {quiet_during} round trips during the flood");
    assert!(proxy.clients() >= 2, "both other clients are still connected");

    // The slow client was cut off: what it reads ends (after what the kernel had buffered).
    let slow_end = tokio::task::spawn_blocking(move || {
        let mut sink = Vec::new();
        slow.stream.read_to_end(&mut sink).map(|_| sink.len())
    });
    let read = tokio::time::timeout(Duration::from_secs(10), slow_end).await.expect("EOF in time").expect("task");
    assert!(read.expect("read") < 4 << 20, "the slow client's backlog stays bounded");
    quiet.close().await;
    assert_eq!(quiet_got.await.expect("task"), 0, "a client under `events = []` gets no event");
}

/// A QEMU that greets (no capabilities), answers every command `{"return": {}}` with its id, and records every
/// byte its one client sends, returned once the client has closed its side.
fn recording_qemu(path: &Path) -> std::thread::JoinHandle<Vec<u8>> {
    struct Tee {
        stream: UnixStream,
        recorded: Vec<u8>,
    }
    impl Read for Tee {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.stream.read(buf)?;
            self.recorded.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        writer.write_all(&qmp_tests::fake_server::greeting((10, 0, 2), "", &[])).expect("greeting");
        let mut tee = Tee { stream, recorded: Vec::new() };
        // serde_json reads a reader byte by byte and stops at the end of each value: one command at a time.
        for command in serde_json::Deserializer::from_reader(&mut tee).into_iter::<Value>() {
            let Ok(command) = command else { break };
            let id = command.get("id").map(|id| format!(", \"id\": {id}")).unwrap_or_default();
            writer.write_all(format!("{{\"return\": {{}}{id}}}\r\n").as_bytes()).expect("reply");
        }
        tee.recorded
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_reads_the_same_bytes_through_the_proxy_as_from_a_direct_client() {
    // QEMU spends CPU on every byte it reads: through the proxy, a command must cost it no more than from our
    // own client with the upstream's options (in-band commands without ids, no empty arguments, no spaces),
    // whatever the proxy's client wrote.
    let dir = tempfile::tempdir().expect("tempdir");
    let (direct_qemu, proxied_qemu, listen) =
        (dir.path().join("direct.sock"), dir.path().join("proxied.sock"), dir.path().join("proxy.sock"));

    let recording = recording_qemu(&direct_qemu);
    let direct = Qmp::connect_unix(&direct_qemu, upstream_options()).await.expect("direct");
    let _: Value = direct.execute("query-version", json!({})).await.expect("query-version");
    let _: Value = direct.execute("block-job-set-speed", json!({"device": "j0", "speed": 0})).await.expect("speed");
    direct.close().await;
    let from_direct = recording.join().expect("direct recording");

    let recording = recording_qemu(&proxied_qemu);
    let proxy = start_proxy(&proxied_qemu, everyone(), &[&listen]).await;
    let client = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(&listen);
        raw.line();
        raw.send(r#"{ "execute": "qmp_capabilities", "id": "neg" }"#);
        assert_eq!(raw.line(), "{\"return\": {}, \"id\": \"neg\"}\r\n");
        raw.send(r#"{ "execute": "query-version", "arguments": {}, "id": {"mine": [1, 2]} }"#);
        assert_eq!(raw.line(), "{\"return\": {}, \"id\": {\"mine\": [1, 2]}}\r\n");
        raw.send(
            "{\"execute\":\"block-job-set-speed\",\n \"arguments\": { \"device\": \"j0\", \"speed\": 0 }, \"id\": 7}",
        );
        assert_eq!(raw.line(), "{\"return\": {}, \"id\": 7}\r\n");
    });
    client.await.expect("proxied client");
    proxy.upstream().close().await;
    let from_proxy = recording.join().expect("proxied recording");
    let expected = r#"{"execute":"qmp_capabilities","id":1}{"execute":"query-version"}"#.to_owned()
        + r#"{"execute":"block-job-set-speed","arguments":{"device":"j0","speed":0}}"#;
    assert_eq!(String::from_utf8_lossy(&from_direct), expected, "a direct client's bytes");
    assert_eq!(
        String::from_utf8_lossy(&from_proxy),
        String::from_utf8_lossy(&from_direct),
        "the proxy writes QEMU what a direct client writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_descriptor_reaches_qemu_with_its_command_and_no_other() {
    // qemu-storage-daemon has neither getfd nor add-fd: qemu-system-x86_64 (-M none) has both.
    let server = require!(QemuServer::system());
    let path = server.dir().join("proxy.sock");
    let _proxy = start_proxy(server.socket_path(), everyone(), &[&path]).await;
    let (passer, other) = (
        Qmp::connect_unix(&path, Options::default()).await.expect("passer"),
        Qmp::connect_unix(&path, Options::default()).await.expect("other"),
    );
    let file = tempfile::tempfile().expect("a file to pass");
    passer.send_fd("passed", &file).await.expect("getfd through the proxy");
    // QEMU filed it under that name: closefd finds it (once).
    let _: Value = other.execute("closefd", json!({"fdname": "passed"})).await.expect("QEMU has the descriptor");
    let (class, desc) = qmp_error(other.execute("closefd", json!({"fdname": "passed"})).await);
    assert_eq!((class.as_str(), desc.as_str()), ("GenericError", "File descriptor named 'passed' not found"));
    // A getfd without a descriptor of its own gets QEMU's error: no other command's descriptor leaked to it.
    passer.send_fd("second", &file).await.expect("second getfd");
    let (_, desc) = qmp_error(other.execute("getfd", json!({"fdname": "stolen"})).await);
    assert_eq!(desc, "No file descriptor supplied via SCM_RIGHTS");
    let info = passer.add_fd(&file, None, Some("proxied")).await.expect("add-fd through the proxy");
    let sets: Value = other.execute("query-fdsets", ()).await.expect("query-fdsets");
    let set = sets.as_array().expect("sets").iter().find(|s| s["fdset-id"] == info.fdset_id).expect("the new set");
    assert_eq!(set["fds"][0]["opaque"], "proxied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_the_client_byte_for_byte_as_qemu_wrote_them() {
    use qmp_test_kit::{Answer, FakeQemu, Script};
    // Members in an order no map would keep, QEMU's spacing nowhere: a re-encoding would show.
    let script = Script::new()
        .on("query-odd", Answer::json(r#"{"z":1,"a":{"y":2,"b":3}}"#).expect("valid JSON"))
        .on("query-float", Answer::json("[1.50, 1e3]").expect("valid JSON"))
        .on("fail", Answer::error("DeviceNotFound", "Device 'x' not found"));
    let fake = tokio::task::spawn_blocking(move || FakeQemu::start(script)).await.expect("join").expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.sock");
    let _proxy = start_proxy(fake.path(), everyone(), &[&path]).await;
    let lines = tokio::task::spawn_blocking(move || {
        let mut client = Raw::connect(&path);
        client.line();
        client.send(r#"{"execute":"qmp_capabilities"}"#);
        client.line();
        client.send(r#"{"execute":"query-odd","id":"mine"}{"execute":"query-float","id":{"n":[1e3]}}"#);
        client.send(r#"{"execute":"fail","id":5}{"execute":"query-odd"}"#);
        (0..4).map(|_| client.line()).collect::<Vec<_>>()
    })
    .await
    .expect("client");
    assert_eq!(lines[0], "{\"return\": {\"z\":1,\"a\":{\"y\":2,\"b\":3}}, \"id\": \"mine\"}\r\n");
    assert_eq!(lines[1], "{\"return\": [1.50, 1e3], \"id\": {\"n\": [1000]}}\r\n", "the id as QEMU echoes it");
    assert_eq!(
        lines[2],
        "{\"id\": 5, \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x' not found\"}}\r\n"
    );
    assert_eq!(lines[3], "{\"return\": {\"z\":1,\"a\":{\"y\":2,\"b\":3}}}\r\n", "no id, none restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_upstream() {
    use qmp_async::proxy::Upstream;
    let server = require!(QemuServer::storage_daemon_tcp());
    let address = server.tcp_monitor_address().expect("the TCP monitor's address");
    let upstream: Upstream = address.parse().expect("HOST:PORT");
    assert_eq!(upstream, Upstream::Tcp(address.clone()));
    let path = server.dir().join("proxy.sock");
    let proxy = Proxy::<Tokio>::connect(upstream, upstream_options(), everyone(), ProxyOptions::default())
        .await
        .expect("connect over TCP");
    tokio::spawn(proxy::serve_unix(Tokio, &proxy, &path).expect("bind"));
    let client = Qmp::connect_unix(&path, Options::default()).await.expect("client");
    let version: Value = client.execute("query-version", ()).await.expect("query-version");
    assert_eq!(version["qemu"]["major"], 10);
    assert!(client.oob_enabled(), "QEMU's TCP monitor offers OOB, and the proxy passes it on");
    let _: Value =
        client.execute("blockdev-add", json!({"driver": "null-co", "node-name": "t0"})).await.expect("blockdev-add");
    let nodes: Value = client.execute("query-named-block-nodes", ()).await.expect("query");
    assert_eq!(nodes[0]["node-name"], "t0");
    let (_, desc) = qmp_error(client.execute("blockdev-del", json!({"node-name": "none"})).await);
    assert_eq!(desc, "Failed to find node with node-name='none'");
}

/// Waits (up to 10 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_the_clients_while_qemu_is_away_then_reconnecting() {
    use qmp_async::proxy::{Upstream, UpstreamLoss};
    let mut first = require!(QemuServer::storage_daemon());
    // The QEMU that comes back is another version: the proxy must greet new clients with ITS version.
    let second = require!(QemuServer::storage_daemon_72());
    let socket = first.socket_path().to_owned();
    let path = first.dir().join("proxy.sock");
    let options = ProxyOptions::default()
        .on_upstream_loss(UpstreamLoss::Hold)
        .reconnect_delay(Duration::from_millis(10), Duration::from_millis(50));
    let proxy = Proxy::<Tokio>::connect(Upstream::Unix(socket.clone()), upstream_options(), everyone(), options)
        .await
        .expect("connect");
    tokio::spawn(proxy::serve_unix(Tokio, &proxy, &path).expect("bind"));
    let ours = Qmp::connect_unix(&path, Options::default()).await.expect("ours");
    let raw_path = path.clone();
    let mut raw = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(&raw_path);
        raw.line();
        raw.send(r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(raw.line(), "{\"return\": {}}\r\n");
        raw
    })
    .await
    .expect("raw client");

    // QEMU is killed with commands in flight: each ends with an error in QEMU's format; the clients stay.
    let calls = commands_in_flight(&ours, 16);
    first.kill().expect("kill QEMU");
    for call in calls {
        assert_eq!(qmp_error(call.await.expect("task")).0, "GenericError");
    }
    until("the proxy noticed", || !proxy.is_upstream_connected()).await;
    assert!(!proxy.is_stopped(), "the proxy holds its clients");
    let (class, desc) = qmp_error(ours.execute::<Value>("query-version", ()).await);
    assert_eq!(class, "GenericError");
    assert_eq!(desc, "QEMU is not connected: the proxy is reconnecting; query-version was not run");
    raw = tokio::task::spawn_blocking(move || {
        raw.send(r#"{"execute":"query-version","id":[7]}"#);
        assert_eq!(
            raw.line(),
            "{\"id\": [7], \"error\": {\"class\": \"GenericError\", \"desc\": \"QEMU is not connected: the proxy is \
             reconnecting; query-version was not run\"}}\r\n"
        );
        raw
    })
    .await
    .expect("raw client in the gap");

    // Another QEMU on the same socket path: the proxy reconnects, and the same client connections go on.
    std::fs::rename(second.socket_path(), &socket).expect("the new QEMU's socket at the old path");
    until("the proxy reconnected", || proxy.is_upstream_connected()).await;
    let version: Value = ours.execute("query-version", ()).await.expect("the same connection runs commands again");
    assert_eq!(version["qemu"]["major"], 7);
    let (_raw, line) = tokio::task::spawn_blocking(move || {
        raw.send(r#"{"execute":"query-version","id":8}"#);
        let line = raw.line();
        (raw, line)
    })
    .await
    .expect("raw client after");
    assert!(line.starts_with("{\"return\": {\"qemu\": {\"micro\": ") && line.ends_with(", \"id\": 8}\r\n"), "{line}");
    let late = Qmp::connect_unix(&path, Options::default()).await.expect("a new client");
    assert_eq!(late.greeting().version.as_ref().map(|v| v.major), Some(7), "the new QEMU's version in the greeting");
    assert_eq!(proxy.clients(), 3);
}
