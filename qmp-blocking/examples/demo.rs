//! The newcomer's demo: starts a real qemu-storage-daemon on a temporary socket, talks QMP to it, stops it.
//!
//! ```text
//! cargo run -p qmp-blocking --example demo
//! ```
//!
//! Shows the greeting and version, a few commands (one typed, one raw), events from a block job arriving
//! around its reply, and a typed server error. The binary is `$QMP_TEST_QSD`, else
//! `/usr/local/bin/qemu-storage-daemon-10` when present, else `qemu-storage-daemon` from `PATH`. Without any
//! (or with `QMP_DEMO_FAKE=1`), the demo talks to [`FakeQemu`] instead: our own server
//! (`qmp_proto::Server`) playing qemu-storage-daemon 10 in a thread, with a script for the block-job part.

use std::time::Duration;

use qmp_blocking::fake_qemu::{FakeQemu, Script};
use qmp_blocking::{Client, Error, Options};
use qmp_tests::servers::{QemuServer, StartError};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
struct VersionInfo {
    qemu: Triple,
    package: String,
}

#[derive(Debug, Deserialize)]
struct Triple {
    major: u32,
    minor: u32,
    micro: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A throwaway daemon on a socket in a fresh temporary directory, killed when `daemon` is dropped (the
    // workspace's test support starts it; any qemu-storage-daemon with a QMP monitor would do).
    let fake = std::env::var_os("QMP_DEMO_FAKE").is_some_and(|v| v == "1");
    let started = if fake { None } else { Some(QemuServer::storage_daemon()) };
    let _dir; // the fake's socket directory, removed at the end
    let (_daemon, socket) = match started {
        Some(Ok(daemon)) => {
            let socket = daemon.socket_path().to_owned();
            println!("started {} on {}", daemon.binary().display(), socket.display());
            (Some(daemon), socket)
        }
        Some(Err(StartError::Failed(failure))) => return Err(failure.into()),
        Some(Err(StartError::Unavailable(_))) | None => {
            let (dir, socket) = start_fake()?;
            _dir = dir;
            println!("no qemu-storage-daemon: talking to qmp-rs's fake QEMU on {}", socket.display());
            (None, socket)
        }
    };
    let mut qmp = Client::connect_unix(&socket, Options::default())?;
    let greeting = qmp.greeting();
    println!("greeting: QEMU {}, capabilities {:?}", greeting.version_string(), greeting.capabilities);
    println!("oob negotiated: {}", qmp.oob_enabled());

    // A typed reply.
    let v: VersionInfo = qmp.execute("query-version", ())?;
    println!("query-version: {}.{}.{} {}", v.qemu.major, v.qemu.minor, v.qemu.micro, v.package.trim());

    // An untyped one.
    let commands: Vec<Value> = qmp.execute("query-commands", ())?;
    println!("query-commands: {} commands", commands.len());

    // A block job: its events arrive around the reply and wait in the buffer.
    qmp.execute::<Value>("blockdev-add", json!({"driver": "null-co", "node-name": "disk0", "size": 1 << 20}))?;
    qmp.execute::<Value>(
        "blockdev-create",
        json!({"job-id": "job0", "options": {"driver": "qcow2", "file": "disk0", "size": 1 << 20}}),
    )?;
    println!("blockdev-create: job started (it will fail: a null-co node holds no qcow2 header)");
    while let Some(event) = qmp.next_event(Some(Duration::from_secs(2)))? {
        let status = event.data.as_ref().map(|d| d.to_string()).unwrap_or_default();
        let when = event.timestamp.map(|t| format!("{}.{:06}", t.seconds, t.microseconds)).unwrap_or_default();
        println!("event {when} {} {status}", event.name);
        if status.contains("\"concluded\"") {
            break;
        }
    }
    let jobs: Value = qmp.execute("query-jobs", ())?;
    println!("query-jobs: {jobs}");
    qmp.execute::<Value>("job-dismiss", json!({"id": "job0"}))?;

    // A typed server error: the session survives it.
    match qmp.execute::<Value>("no-such-command", ()) {
        Err(Error::Qmp(e)) => println!("typed error: class={} desc={:?}", e.class, e.desc),
        other => println!("unexpected: {other:?}"),
    }
    let status: Value = qmp.execute("query-block-jobs", ())?;
    println!("still connected: query-block-jobs = {status}");

    // quit: the reply, then the server closes the socket.
    qmp.execute::<Value>("quit", ())?;
    loop {
        match qmp.next_event(Some(Duration::from_secs(5))) {
            Ok(Some(event)) => println!("event {} {:?}", event.name, event.data),
            Ok(None) => println!("no EOF after 5 s?"),
            Err(Error::Connection(cause)) => {
                println!("after quit: {cause}");
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Starts [`FakeQemu`] on a socket in a fresh temporary directory, in a thread, with canned answers for the
/// block-job part of the demo (a real daemon really runs the job).
fn start_fake() -> Result<(RemoveOnDrop, std::path::PathBuf), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("qmp-demo-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("qmp.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket)?;
    let job = |status: &str| json!({"event": "JOB_STATUS_CHANGE", "data": {"status": status, "id": "job0"}});
    let script = Script::from_json(
        &json!({
            "blockdev-add": {"return": {}},
            "blockdev-create": {"return": {}, "events": [job("created"), job("running"), job("concluded")]},
            "query-jobs": {"return": [{"id": "job0", "type": "create", "status": "concluded",
                                        "current-progress": 1, "total-progress": 1,
                                        "error": "Could not write qcow2 header: Invalid argument"}]},
            "job-dismiss": {"return": {}, "events": [job("null")]},
            "query-block-jobs": {"return": []},
        })
        .to_string(),
    )?;
    let mut fake = FakeQemu::new().with_script(script);
    std::thread::spawn(move || qmp_blocking::serve::serve_listener(&listener, &mut fake));
    Ok((RemoveOnDrop(dir), socket))
}

/// A directory removed when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
