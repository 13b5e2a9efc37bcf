//! An async [tokio] client for QMP (the QEMU Machine Protocol) and the QEMU guest agent.
//!
//! The protocol itself (framing, negotiation, ids, flow control, timeouts) lives in the sans-IO core
//! [`qmp_proto`]; this crate only moves bytes, time and requests between a socket and it. One driver task per
//! connection owns the socket and the core; [`Qmp`] and [`GuestAgent`] handles (`Clone + Send + Sync`) send it
//! requests over a channel and wait for their answers. That is what makes every call cancel-safe: dropping a
//! future never leaves half a command on the wire and never hands a reply to the wrong caller.
//!
//! - [`Qmp`]: [`connect_unix`](Qmp::connect_unix), [`connect_tcp`](Qmp::connect_tcp),
//!   [`from_stream`](Qmp::from_stream) (any `AsyncRead + AsyncWrite`: TLS, vsock, a pipe), or [`Listener`] when
//!   QEMU connects to us. [`execute`](Qmp::execute), [`execute_raw`](Qmp::execute_raw),
//!   [`execute_oob`](Qmp::execute_oob), [`execute_with_timeout`](Qmp::execute_with_timeout), many at once from
//!   many tasks (pipelined, at most 8 on the wire as QEMU wants).
//! - Events: [`Qmp::events`] is a `Stream` per subscriber; every subscriber gets every event (or only some names,
//!   [`Qmp::events_named`]); a subscriber that falls behind gets [`EventItem::Lagged`] instead of growing memory,
//!   and commands keep working when nobody reads events.
//! - File descriptors: [`Qmp::send_fd`] (`getfd`), [`Qmp::add_fd`] (`add-fd`) and [`Qmp::execute_with_fd`] pass a
//!   descriptor over SCM_RIGHTS on unix sockets, in order with the command that takes it.
//! - [`GuestAgent`]: qemu-ga, synchronised with `guest-sync-delimited` on connect; commands that never reply.
//! - Time is tokio's ([`tokio::time`]): tests can run with paused time.
//! - Logging through [`tracing`]: the connection's lifecycle at DEBUG, the bytes on the wire at TRACE (target
//!   `qmp_tokio::wire`). Nothing is printed.
//! - Feature `qapi`: typed commands and events from the `qapi-qmp` / `qapi-qga` crates ([`Qmp::execute_typed`],
//!   [`qapi::EventItemExt::to_qapi`]), through the adapter-neutral [`qmp_qapi`] crate (re-exported as [`qapi`]).
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
//!     println!("connected to QEMU {} (oob: {})", qmp.greeting().version, qmp.oob_enabled());
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
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod driver;
mod events;
mod guest_agent;
mod handle;
mod listener;
mod options;
mod qmp;
mod start;
mod transport;
#[cfg(feature = "qapi")]
mod typed;

pub use events::Events;
pub use guest_agent::GuestAgent;
pub use listener::Listener;
pub use options::Options;
pub use qmp::Qmp;
pub use qmp_proto::adapter::{AddFdInfo, Error, EventItem};
pub use qmp_proto::{
    ConnectionError, Greeting, ProtocolViolation, QmpError, RawJson, RequestError, ServerEvent, Timestamp, UsageError,
    Version,
};
/// Typed commands and events (feature `qapi`): the adapter-neutral [`qmp_qapi`] crate, with `qapi_qmp`,
/// `qapi_qga` and `qapi_spec` inside.
#[cfg(feature = "qapi")]
pub use qmp_qapi as qapi;
