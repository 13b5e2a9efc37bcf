//! [`serve_stream`] and [`serve_connection`]: a [`FakeSession`] carried on an async runtime (any of qmp-async's: tokio, smol,
//! async-std) over one connection. Its deadlines are the runtime's timers on the runtime's clock, so under
//! tokio's paused time a delay or a silent command costs no real time, and the client's timeouts run on the
//! same clock.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use qmp_async::{Runtime, Streams, Timer, Transport};
use qmp_proto::server::Command;
use serde_json::Value;

use crate::carrier::wall_clock;
use crate::script::Script;
use crate::session::{FakeSession, RECORDED_COMMANDS};

/// Bytes read at once.
const READ_CHUNK: usize = 16 * 1024;

/// An event injected by the test: name and data.
type Injected = (String, Option<Value>);

/// Talks to a connection served by [`serve_connection`]: injects events, lists the commands received.
#[derive(Debug, Clone)]
pub struct FakeHandle {
    events: async_channel::Sender<Injected>,
    commands: Arc<Mutex<VecDeque<Command>>>,
}

impl FakeHandle {
    /// Sends an event to the client (dropped before it has negotiated, as QEMU drops it, or once the
    /// connection is over).
    pub fn event(&self, name: &str, data: Option<Value>) {
        // Unbounded: the send fails only once the connection is over, and then there is nobody to tell.
        let _ = self.events.try_send((name.to_owned(), data));
    }

    /// The commands the script was asked to answer so far, oldest first (at most the last
    /// [`RECORDED_COMMANDS`]).
    pub fn commands(&self) -> Vec<Command> {
        self.commands.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

/// Serves `script` to the client at the other end of `stream` (a runtime's stream: tokio's `UnixStream`, say)
/// on `runtime`; returns a handle and the future that serves (spawn it). The future ends when the connection
/// does, and gives the script back. [`serve_connection`] takes a qmp-async [`Transport`] instead.
///
/// ```
/// use std::time::Duration;
/// use qmp_test_kit::{serve_stream, Answer, Fault, Script};
/// use qmp_tokio::{Error, Options, Qmp, Tokio};
/// use serde_json::{json, Value};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Paused time: the 30-second timeout of a silent command passes at once.
/// let script = Script::new()
///     .on("query-status", Answer::value(json!({"running": true})).delay(Duration::from_secs(5)))
///     .on("query-jobs", Answer::value(json!([])).fault(Fault::Silence));
/// let (ours, theirs) = tokio::net::UnixStream::pair()?;
/// let (fake, serving) = serve_stream(Tokio, theirs, script);
/// tokio::spawn(serving);
/// let qmp = Qmp::from_stream(ours, Options::default()).await?;
/// let status: Value = qmp.execute("query-status", ()).await?; // 5 s later, on the paused clock
/// assert_eq!(status["running"], true);
/// assert!(matches!(qmp.execute::<Value>("query-jobs", ()).await, Err(Error::TimedOut)));
/// assert_eq!(fake.commands().len(), 2);
/// # Ok(()) }
/// ```
pub fn serve_stream<R: Streams<S>, S>(
    runtime: R,
    stream: S,
    script: Script,
) -> (FakeHandle, impl Future<Output = Script> + Send + 'static) {
    serve_connection(runtime, R::transport(stream), script)
}

/// Serves `script` to the client at the other end of `io` on `runtime` (see [`serve_stream`]).
pub fn serve_connection<R: Runtime, T: Transport>(
    runtime: R,
    io: T,
    script: Script,
) -> (FakeHandle, impl Future<Output = Script> + Send + 'static) {
    let (events_tx, events_rx) = async_channel::unbounded();
    let commands = Arc::new(Mutex::new(VecDeque::new()));
    let handle = FakeHandle { events: events_tx, commands: commands.clone() };
    let session = FakeSession::new(script, runtime.now(), wall_clock());
    let mut connection = Connection {
        runtime,
        io,
        session: Some(session),
        out: Vec::new(),
        written: 0,
        timer: None,
        armed: None,
        events: Box::pin(events_rx),
        commands,
        shut_down: false,
    };
    let serving = async move {
        std::future::poll_fn(|cx| connection.poll(cx)).await;
        connection.session.take().map(FakeSession::into_script).unwrap_or_default()
    };
    (handle, serving)
}

struct Connection<R: Runtime, T> {
    runtime: R,
    io: T,
    /// Taken back (with its script) when the connection ends.
    session: Option<FakeSession>,
    out: Vec<u8>,
    written: usize,
    timer: Option<Pin<Box<R::Timer>>>,
    armed: Option<Instant>,
    events: Pin<Box<async_channel::Receiver<Injected>>>,
    commands: Arc<Mutex<VecDeque<Command>>>,
    shut_down: bool,
}

impl<R: Runtime, T: Transport> Connection<R, T> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(session) = self.session.as_mut() else { return Poll::Ready(()) };
        loop {
            let mut progress = false;
            while let Poll::Ready(Some((name, data))) = self.events.as_mut().poll_next(cx) {
                session.event(&name, data.as_ref(), self.runtime.now());
                progress = true;
            }
            if let Some(at) = session.poll_timeout() {
                let runtime = &self.runtime;
                let timer = self.timer.get_or_insert_with(|| Box::pin(runtime.timer(at)));
                if self.armed != Some(at) {
                    timer.as_mut().reset(at);
                    self.armed = Some(at);
                }
                if timer.as_mut().poll_fire(cx).is_ready() {
                    self.armed = None;
                    session.handle_timeout(self.runtime.now().max(at));
                    progress = true;
                }
            }
            session.poll_transmit(&mut self.out);
            let received = session.take_commands();
            if !received.is_empty() {
                let mut commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
                for command in received {
                    if commands.len() == RECORDED_COMMANDS {
                        commands.pop_front();
                    }
                    commands.push_back(command);
                }
            }
            while self.written < self.out.len() {
                match self.io.poll_write(cx, &self.out[self.written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.written += n;
                        progress = true;
                    }
                    Poll::Pending => break,
                    // The client hung up: what was queued for it goes nowhere.
                    Poll::Ready(_) => {
                        session.handle_eof();
                        self.out.clear();
                        self.written = 0;
                    }
                }
            }
            if self.written == self.out.len() {
                self.out.clear();
                self.written = 0;
                let _ = self.io.poll_flush(cx);
                if session.is_finished() {
                    if !self.shut_down {
                        match self.io.poll_shutdown(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(_) => self.shut_down = true,
                        }
                    }
                    return Poll::Ready(());
                }
            }
            if session.wants_input() {
                let mut buf = [0u8; READ_CHUNK];
                match self.io.poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        session.handle_eof();
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        session.handle_input(&buf[..n], self.runtime.now());
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}
