//! Where a happy-path scenario's QMP server comes from: a real QEMU process ([`Real`]), or our own server
//! ([`Ours`]: `qmp_proto::Server` in `qmp_blocking::serve`'s loop answering as [`FakeQemu`], which is what
//! `qmp serve` runs). The same scenario runs against both, so our client and our server are checked against
//! each other on every adapter and runtime by the suite that checks the client against QEMU.
//!
//! Our server answers as qemu-storage-daemon 10 (the recorded schema, its error texts), plus `stop` / `cont`
//! with their `STOP` / `RESUME` events written before the reply, and an out-of-band `query-yank`; it serves one
//! client at a time, as a QEMU monitor does. The scripted misbehaving server (`qmp_tests::fake_server`) stays
//! separate: it is an independent check of the client, written without our server.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use qmp_blocking::fake_qemu::{FakeQemu, Script};
use qmp_blocking::serve::serve_stream;
use qmp_tests::servers::{available, QemuServer, ServerKind};
use tempfile::TempDir;

/// A source of QMP servers for the scenarios generic over it.
pub trait Peer {
    /// The server's name in messages.
    const NAME: &'static str;

    /// A server standing in for `kind` (which real QEMU the scenario is written against); `None` after a
    /// loud `SKIPPED:` line when that QEMU is not installed.
    fn start(kind: ServerKind) -> Option<Served>;
}

/// Real QEMU processes, from `qmp_tests::servers`.
pub struct Real;

/// Our own server (see the module docs); it plays every QMP kind the same way.
pub struct Ours;

impl Peer for Real {
    const NAME: &'static str = "real QEMU";

    fn start(kind: ServerKind) -> Option<Served> {
        available(QemuServer::start(kind)).map(Served::Real)
    }
}

impl Peer for Ours {
    const NAME: &'static str = "our server";

    fn start(kind: ServerKind) -> Option<Served> {
        assert!(!kind.is_guest_agent(), "our server is started here for QMP scenarios only");
        Some(Served::Ours(OurServer::start()))
    }
}

/// A running server of either source; stopped on drop.
pub enum Served {
    /// A QEMU process.
    Real(QemuServer),
    /// Our server on a thread.
    Ours(OurServer),
}

impl Served {
    /// The unix socket it listens on.
    pub fn socket_path(&self) -> &Path {
        match self {
            Served::Real(server) => server.socket_path(),
            Served::Ours(server) => &server.socket,
        }
    }
}

/// Our server on a private socket: a thread accepting one client at a time, each served by
/// `qmp_blocking::serve::serve_stream` with a [`FakeQemu`].
pub struct OurServer {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    // Removed last: the socket lives in it.
    _dir: TempDir,
}

/// What our server answers beyond the fake's built-in commands: `query-yank`, out of band as in QEMU.
const SCRIPT: &str = r#"{"query-yank": {"return": [], "oob": true}}"#;

impl OurServer {
    fn start() -> OurServer {
        let dir = tempfile::Builder::new().prefix("qmp-ours-").tempdir().expect("temp dir");
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).expect("bind our server's socket");
        let stop = Arc::new(AtomicBool::new(false));
        let mut fake = FakeQemu::new().with_script(Script::from_json(SCRIPT).expect("script"));
        let stopping = Arc::clone(&stop);
        thread::Builder::new()
            .name("our-qmp-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    // A client's I/O error ends its session, not the server (as in `serve_listener`).
                    if let Ok(mut stream) = stream {
                        let _ = serve_stream(&mut stream, &mut fake);
                    }
                }
            })
            .expect("spawn our server");
        OurServer { socket, stop, _dir: dir }
    }
}

impl Drop for OurServer {
    /// Stops accepting: the flag is seen at the next accept, which this connection provides (queued behind a
    /// session still open, if any). The thread is not joined, so a scenario that failed with its client still
    /// connected cannot hang here.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket);
    }
}
