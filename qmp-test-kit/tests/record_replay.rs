//! Record and replay: a session of our client with a real qemu-storage-daemon 10, recorded through the proxy,
//! replayed to the same client code (blocking, and tokio) with the same results; corpus transcripts replayed
//! byte for byte.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qmp_proto::adapter::{Error, Options};
use qmp_test_kit::{RecordingProxy, ReplayError, ReplayServer, Step, Transcript};
use qmp_tests::servers::{available, QemuServer};
use serde_json::{json, Value};

/// The client code under test: a few commands, one of them refused; what it saw, as text.
fn blocking_session(path: &Path) -> Vec<String> {
    let mut qmp = qmp_blocking::Client::connect_unix(path, Options::default()).unwrap();
    let mut seen = vec![format!("{:?}", qmp.greeting().version)];
    let mut run = |command: &str, args: Value| {
        let result: Result<Value, Error> = qmp.execute(command, args);
        seen.push(describe(result));
    };
    run("query-version", json!({}));
    run("blockdev-add", json!({"driver": "null-co", "node-name": "n0", "size": 1048576}));
    run("query-named-block-nodes", json!({"flat": true}));
    run("blockdev-add", json!({"driver": "null-co", "node-name": "n0"}));
    run("no-such-command", json!({}));
    run("blockdev-del", json!({"node-name": "n0"}));
    seen
}

/// The same client code on tokio.
async fn tokio_session(path: &Path) -> Vec<String> {
    let qmp = qmp_tokio::Qmp::connect_unix(path, Options::default()).await.unwrap();
    let mut seen = vec![format!("{:?}", qmp.greeting().version)];
    for (command, args) in [
        ("query-version", json!({})),
        ("blockdev-add", json!({"driver": "null-co", "node-name": "n0", "size": 1048576})),
        ("query-named-block-nodes", json!({"flat": true})),
        ("blockdev-add", json!({"driver": "null-co", "node-name": "n0"})),
        ("no-such-command", json!({})),
        ("blockdev-del", json!({"node-name": "n0"})),
    ] {
        seen.push(describe(qmp.execute::<Value>(command, args).await));
    }
    qmp.close().await;
    seen
}

fn describe(result: Result<Value, Error>) -> String {
    match result {
        Ok(value) => value.to_string(),
        Err(Error::Qmp(e)) => format!("{}: {}", e.class, e.desc),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn a_real_session_recorded_then_replayed_gives_the_same_results() {
    let Some(qsd) = available(QemuServer::storage_daemon()) else { return };
    let proxy = RecordingProxy::start(qsd.socket_path(), "qemu-storage-daemon 10").unwrap();
    let live = blocking_session(proxy.path());
    let transcript = proxy.finish().unwrap();
    assert!(live[4].starts_with("GenericError: Duplicate nodes with node-name='n0'"), "{live:?}");
    assert_eq!(live[5], "CommandNotFound: The command no-such-command has not been found");
    // The greeting, then negotiation and six commands, each a write and its answer.
    assert_eq!(transcript.steps.len(), 15, "{transcript:?}");
    // Through the file format and back.
    let transcript = Transcript::from_json(&transcript.to_json()).unwrap();
    if let Some(path) = std::env::var_os("QMP_TEST_KIT_SAVE_TRANSCRIPT") {
        transcript.save(path).unwrap();
    }

    let replay = ReplayServer::start(transcript.clone()).unwrap();
    assert_eq!(blocking_session(replay.path()), live);
    replay.finish().unwrap();

    let replay = ReplayServer::start(transcript.clone()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert_eq!(rt.block_on(tokio_session(replay.path())), live);
    replay.finish().unwrap();

    // A client that sends something else is caught at the first differing byte.
    let replay = ReplayServer::start(transcript).unwrap();
    let mut qmp = qmp_blocking::Client::connect_unix(replay.path(), Options::default()).unwrap();
    let changed = qmp.execute_with_timeout::<Value>("query-status", (), Some(Duration::from_secs(5)));
    assert!(matches!(changed, Err(Error::Connection(_))), "{changed:?}");
    drop(qmp);
    match replay.finish() {
        Err(ReplayError::Mismatch(m)) => {
            assert_eq!(m.step, 3, "{m}");
            assert!(String::from_utf8_lossy(&m.got).starts_with("status\""), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

fn corpus_dir() -> PathBuf {
    let default = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")).to_path_buf();
    match std::env::var_os("QMP_CORPUS_DIR") {
        _ if default.is_dir() => default,
        Some(dir) => PathBuf::from(dir),
        None => panic!("corpus not found at {}; set QMP_CORPUS_DIR", default.display()),
    }
}

/// Plays the client's side of `transcript` over a socket, write by write as recorded, and checks that every
/// byte the replay sends is the recorded server's.
fn play_client_side(path: &Path, transcript: &Transcript) {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for step in &transcript.steps {
        match step {
            Step::Send(bytes) => stream.write_all(bytes).unwrap(),
            Step::Recv(expected) => {
                let mut got = vec![0u8; expected.len()];
                stream.read_exact(&mut got).unwrap();
                assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
            }
        }
    }
}

#[test]
fn corpus_transcripts_replay_byte_for_byte() {
    let names = [
        "qsd-negotiation.json",
        "qsd-command-errors.json",
        "qsd-id-types.json",
        "qsd-idless-errors.json",
        "qsd-pipelined.json",
        "qsd-events-block-jobs.json",
        "qsd-pretty.json",
        "qsys-oob.json",
        "qga-sync.json",
    ];
    for name in names {
        let transcript = Transcript::load(corpus_dir().join(name)).unwrap();
        let replay = ReplayServer::start(transcript.clone()).unwrap();
        play_client_side(replay.path(), &transcript);
        replay.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
