//! The one byte carrier of the kit: a thread that accepts clients on a unix socket, one at a time (as QEMU
//! serves a monitor), and moves bytes and time between each connection and a sans-IO [`Wire`] session. It
//! writes what the session gives, reads while the session wants input, wakes at the session's deadline and when
//! the test asks something ([`Handle`]), and closes the connection when the session is finished.

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

use crate::session::RECORDED_COMMANDS;

/// A sans-IO server session the carrier drives (the driving contract of [`FakeSession`](crate::FakeSession)).
pub(crate) trait Wire {
    fn handle_input(&mut self, input: &[u8], now: Instant);
    fn handle_eof(&mut self);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize;
    fn poll_timeout(&self) -> Option<Instant>;
    fn wants_input(&self) -> bool;
    fn is_finished(&self) -> bool;
    /// An event the test injected.
    fn event(&mut self, name: &str, data: Option<&Value>, now: Instant);
    /// Commands received since the last call, for [`Handle::commands`].
    fn take_commands(&mut self) -> Vec<Command>;
    /// Problems to report to the test (a replay's mismatches), taken since the last call.
    fn take_problems(&mut self) -> Vec<String>;
}

/// Makes a session per connection, and takes it back when the connection ends.
pub(crate) trait Sessions: Send + 'static {
    type Session: Wire;
    fn open(&mut self, now: Instant, wall: Timestamp) -> Self::Session;
    fn close(&mut self, session: Self::Session);
}

/// Requests from the test to the serving thread.
#[derive(Debug)]
enum Control {
    Event(String, Option<Value>),
    Stop,
}

/// What the test can see of the serving thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) commands: VecDeque<Command>,
    pub(crate) connections: usize,
    pub(crate) problems: Vec<String>,
}

/// The test's side of a carrier thread. Stops the thread when dropped.
#[derive(Debug)]
pub(crate) struct Handle {
    path: PathBuf,
    _dir: Option<TempDir>,
    control: Sender<Control>,
    wake: UnixStream,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Handle {
    /// Serves on a fresh socket in a temporary directory (removed on drop).
    pub(crate) fn start(sessions: impl Sessions) -> io::Result<Handle> {
        let dir = TempDir::new()?;
        let mut handle = Handle::bind(dir.0.join("qmp.sock"), sessions)?;
        handle._dir = Some(dir);
        Ok(handle)
    }

    /// Serves on a socket bound at `path`.
    pub(crate) fn bind(path: impl AsRef<Path>, sessions: impl Sessions) -> io::Result<Handle> {
        let path = path.as_ref().to_owned();
        let listener = UnixListener::bind(&path)?;
        let (wake, woken) = UnixStream::pair()?;
        woken.set_nonblocking(true)?;
        let (control, requests) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let carrier = Carrier { listener, woken, requests, shared: shared.clone() };
        let thread = std::thread::Builder::new().name("qmp-test-kit".into()).spawn(move || carrier.run(sessions))?;
        Ok(Handle { path, _dir: None, control, wake, shared, thread: Some(thread) })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn event(&self, name: &str, data: Option<Value>) {
        self.send(Control::Event(name.to_owned(), data));
    }

    pub(crate) fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Stops the thread (closing the current connection); returns its I/O error, if it had one.
    pub(crate) fn stop(&mut self) -> io::Result<()> {
        self.send(Control::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the qmp-test-kit thread panicked")),
            None => Ok(()),
        }
    }

    fn send(&self, control: Control) {
        // The thread may have ended (stopped, or an accept error): then there is nobody to tell.
        if self.control.send(control).is_ok() {
            let _ = (&self.wake).write(&[1]);
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A directory removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> io::Result<TempDir> {
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

/// The system clock as an event timestamp (-1/-1 before 1970, as QEMU writes it).
pub(crate) fn wall_clock() -> Timestamp {
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
    fn run(self, mut sessions: impl Sessions) -> io::Result<()> {
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
                lock(&self.shared).connections += 1;
                let mut session = sessions.open(Instant::now(), wall_clock());
                let stop = self.serve(stream, &mut session);
                sessions.close(session);
                if stop {
                    return Ok(());
                }
            }
        }
    }

    /// Serves one client; returns whether to stop.
    fn serve(&self, mut stream: UnixStream, session: &mut impl Wire) -> bool {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut stop = false;
        loop {
            out.clear();
            session.poll_transmit(&mut out);
            self.record(session);
            // A client that hung up ends its session like one that closed cleanly.
            if stream.write_all(&out).is_err() {
                session.handle_eof();
            }
            if stop || session.is_finished() {
                self.record(session);
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return stop;
            }
            let timeout = session.poll_timeout().map(|at| at.saturating_duration_since(Instant::now()));
            let wants_input = session.wants_input();
            let (readable, hung_up) = {
                // Not reading (a command in progress, as QEMU stops reading), the socket is still watched for
                // the client hanging up.
                let interest = if wants_input { PollFlags::IN } else { PollFlags::empty() };
                let mut fds = [PollFd::new(&self.woken, PollFlags::IN), PollFd::new(&stream, interest)];
                let timeout = timeout.map(|t| Timespec::try_from(t).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 }));
                if poll_retrying(&mut fds, timeout.as_ref()).is_err() {
                    session.handle_eof();
                    continue;
                }
                let revents = fds[1].revents();
                (
                    wants_input && !revents.is_empty(),
                    !wants_input && revents.intersects(PollFlags::HUP | PollFlags::ERR),
                )
            };
            if hung_up {
                session.handle_eof();
                continue;
            }
            let now = Instant::now();
            if let Woken::Stop = self.take_controls(|name, data| session.event(name, data.as_ref(), now)) {
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

    fn record(&self, session: &mut impl Wire) {
        let commands = session.take_commands();
        let problems = session.take_problems();
        if commands.is_empty() && problems.is_empty() {
            return;
        }
        let mut shared = lock(&self.shared);
        for command in commands {
            if shared.commands.len() == RECORDED_COMMANDS {
                shared.commands.pop_front();
            }
            shared.commands.push_back(command);
        }
        shared.problems.extend(problems);
    }
}

/// `poll`, again when a signal interrupts it.
pub(crate) fn poll_retrying(fds: &mut [PollFd<'_>], timeout: Option<&Timespec>) -> io::Result<usize> {
    loop {
        match poll(fds, timeout) {
            Err(rustix::io::Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}
