//! Serving QMP: [`qmp_proto::Server`] on any runtime, one session per connection.
//!
//! A [`Service`] says what the server answers (a handler per command); [`serve_unix`] accepts clients on a unix
//! socket, [`serve_tcp`] (or [`serve_tcp_listener`]) on a TCP one, and runs a session for each (one at a time by
//! default, as QEMU serves its monitor, or several with [`ServeOptions::concurrent`]); [`serve_connection`] runs one session over any [`Transport`] (a TCP stream,
//! a pipe). A [`ServerHandle`] broadcasts events to every connected client and shuts the server down
//! gracefully: no new connection is accepted, each session writes what it has queued and closes.
//!
//! The protocol is the core's, byte for byte as qemu-storage-daemon 10 speaks it (greeting, negotiation, QEMU's
//! parse errors and texts, ordering, limits); this module only moves bytes, results and events.
//!
//! ```no_run
//! # async fn example<R: qmp_async::Net>() -> std::io::Result<()> {
//! use qmp_async::serve::{serve_unix, ServeOptions, Service};
//! use qmp_proto::server::ServerConfig;
//! use serde_json::json;
//!
//! let service = Service::new(ServerConfig::qmp())
//!     .command("query-status", |_| async { Ok(json!({"status": "running", "running": true})) });
//! let (handle, serving) = serve_unix(R::default(), "/tmp/fake-qemu.sock", service, ServeOptions::default())?;
//! handle.event("RESUME", None);
//! serving.await?; // until handle.shutdown()
//! # Ok(()) }
//! ```

pub(crate) mod connection;
mod service;
mod session;

use std::future::Future;
use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use qmp_proto::Timestamp;
use serde_json::Value;

pub use qmp_proto::server::{Failure, ServerConfig};
pub use service::{HandlerFuture, Reply, Request, Service};

use crate::runtime::{Net, Runtime};
use crate::transport::Transport;

/// Events queued per session before the oldest is dropped for a slow client.
const EVENT_BACKLOG: usize = 256;

/// An event on its way to every session.
#[derive(Debug)]
pub(crate) struct Broadcast {
    name: String,
    data: Option<Value>,
    timestamp: Timestamp,
}

/// The shutdown flag, and a way to wait for it.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    set: AtomicBool,
    event: event_listener::Event,
    sessions: AtomicUsize,
    sessions_done: event_listener::Event,
}

impl Shutdown {
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Sets the flag and wakes every waiter.
    pub(crate) fn request(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub(crate) fn listen(&self) -> event_listener::EventListener {
        self.event.listen()
    }

    pub(crate) async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let listener = self.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }
}

/// How [`serve_unix`] accepts clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    concurrent: bool,
}

impl Default for ServeOptions {
    /// One client at a time, as QEMU serves a monitor: the next connection waits (in the listen backlog, with
    /// no greeting) until the current client leaves.
    fn default() -> Self {
        ServeOptions { concurrent: false }
    }
}

impl ServeOptions {
    /// One session per connection, all at once (each with its own negotiation and command queue).
    pub fn concurrent(mut self, concurrent: bool) -> Self {
        self.concurrent = concurrent;
        self
    }
}

/// Broadcasts events to the connected clients and shuts the server down. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    events: async_broadcast::Sender<Arc<Broadcast>>,
    /// Kept so that the channel stays open while no session is connected.
    _keep: async_broadcast::InactiveReceiver<Arc<Broadcast>>,
    shutdown: Arc<Shutdown>,
}

impl ServerHandle {
    /// A handle for sessions started with [`serve_connection`] (and [`serve_unix`], which makes its own).
    pub fn new() -> Self {
        let (mut tx, rx) = async_broadcast::broadcast(EVENT_BACKLOG);
        tx.set_overflow(true);
        ServerHandle { events: tx, _keep: rx.deactivate(), shutdown: Arc::default() }
    }

    /// Sends an event, stamped with the system clock, to every client that has negotiated (QEMU sends none
    /// before). Returns how many sessions it was queued for.
    pub fn event(&self, name: &str, data: Option<Value>) -> usize {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok();
        let timestamp = match now {
            Some(d) => Timestamp { seconds: d.as_secs() as i64, microseconds: i64::from(d.subsec_micros()) },
            None => Timestamp { seconds: -1, microseconds: -1 },
        };
        self.event_at(name, data, timestamp)
    }

    /// Sends an event with the given timestamp (see [`event`](Self::event)).
    pub fn event_at(&self, name: &str, data: Option<Value>, timestamp: Timestamp) -> usize {
        let receivers = self.events.receiver_count();
        let event = Arc::new(Broadcast { name: name.to_owned(), data, timestamp });
        match self.events.try_broadcast(event) {
            Ok(_) => receivers,
            Err(_) => 0,
        }
    }

    /// Stops accepting connections and closes every session once its queued output is written.
    pub fn shutdown(&self) {
        self.shutdown.request();
    }

    /// Sessions running now.
    pub fn sessions(&self) -> usize {
        self.shutdown.sessions.load(Ordering::SeqCst)
    }
}

impl Default for ServerHandle {
    fn default() -> Self {
        ServerHandle::new()
    }
}

/// Runs one session of `service` over `io` until the client hangs up or `handle` shuts the server down.
///
/// # Cancel safety
/// Dropping it ends the session at once (what was not written is lost); handlers already running finish on
/// their own and their results are discarded.
pub async fn serve_connection<R: Runtime, T: Transport>(
    runtime: R,
    io: T,
    service: Arc<Service>,
    handle: &ServerHandle,
) {
    handle.shutdown.sessions.fetch_add(1, Ordering::SeqCst);
    run_counted(runtime, io, service, handle).await;
}

