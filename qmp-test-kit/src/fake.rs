//! [`FakeQemu`]: a fake QEMU on a unix socket, served by a thread of its own, so that any client (blocking,
//! tokio, smol, another language's) can connect to [`FakeQemu::path`]. The thread only carries bytes and time
//! for a [`FakeSession`]: it writes what the session gives, reads while the session wants input, wakes at the
//! session's deadline, and closes the connection when the session is finished. One client at a time, as QEMU
//! serves a monitor; the script lives on from one connection to the next.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use qmp_proto::server::Command;
use qmp_proto::Timestamp;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use serde_json::Value;

use crate::script::Script;
use crate::session::{FakeSession, RECORDED_COMMANDS};

/// Requests from the test to the serving thread.
#[derive(Debug)]
enum Control {
    Event(String, Option<Value>),
    Stop,
}

/// What the test can see of the serving thread.
#[derive(Debug, Default)]
struct Shared {
    commands: VecDeque<Command>,
    connections: usize,
}

/// A fake QEMU serving a [`Script`] on a unix socket from a thread. Stopped when dropped.
///
/// ```
/// use qmp_test_kit::{Answer, FakeQemu, Script};
/// use serde_json::{json, Value};
///
/// let fake = FakeQemu::start(Script::new().on("query-status", Answer::value(json!({"running": true}))))?;
/// let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), Default::default())?;
/// let status: Value = qmp.execute("query-status", ())?;
/// assert_eq!(status["running"], true);
/// assert_eq!(fake.commands()[0].name, "query-status");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FakeQemu {
    path: PathBuf,
    _dir: Option<TempDir>,
    control: Sender<Control>,
    wake: UnixStream,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl FakeQemu {
    /// Serves `script` on a fresh socket in a temporary directory (removed when the fake is dropped).
    pub fn start(script: Script) -> io::Result<FakeQemu> {
        let dir = TempDir::new()?;
        let mut fake = FakeQemu::bind(dir.0.join("qmp.sock"), script)?;
        fake._dir = Some(dir);
        Ok(fake)
    }

    /// Serves `script` on a socket bound at `path`.
    pub fn bind(path: impl AsRef<Path>, script: Script) -> io::Result<FakeQemu> {
        let path = path.as_ref().to_owned();
        let listener = UnixListener::bind(&path)?;
        let (wake, woken) = UnixStream::pair()?;
        woken.set_nonblocking(true)?;
        let (control, requests) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let carrier = Carrier { listener, woken, requests, shared: shared.clone() };
        let thread = std::thread::Builder::new().name("fake-qemu".into()).spawn(move || carrier.run(script))?;
        Ok(FakeQemu { path, _dir: None, control, wake, shared, thread: Some(thread) })
    }

    /// The socket to connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends an event to the connected client, stamped with the system clock (dropped when no client has
    /// negotiated, as QEMU drops it).
    pub fn event(&self, name: &str, data: Option<Value>) {
        self.send(Control::Event(name.to_owned(), data));
    }

    /// The commands the script was asked to answer, oldest first, over every connection (at most the last
    /// [`RECORDED_COMMANDS`]).
    pub fn commands(&self) -> Vec<Command> {
        self.shared().commands.iter().cloned().collect()
    }

    /// How many clients have connected so far.
    pub fn connections(&self) -> usize {
        self.shared().connections
    }

    /// Stops serving (closing the current connection) and returns the thread's I/O error, if it had one.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> io::Result<()> {
        self.send(Control::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the fake QEMU's thread panicked")),
            None => Ok(()),
        }
    }

    fn send(&self, control: Control) {
        // The thread may have ended (stopped, or an accept error): then there is nobody to tell.
        if self.control.send(control).is_ok() {
            let _ = (&self.wake).write(&[1]);
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for FakeQemu {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// A directory removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("qmp-test-kit-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The system clock as an event timestamp.
fn wall_clock() -> Timestamp {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp { seconds: d.as_secs() as i64, microseconds: i64::from(d.subsec_micros()) },
        Err(_) => Timestamp { seconds: -1, microseconds: -1 },
    }
}

/// The serving thread's side.
struct Carrier {
    listener: UnixListener,
    woken: UnixStream,
    requests: Receiver<Control>,
    shared: Arc<Mutex<Shared>>,
}

/// What a wait ended with.
enum Woken {
    Stop,
    Ready,
}

impl Carrier {
    fn run(self, mut script: Script) -> io::Result<()> {
        loop {
            let mut fds = [PollFd::new(&self.listener, PollFlags::IN), PollFd::new(&self.woken, PollFlags::IN)];
            poll_retrying(&mut fds, None)?;
            let accept = !fds[0].revents().is_empty();
            // Events with no client connected go nowhere, as in QEMU.
            if let Woken::Stop = self.take_controls(|_, _| {}) {
                return Ok(());
            }
            if accept {
                let (stream, _) = self.listener.accept()?;
                self.lock().connections += 1;
                let (back, stop) = self.serve(stream, script);
                script = back;
                if stop {
                    return Ok(());
                }
            }
        }
    }

    /// Serves one client; returns the script and whether to stop.
    fn serve(&self, mut stream: UnixStream, script: Script) -> (Script, bool) {
        let mut session = FakeSession::new(script, Instant::now(), wall_clock());
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut stop = false;
        loop {
            out.clear();
            session.poll_transmit(&mut out);
            self.record(&mut session);
            // A client that hung up ends its session like one that closed cleanly.
            if stream.write_all(&out).is_err() {
                session.handle_eof();
            }
            if stop || session.is_finished() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return (session.into_script(), stop);
            }
            let timeout = session.poll_timeout().map(|at| at.saturating_duration_since(Instant::now()));
            let readable = {
                let mut fds = [PollFd::new(&self.woken, PollFlags::IN), PollFd::new(&stream, PollFlags::IN)];
                let watched = if session.wants_input() { 2 } else { 1 };
                let timeout = timeout.map(|t| Timespec::try_from(t).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 }));
                if poll_retrying(&mut fds[..watched], timeout.as_ref()).is_err() {
                    session.handle_eof();
                    continue;
                }
                watched == 2 && !fds[1].revents().is_empty()
            };
            let now = Instant::now();
            if let Woken::Stop = self.take_controls(|name, data| {
                session.event(name, data.as_ref(), now);
            }) {
                stop = true;
                continue;
            }
            if readable {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => session.handle_eof(),
                    Ok(n) => session.handle_input(&buf[..n], now),
                }
            }
            session.handle_timeout(Instant::now());
        }
    }

    /// Applies the test's requests; `Stop` wins.
    fn take_controls(&self, mut on_event: impl FnMut(&str, Option<Value>)) -> Woken {
        let mut drained = [0u8; 64];
        while matches!((&self.woken).read(&mut drained), Ok(n) if n > 0) {}
        while let Ok(control) = self.requests.try_recv() {
            match control {
                Control::Stop => return Woken::Stop,
                Control::Event(name, data) => on_event(&name, data),
            }
        }
        Woken::Ready
    }

    fn record(&self, session: &mut FakeSession) {
        let commands = session.take_commands();
        if commands.is_empty() {
            return;
        }
        let mut shared = self.lock();
        for command in commands {
            if shared.commands.len() == RECORDED_COMMANDS {
                shared.commands.pop_front();
            }
            shared.commands.push_back(command);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `poll`, again when a signal interrupts it.
fn poll_retrying(fds: &mut [PollFd<'_>], timeout: Option<&Timespec>) -> io::Result<usize> {
    loop {
        match poll(fds, timeout) {
            Err(rustix::io::Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}
