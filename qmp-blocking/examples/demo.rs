//! The newcomer's demo: starts a real qemu-storage-daemon on a temporary socket, talks QMP to it, stops it.
//!
//! ```text
//! cargo run -p qmp-blocking --example demo
//! ```
//!
//! Shows the greeting and version, a few commands (one typed, one raw), events from a block job arriving
//! around its reply, and a typed server error. The binary is `$QMP_DEMO_QSD`, else
//! `/usr/local/bin/qemu-storage-daemon-10` when present, else `qemu-storage-daemon` from `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qmp_blocking::{Client, Error, Options};
use serde::Deserialize;
use serde_json::{json, Value};

/// The daemon, killed and its socket removed when dropped.
struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_daemon() -> Result<(Daemon, PathBuf), Box<dyn std::error::Error>> {
    let binary = std::env::var("QMP_DEMO_QSD").unwrap_or_else(|_| {
        let v10 = "/usr/local/bin/qemu-storage-daemon-10";
        if Path::new(v10).exists() {
            v10.into()
        } else {
            "qemu-storage-daemon".into()
        }
    });
    let dir = std::env::temp_dir().join(format!("qmp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("qmp.sock");
    let child = Command::new(&binary)
        .arg("--chardev")
        .arg(format!("socket,path={},server=on,wait=off,id=c0", socket.display()))
        .args(["--monitor", "chardev=c0"])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {binary}: {e} (is qemu-utils installed?)"))?;
    let daemon = Daemon { child, dir };
    let start = Instant::now();
    while !socket.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("{binary} did not create its socket within 10 s").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("started {binary} on {}", socket.display());
    Ok((daemon, socket))
}

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
    let (_daemon, socket) = start_daemon()?;
    let mut qmp = Client::connect_unix(&socket, Options::default())?;
    let greeting = qmp.greeting();
    println!("greeting: QEMU {}, capabilities {:?}", greeting.version, greeting.capabilities);
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
