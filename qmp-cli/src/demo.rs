//! `qmp demo`: starts a throwaway qemu-storage-daemon and plays a short scripted shell session against it.
//!
//! The daemon is `$QMP_DEMO_QSD`, else `/usr/local/bin/qemu-storage-daemon-10` when present, else
//! `qemu-storage-daemon` from `PATH`; it runs on a socket in a fresh temporary directory and is killed at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::output::{emit, event_json, print_value, Failure};
use crate::session::{Session, Target};

/// The lines the demo "types", as a user of `qmp shell` would.
const SCRIPT: &[&str] = &[
    "query-version",
    "blockdev-add driver=null-co node-name=disk0 size=1048576",
    "query-named-block-nodes flat=true",
    "blockdev-create job-id=job0 options.driver=qcow2 options.file=disk0 options.size=1048576",
    "query-jobs",
    "job-dismiss id=job0",
    "no-such-command",
    "quit",
];

/// A child process killed, and its directory removed, on drop.
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

fn daemon_binary() -> String {
    if let Ok(path) = std::env::var("QMP_DEMO_QSD") {
        return path;
    }
    let v10 = "/usr/local/bin/qemu-storage-daemon-10";
    if Path::new(v10).exists() {
        v10.into()
    } else {
        "qemu-storage-daemon".into()
    }
}

fn start(binary: &str, timeout: Duration) -> Result<(Daemon, PathBuf), Failure> {
    let dir = std::env::temp_dir().join(format!("qmp-cli-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Failure::Connection(format!("{}: {e}", dir.display())))?;
    let socket = dir.join("qmp.sock");
    let chardev = format!("socket,path={},server=on,wait=off,id=c0", socket.display());
    let child = Command::new(binary)
        .args(["--chardev", &chardev, "--monitor", "chardev=c0"])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Failure::Connection(format!("cannot start {binary}: {e} (install qemu-utils)")))?;
    let daemon = Daemon { child, dir };
    let start = Instant::now();
    while !socket.exists() {
        if start.elapsed() > timeout {
            return Err(Failure::Connection(format!("{binary} made no socket within {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((daemon, socket))
}

pub fn run(timeout: Duration) -> Result<(), Failure> {
    let binary = daemon_binary();
    let (_daemon, socket) = start(&binary, timeout)?;
    emit(format_args!("# started {binary} on {}", socket.display()));
    let mut session = Session::connect(&Target::Unix(socket.clone()), false, timeout)?;
    emit(format_args!("# connected to {} (qmp -s {} shell)", session.describe(), socket.display()));
    for line in SCRIPT {
        emit(format_args!("(qmp) {line}"));
        let mut words = crate::args::split_words(line).map_err(Failure::Usage)?;
        let name = words.remove(0);
        let args = crate::args::parse_arguments(&words).map_err(Failure::Usage)?;
        match session.execute(&name, args.as_ref(), false) {
            Ok(value) => print_value(&value, true),
            Err(Failure::Server(e)) => emit(format_args!("error: {}: {}", e.class, e.desc)),
            Err(other) => return Err(other),
        }
        // Events that came with the command (block jobs report their progress this way).
        loop {
            match session.next_event(Some(Duration::from_millis(50))) {
                Ok(Some(event)) => emit(format_args!("{}", event_json(&event))),
                Ok(None) => break,
                Err(Failure::Connection(cause)) if name == "quit" => {
                    emit(format_args!("# {cause}"));
                    return Ok(());
                }
                Err(other) => return Err(other),
            }
        }
    }
    Ok(())
}
