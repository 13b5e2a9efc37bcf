//! An async [tokio] client for QMP (the QEMU Machine Protocol) and the QEMU guest agent.
//!
//! The protocol lives in the sans-IO core `qmp_proto`, the connection machinery (one driver task per
//! connection, cancel-safe handles, event streams, the typed layer) in the runtime-neutral [`qmp_async`]; this
//! crate is tokio's part only: the [`Tokio`] runtime (tokio's clock, timer and spawn) and its transports (unix
//! and TCP sockets, SCM_RIGHTS on unix sockets, pipes, any `AsyncRead + AsyncWrite`). [`Qmp`], [`GuestAgent`]
//! and [`Listener`] are qmp-async's types on tokio; their documentation is there.
//!
//! - [`Qmp`]: [`connect_unix`](Qmp::connect_unix), [`connect_tcp`](Qmp::connect_tcp),
//!   [`from_stream`](Qmp::from_stream) (any tokio stream: TLS, vsock, `tokio::io::join(read, write)`),
//!   [`from_unix_stream`](Qmp::from_unix_stream), [`from_pipes`](Qmp::from_pipes),
//!   [`spawn_stdio`](Qmp::spawn_stdio) (a QEMU with `-qmp stdio`), or [`Listener`] when QEMU connects to us.
//! - Events: [`Qmp::events`] is a `Stream` per subscriber; the first one also gets the events of the handshake.
//! - Time is tokio's ([`tokio::time`]): tests can run with paused time.
//! - Feature `qapi`: typed commands and events (`execute_typed`, `EventItem::to_qapi`).
//!
//! # Example
//! Start a QEMU to talk to, for example
//! `qemu-system-x86_64 -M none -display none -qmp unix:/tmp/qmp.sock,server=on,wait=off`, then:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use qmp_tokio::{EventItem, Options, Qmp};
//! use serde::Deserialize;
//! use serde_json::{json, Value};
//! use tokio_stream::StreamExt;
//!
//! #[derive(Debug, Deserialize)]
//! struct Status {
//!     status: String,
//!     running: bool,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), qmp_tokio::Error> {
//!     let qmp = Qmp::connect_unix("/tmp/qmp.sock", Options::default()).await?;
//!     println!("connected to QEMU {} (oob: {})", qmp.greeting().version_string(), qmp.oob_enabled());
//!
//!     // Events: subscribe before acting; every subscriber sees every event.
//!     let mut events = qmp.events_named(&["STOP", "RESUME"]);
//!     let watcher = tokio::spawn(async move {
//!         while let Some(item) = events.next().await {
//!             match item {
//!                 EventItem::Event(ev) => println!("event {} at {:?}", ev.name, ev.timestamp),
//!                 EventItem::Lagged(n) => println!("missed {n} events"),
//!                 _ => {}
//!             }
//!         }
//!     });
//!
//!     // Typed replies, and several commands in flight at once from one or many tasks.
//!     let status: Status = qmp.execute("query-status", ()).await?;
//!     println!("{status:?}");
//!     let (version, commands) = tokio::join!(
//!         qmp.execute::<Value>("query-version", ()),
//!         qmp.execute::<Vec<Value>>("query-commands", ()),
//!     );
//!     println!("QEMU {} knows {} commands", version?["qemu"], commands?.len());
//!     qmp.execute::<Value>("stop", ()).await?;
//!     qmp.execute::<Value>("cont", ()).await?;
//!
//!     // The server's errors are values; the connection goes on.
//!     match qmp.execute::<Value>("no-such-command", ()).await {
//!         Err(qmp_tokio::Error::Qmp(e)) => println!("{}: {}", e.class, e.desc),
//!         other => println!("{other:?}"),
//!     }
//!
//!     // A timeout of its own, and an out-of-band command that may overtake in-band ones.
//!     let _: Value = qmp.execute_with_timeout("query-kvm", (), Some(Duration::from_secs(1))).await?;
//!     if qmp.oob_enabled() {
//!         let yank: Value = qmp.execute_oob("query-yank", ()).await?;
//!         println!("yank instances: {yank}");
//!     }
//!
//!     // Hand QEMU a file descriptor, then take it back.
//!     let file = std::fs::File::open("/dev/null").map_err(qmp_tokio::Error::FdPassing)?;
//!     qmp.send_fd("null0", &file).await?;
//!     qmp.execute::<Value>("closefd", json!({"fdname": "null0"})).await?;
//!
//!     qmp.close().await;
//!     watcher.await.ok();
//!     println!("closed: {:?}", qmp.connection_error());
//!     Ok(())
//! }
//! ```
//!
//! Errors come in the core's tiers: [`Error::Qmp`] (the server rejected this command), [`Error::Usage`] (the call
//! was wrong, nothing sent), [`Error::TimedOut`] (this command only), [`Error::Connection`] (over, sticky).
//! Errors come in the core's tiers, the same in every adapter: [`Error::Qmp`] (the server rejected this
//! command), [`Error::Usage`] (the call was wrong, nothing sent), [`Error::TimedOut`] (this command only),
//! [`Error::Connection`] (over, sticky).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod runtime;
mod transport;

pub use qmp_async::events;
/// Jobs to the end in one call (`Qmp::run_job`, `Qmp::watch_job`): see [`qmp_async::jobs`].
pub use qmp_async::jobs;
/// Typed commands and events (feature `qapi`): `qmp_qapi`, with its `qmp` and `qga` modules inside.
#[cfg(feature = "qapi")]
pub use qmp_async::qapi;
pub use qmp_async::serve;
pub use qmp_async::{
    AddFdInfo, Connecting, ConnectionError, Driver, Error, EventItem, Events, Greeting, Options, ProtocolViolation,
    QmpError, RawJson, RequestError, ServerEvent, Timestamp, UsageError, Version,
};
pub use runtime::{Tokio, TokioTimer};
pub use transport::{Io, Pipes, Unix, UnixFds};

/// A QMP connection on tokio ([`qmp_async::Qmp`]).
pub type Qmp = qmp_async::Qmp<Tokio>;
/// A guest-agent connection on tokio ([`qmp_async::GuestAgent`]).
pub type GuestAgent = qmp_async::GuestAgent<Tokio>;
/// A unix socket QEMU connects to, on tokio ([`qmp_async::Listener`]).
pub type Listener = qmp_async::Listener<Tokio>;

/// Serves `service` (a fake QEMU, a VMM's monitor) on the unix socket `path`, on tokio: see
/// [`qmp_async::serve::serve_unix`]. Spawn or await the returned future; the handle broadcasts events and
/// shuts the server down.
pub fn serve_unix(
    path: impl AsRef<std::path::Path>,
    service: serve::Service,
    options: serve::ServeOptions,
) -> std::io::Result<(serve::ServerHandle, serve::Serving)> {
    serve::serve_unix(Tokio, path, service, options)
}

/// Serves `service` on the TCP address `addr` on the current tokio runtime: see
/// [`qmp_async::serve::serve_tcp`].
pub fn serve_tcp(
    addr: impl std::net::ToSocketAddrs,
    service: serve::Service,
    options: serve::ServeOptions,
) -> std::io::Result<(serve::ServerHandle, serve::Serving)> {
    serve::serve_tcp(Tokio, addr, service, options)
}
