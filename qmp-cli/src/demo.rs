//! `qmp demo`: starts a throwaway qemu-storage-daemon and plays a short scripted shell session against it.
//!
//! The daemon is `$QMP_DEMO_QSD`, else `/usr/local/bin/qemu-storage-daemon-10` when present, else
//! `qemu-storage-daemon` from `PATH`; it runs on a socket in a fresh temporary directory and is killed at the end.
//! Without any (or with `QMP_DEMO_FAKE=1`) the demo talks to the fake QEMU of `qmp serve` instead, in a thread.

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

/// The lines typed at the fake QEMU (`qmp serve`): its built-in commands, QEMU's argument checks and errors.
const FAKE_SCRIPT: &[&str] = &[
    "query-version",
    "query-status",
    "stop",
    "query-status",
    "cont",
    "blockdev-del",
    "blockdev-del node-name=5",
    "query-version x=1",
    "no-such-command",
    "quit",
];

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the fake QEMU of `qmp serve` on a socket in a fresh temporary directory, in a thread.
fn start_fake() -> Result<(TempDir, PathBuf), Failure> {
    let dir = std::env::temp_dir().join(format!("qmp-cli-demo-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Failure::Connection(format!("{}: {e}", dir.display())))?;
    let socket = dir.join("qmp.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .map_err(|e| Failure::Connection(format!("{}: {e}", socket.display())))?;
    let mut fake = crate::serve::fake_qemu(None)?;
    std::thread::spawn(move || qmp_blocking::serve::serve_listener(&listener, &mut fake));
    Ok((TempDir(dir), socket))
}

/// True when `name` is an executable file in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

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

/// The daemon to run, or `None` when there is none (or `QMP_DEMO_FAKE=1` asks for the fake).
fn daemon_binary() -> Option<String> {
    if std::env::var_os("QMP_DEMO_FAKE").is_some_and(|v| v == "1") {
        return None;
    }
    if let Ok(path) = std::env::var("QMP_DEMO_QSD") {
        return Some(path);
    }
    let v10 = "/usr/local/bin/qemu-storage-daemon-10";
    if Path::new(v10).exists() {
        Some(v10.into())
    } else if on_path("qemu-storage-daemon") {
        Some("qemu-storage-daemon".into())
    } else {
        None
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
    let (_guard, socket, script): (Box<dyn std::any::Any>, PathBuf, &[&str]) = match daemon_binary() {
        Some(binary) => {
            let (daemon, socket) = start(&binary, timeout)?;
            emit(format_args!("# started {binary} on {}", socket.display()));
            (Box::new(daemon), socket, SCRIPT)
        }
        None => {
            let (dir, socket) = start_fake()?;
            emit(format_args!(
                "# no qemu-storage-daemon found: using the fake QEMU of `qmp serve` on {}",
                socket.display()
            ));
            (Box::new(dir), socket, FAKE_SCRIPT)
        }
    };
    let mut session = Session::connect(&Target::Unix(socket.clone()), false, timeout)?;
    emit(format_args!("# connected to {} (qmp -s {} shell)", session.describe(), socket.display()));
    for line in script {
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