/// Runs a session already counted in [`ServerHandle::sessions`], and uncounts it when it ends.
async fn run_counted<R: Runtime, T: Transport>(runtime: R, io: T, service: Arc<Service>, handle: &ServerHandle) {
    let events = handle.events.new_receiver();
    session::run(runtime, io, service, events, handle.shutdown.clone()).await;
    if handle.shutdown.sessions.fetch_sub(1, Ordering::SeqCst) == 1 {
        handle.shutdown.sessions_done.notify(usize::MAX);
    }
}

/// Binds a unix socket at `path` and returns the handle and the future that serves it: it accepts clients
/// until [`ServerHandle::shutdown`], then waits for the open sessions to close, and resolves.
///
/// # Cancel safety
/// Dropping the future stops accepting; sessions already spawned (with [`ServeOptions::concurrent`]) run on.
pub fn serve_unix<R: Net>(
    runtime: R,
    path: impl AsRef<Path>,
    service: Service,
    options: ServeOptions,
) -> io::Result<(ServerHandle, Serving)> {
    let listener = UnixAccept::<R>(runtime.bind_unix(path.as_ref())?);
    Ok(serve_on(runtime, listener, service, options))
}

/// Binds a TCP socket at `addr` (with `std::net::TcpListener::bind`: a host name is resolved on the calling
/// thread) and serves it as [`serve_unix`] serves a unix socket. QEMU's `-qmp tcp:HOST:PORT,server=on` is the
/// same protocol over TCP.
///
/// # Cancel safety
/// As [`serve_unix`].
pub fn serve_tcp<R: Net>(
    runtime: R,
    addr: impl ToSocketAddrs,
    service: Service,
    options: ServeOptions,
) -> io::Result<(ServerHandle, Serving)> {
    serve_tcp_listener(runtime, std::net::TcpListener::bind(addr)?, service, options)
}

/// Serves a TCP socket already bound (to port 0, say, whose port `listener.local_addr()` tells), as
/// [`serve_tcp`] does.
pub fn serve_tcp_listener<R: Net>(
    runtime: R,
    listener: std::net::TcpListener,
    service: Service,
    options: ServeOptions,
) -> io::Result<(ServerHandle, Serving)> {
    let listener = TcpAccept::<R>(runtime.tcp_listener_from_std(listener)?);
    Ok(serve_on(runtime, listener, service, options))
}

/// The handle and the accept loop over any kind of listener.
fn serve_on<R: Net, L: Accept<R>>(
    runtime: R,
    listener: L,
    service: Service,
    options: ServeOptions,
) -> (ServerHandle, Serving) {
    let handle = ServerHandle::new();
    let serving = Box::pin(accept_loop(runtime, listener, Arc::new(service), options, handle.clone()));
    (handle, serving)
}

/// A listening socket of runtime `R`: unix or TCP.
pub(crate) trait Accept<R: Net>: Send + Sync + 'static {
    /// A connection accepted on it.
    type Stream: Transport;

    /// Waits for the next connection (cancel safe, as [`Net::accept_unix`] is).
    fn accept<'a>(&'a self, runtime: &'a R) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'a;
}

pub(crate) struct UnixAccept<R: Net>(pub(crate) R::UnixListener);

impl<R: Net> Accept<R> for UnixAccept<R> {
    type Stream = R::UnixStream;

    fn accept<'a>(&'a self, runtime: &'a R) -> impl Future<Output = io::Result<R::UnixStream>> + Send + 'a {
        runtime.accept_unix(&self.0)
    }
}

pub(crate) struct TcpAccept<R: Net>(pub(crate) R::TcpListener);

impl<R: Net> Accept<R> for TcpAccept<R> {
    type Stream = R::TcpStream;

    fn accept<'a>(&'a self, runtime: &'a R) -> impl Future<Output = io::Result<R::TcpStream>> + Send + 'a {
        runtime.accept_tcp(&self.0)
    }
}

/// The future of a server: it accepts clients until [`ServerHandle::shutdown`] and resolves once every
/// session has closed.
pub type Serving = std::pin::Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// Waits for the next connection on `listener`, or `None` once `shutdown` is requested.
pub(crate) async fn accept_until<R: Net, L: Accept<R>>(
    runtime: &R,
    listener: &L,
    shutdown: &Shutdown,
) -> Option<io::Result<L::Stream>> {
    let mut accept = pin!(listener.accept(runtime));
    let mut stop = pin!(shutdown.wait());
    std::future::poll_fn(|cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        accept.as_mut().poll(cx).map(Some)
    })
    .await
}

async fn accept_loop<R: Net, L: Accept<R>>(
    runtime: R,
    listener: L,
    service: Arc<Service>,
    options: ServeOptions,
    handle: ServerHandle,
) -> io::Result<()> {
    loop {
        let stream = match accept_until(&runtime, &listener, &handle.shutdown).await {
            None => break,
            Some(Ok(stream)) => stream,
            // A client that went away before accept() completed: keep serving the others.
            Some(Err(e)) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Some(Err(e)) => return Err(e),
        };
        tracing::debug!("accepted a client");
        if options.concurrent {
            let (runtime2, service, handle) = (runtime.clone(), service.clone(), handle.clone());
            handle.shutdown.sessions.fetch_add(1, Ordering::SeqCst);
            // Counted before it is spawned, so that a shutdown right now waits for it too.
            runtime.spawn(async move { run_counted(runtime2, stream, service, &handle).await });
        } else {
            serve_connection(runtime.clone(), stream, service.clone(), &handle).await;
        }
    }
    // Graceful: wait until every session has written what it queued and closed.
    loop {
        if handle.sessions() == 0 {
            return Ok(());
        }
        let listener = handle.shutdown.sessions_done.listen();
        if handle.sessions() == 0 {
            return Ok(());
        }
        listener.await;
    }
}
