//! An async client for QMP (the QEMU Machine Protocol) and the QEMU guest agent over `futures-io`, for smol and
//! async-std alike.
//!
//! The protocol (framing, negotiation, ids, flow control, timeouts) lives in [`qmp_proto`]; this crate moves
//! bytes and time between a socket and it. One [`Driver`] future owns the socket and the protocol state; the
//! handles ([`Qmp`], [`GuestAgent`], both `Clone + Send + Sync`) only send it requests and wait for replies,
//! so every call is **cancel safe**: dropping a future never leaves half a command on the wire and never
//! hands a reply to the wrong caller.
//!
//! - [`Qmp`]: [`connect_unix`](Qmp::connect_unix), [`connect_tcp`](Qmp::connect_tcp),
//!   [`from_stream`](Qmp::from_stream) (any `AsyncRead + AsyncWrite`: TLS, vsock, a pipe),
//!   [`from_unix_stream`](Qmp::from_unix_stream), or a [`Listener`] when QEMU connects to you.
//!   [`execute`](Qmp::execute), [`execute_raw`](Qmp::execute_raw), [`execute_oob`](Qmp::execute_oob),
//!   [`execute_with_timeout`](Qmp::execute_with_timeout), [`send_fd`](Qmp::send_fd) and
//!   [`add_fd`](Qmp::add_fd) (SCM_RIGHTS), [`close`](Qmp::close), [`closed`](Qmp::closed),
//!   [`connection_error`](Qmp::connection_error).
//! - Events: [`Qmp::events`] / [`Qmp::events_named`] give a [`Stream`](futures_core::Stream) per subscriber;
//!   each gets every event, a slow one gets an [`EventItem::Lagged`] marker instead of unbounded memory, and
//!   the reader never waits for anyone (see [`events`] for the exact semantics).
//! - [`GuestAgent`]: qemu-ga, synchronised with `guest-sync-delimited` on connect.
//! - Errors come in the core's tiers: [`Error::Qmp`] (the server rejected this command), [`Error::Usage`]
//!   (the call was wrong, nothing sent), [`Error::TimedOut`] (this command only), [`Error::Connection`]
//!   (over, sticky).
//! - Logging through `tracing`: wire traffic at TRACE (target `qmp_smol::wire`), connection lifecycle at DEBUG
//!   (in a `qmp_smol` span per connection); nothing is printed.
//!
//! - Typed commands and events (feature `qapi`): `execute_typed` takes any command struct of the `qapi-qmp` /
//!   `qapi-qga` crates (re-exported as `qmp_smol::qapi`) and returns its typed result;
//!   `qapi::EventItemExt::to_qapi` gives the typed `qapi_qmp::Event` of an [`EventItem`].
//!
//! # Runtimes
//! Features pick the runtime that spawns the driver and times it: `smol` (default) and `async-std` (deprecated
//! upstream, still supported). Both run their sockets on the async-io reactor, which the socket helpers use.
//! With both features on, [`Options::runtime`] chooses (smol by default). With neither, implement [`Runtime`]
//! for your executor and use [`Qmp::with_driver`], which returns the driver for you to spawn.
//!
//! # Example: smol
//! ```no_run
//! # #[cfg(feature = "smol")]
//! # fn main() -> Result<(), qmp_smol::Error> {
//! use futures_lite::StreamExt;
//! use qmp_smol::{EventItem, Options, Qmp};
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! struct Status {
//!     status: String,
//!     running: bool,
//! }
//!
//! smol::block_on(async {
//!     // qemu-system-x86_64 -M none -display none -qmp unix:/tmp/qmp.sock,server=on,wait=off
//!     let qmp = Qmp::connect_unix("/tmp/qmp.sock", Options::default()).await?;
//!     println!("QEMU {}", qmp.greeting().version);
//!
//!     // Events: subscribe first, then read them in another task.
//!     let mut events = qmp.events();
//!     let printer = smol::spawn(async move {
//!         while let Some(item) = events.next().await {
//!             match item {
//!                 EventItem::Event(event) => println!("event {} {:?}", event.name, event.data),
//!                 EventItem::Lagged(n) => println!("missed {n} events"),
//!                 _ => {}
//!             }
//!         }
//!     });
//!
//!     // Commands from many tasks at once: each gets its own reply.
//!     let tasks: Vec<_> = (0..4)
//!         .map(|_| {
//!             let qmp = qmp.clone();
//!             smol::spawn(async move { qmp.execute::<Status>("query-status", ()).await })
//!         })
//!         .collect();
//!     for task in tasks {
//!         println!("{:?}", task.await?);
//!     }
//!     match qmp.execute::<serde_json::Value>("no-such-command", ()).await {
//!         Err(qmp_smol::Error::Qmp(e)) => println!("rejected: {} ({})", e.desc, e.class),
//!         other => println!("{other:?}"),
//!     }
//!     qmp.close().await;
//!     printer.await; // the event stream ends with the session
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "smol"))] fn main() {}
//! ```
//!
//! # Example: async-std
//! ```no_run
//! # #[cfg(feature = "async-std")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use qmp_smol::{AsyncStd, GuestAgent, Options, Qmp};
//!
//! async_std::task::block_on(async {
//!     // With both features on, pick async-std explicitly; with only `async-std` it is the default.
//!     let options = Options::default().runtime(AsyncStd).command_timeout(Some(Duration::from_secs(5)));
//!
//!     let qmp = Qmp::connect_unix("/tmp/qmp.sock", options.clone()).await?;
//!     let version: serde_json::Value = qmp.execute("query-version", ()).await?;
//!     println!("{version}");
//!     if qmp.oob_enabled() {
//!         let yank: serde_json::Value = qmp.execute_oob("query-yank", ()).await?;
//!         println!("yank instances: {yank}");
//!     }
//!     // Pass a file descriptor (SCM_RIGHTS), named for later commands.
//!     let file = std::fs::File::open("/dev/null")?;
//!     qmp.send_fd("null", &file).await?;
//!     qmp.execute::<serde_json::Value>("closefd", serde_json::json!({"fdname": "null"})).await?;
//!     qmp.close().await;
//!
//!     // qemu-ga -m unix-listen -p /tmp/qga.sock
//!     let ga = GuestAgent::connect_unix("/tmp/qga.sock", options).await?;
//!     let info: serde_json::Value = ga.execute("guest-info", ()).await?;
//!     println!("agent {}", info["version"]);
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })
//! # }
//! # #[cfg(not(feature = "async-std"))] fn main() {}
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod connecting;
mod driver;
pub mod events;
mod guest_agent;
mod handle;
#[cfg(any(feature = "smol", feature = "async-std"))]
mod net;
mod options;
mod qmp;
mod runtime;
mod shared;
mod transport;
#[cfg(feature = "qapi")]
mod typed;

pub use connecting::Connecting;
pub use driver::Driver;
pub use events::Events;
pub use guest_agent::GuestAgent;
#[cfg(any(feature = "smol", feature = "async-std"))]
pub use net::Listener;
pub use options::Options;
pub use qmp::Qmp;
pub use qmp_proto::adapter::{AddFdInfo, Error, EventItem};
pub use qmp_proto::{
    ConnectionError, Greeting, ProtocolViolation, QmpError, RawJson, ServerEvent, Timestamp, UsageError, Version,
};
/// Typed commands and events (feature `qapi`): the adapter-neutral [`qmp_qapi`] crate, with `qapi_qmp`,
/// `qapi_qga` and `qapi_spec` inside.
#[cfg(feature = "qapi")]
pub use qmp_qapi as qapi;
#[cfg(feature = "async-std")]
pub use runtime::AsyncStd;
#[cfg(feature = "smol")]
pub use runtime::Smol;
pub use runtime::{default_runtime, AsyncTimer, Runtime};
