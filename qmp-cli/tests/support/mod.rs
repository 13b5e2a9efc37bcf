//! Test support for the `qmp` binary: a QEMU process started with arguments of the test's own (several
//! monitors, a fixed socket path that survives a restart), and small helpers to run `qmp`.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use qmp_tests::servers::{binary_version, locate_or_skip, QemuVersion, ServerKind};

/// Runs `qmp` with `args` and collects its output.
pub fn qmp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmp")).args(args).output().expect("run qmp")
}

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qmp-cli-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A QEMU process with one QMP monitor per socket in `sockets`, killed on drop.
#[derive(Debug)]
pub struct Qemu {
    pub child: Child,
    pub sockets: Vec<PathBuf>,
    binary: PathBuf,
}

impl Qemu {
    /// The newest qemu-storage-daemon found (see `ServerKind::StorageDaemon`) with a monitor on each of
    /// `sockets`; `None` (after a SKIPPED line) when absent.
    pub fn storage_daemon(sockets: &[PathBuf]) -> Option<Qemu> {
        let binary = locate_or_skip(ServerKind::StorageDaemon)?;
        let mut cmd = Command::new(&binary);
        for (i, socket) in sockets.iter().enumerate() {
            cmd.arg("--chardev").arg(format!("socket,path={},server=on,wait=off,id=m{i}", socket.display()));
            cmd.arg("--monitor").arg(format!("chardev=m{i}"));
        }
        Some(Qemu::spawn(cmd, sockets, binary))
    }

    /// `qemu-system-x86_64 -M none` with a QMP monitor on each of `sockets`.
    pub fn system(sockets: &[PathBuf]) -> Option<Qemu> {
        let binary = locate_or_skip(ServerKind::System)?;
        let mut cmd = Command::new(&binary);
        cmd.args(["-M", "none", "-display", "none", "-nodefaults"]);
        for socket in sockets {
            cmd.arg("-qmp").arg(format!("unix:{},server=on,wait=off", socket.display()));
        }
        Some(Qemu::spawn(cmd, sockets, binary))
    }

    fn spawn(mut cmd: Command, sockets: &[PathBuf], binary: PathBuf) -> Qemu {
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("start QEMU");
        let qemu = Qemu { child, sockets: sockets.to_vec(), binary };
        for socket in sockets {
            qmp_tests::listening::wait_listening(socket, Duration::from_secs(30), "QEMU");
        }
        qemu
    }

    /// The QEMU version of the binary (its `--version`).
    pub fn version(&self) -> QemuVersion {
        binary_version(&self.binary).expect("QEMU prints its version")
    }

    pub fn socket(&self, i: usize) -> &str {
        self.sockets[i].to_str().expect("utf-8 path")
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.child.try_wait().expect("try_wait").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one command on a QMP socket with a raw connection (the test's "second client").
pub fn raw_command(socket: &Path, line: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("greeting");
    let mut writer = stream;
    writer.write_all(b"{\"execute\": \"qmp_capabilities\"}\n").expect("write");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("negotiation");
    writer.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut reply = String::new();
    loop {
        reply.clear();
        if reader.read_line(&mut reply).unwrap_or(0) == 0 || !reply.contains("\"event\"") {
            return reply;
        }
    }
}
