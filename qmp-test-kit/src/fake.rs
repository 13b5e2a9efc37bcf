//! [`FakeQemu`]: a fake QEMU on a unix socket, served from a thread of its own, so that any client (blocking,
//! tokio, smol, another language's) can connect to [`FakeQemu::path`]. The thread only carries bytes and time
//! for a [`FakeSession`] per connection; the script lives on from one connection to the next.

use std::io;
use std::path::Path;
use std::time::Instant;

use qmp_proto::server::Command;
use qmp_proto::Timestamp;
use serde_json::Value;

use crate::carrier::{Handle, Sessions, Wire};
use crate::script::Script;
use crate::session::FakeSession;

/// A fake QEMU serving a [`Script`] on a unix socket from a thread, one client at a time (as QEMU serves a
/// monitor). Stopped when dropped.
///
/// ```
/// use qmp_test_kit::{Answer, FakeQemu, Script};
/// use serde_json::{json, Value};
///
/// let fake = FakeQemu::start(Script::new().on("query-status", Answer::value(json!({"running": true}))))?;
/// let mut qmp = qmp_blocking::Client::connect_unix(fake.path(), Default::default())?;
/// let status: Value = qmp.execute("query-status", ())?;
/// assert_eq!(status["running"], true);
/// assert_eq!(fake.commands()[0].name(), "query-status");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FakeQemu {
    handle: Handle,
}

/// The script, lent to one connection's session at a time.
struct ScriptSessions(Option<Script>);

impl Sessions for ScriptSessions {
    type Session = FakeSession;

    fn open(&mut self, now: Instant, wall: Timestamp) -> FakeSession {
        FakeSession::new(self.0.take().unwrap_or_default(), now, wall)
    }

    fn close(&mut self, session: FakeSession) {
        self.0 = Some(session.into_script());
    }
}

impl Wire for FakeSession {
    fn handle_input(&mut self, input: &[u8], now: Instant) {
        FakeSession::handle_input(self, input, now)
    }
    fn handle_eof(&mut self) {
        FakeSession::handle_eof(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        FakeSession::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        FakeSession::poll_transmit(self, out)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        FakeSession::poll_timeout(self)
    }
    fn wants_input(&self) -> bool {
        FakeSession::wants_input(self)
    }
    fn is_finished(&self) -> bool {
        FakeSession::is_finished(self)
    }
    fn event(&mut self, name: &str, data: Option<&Value>, now: Instant) {
        FakeSession::event(self, name, data, now);
    }
    fn take_commands(&mut self) -> Vec<Command> {
        FakeSession::take_commands(self)
    }
    fn take_problems(&mut self) -> Vec<String> {
        Vec::new()
    }
}

impl FakeQemu {
    /// Serves `script` on a fresh socket in a temporary directory (removed when the fake is dropped).
    pub fn start(script: Script) -> io::Result<FakeQemu> {
        Ok(FakeQemu { handle: Handle::start(ScriptSessions(Some(script)))? })
    }

    /// Serves `script` on a socket bound at `path`.
    pub fn bind(path: impl AsRef<Path>, script: Script) -> io::Result<FakeQemu> {
        Ok(FakeQemu { handle: Handle::bind(path, ScriptSessions(Some(script)))? })
    }

    /// The socket to connect to.
    pub fn path(&self) -> &Path {
        self.handle.path()
    }

    /// Sends an event to the connected client, stamped with the system clock (dropped when no client has
    /// negotiated, as QEMU drops it).
    pub fn event(&self, name: &str, data: Option<Value>) {
        self.handle.event(name, data)
    }

    /// The commands the script was asked to answer, oldest first, over every connection (at most the last
    /// [`RECORDED_COMMANDS`](crate::RECORDED_COMMANDS)).
    pub fn commands(&self) -> Vec<Command> {
        self.handle.shared().commands.iter().cloned().collect()
    }

    /// How many clients have connected so far.
    pub fn connections(&self) -> usize {
        self.handle.shared().connections
    }

    /// Stops serving (closing the current connection) and returns the thread's I/O error, if it had one.
    pub fn stop(mut self) -> io::Result<()> {
        self.handle.stop()
    }
}
