//! An async client for QMP (the QEMU Machine Protocol) and the QEMU guest agent on smol and async-std.
//!
//! The protocol lives in the sans-IO core `qmp_proto`, the connection machinery (one driver per connection,
//! cancel-safe handles, event streams, the typed layer) in the runtime-neutral [`qmp_async`]; this crate is the
//! async-io part only: the runtime ([`OnAsyncIo`]: async-io's clock and timers, tasks spawned by [`Smol`] or
//! [`AsyncStd`]) and its transports (unix and TCP sockets, SCM_RIGHTS on unix sockets, pipes, any futures-io
//! stream). [`Qmp`], [`GuestAgent`] and [`Listener`] are qmp-async's types on that runtime; their documentation
//! is there.
//!
//! # Runtimes
//! Features pick the executor: `smol` (default) and `async-std` (deprecated upstream, still supported). Both run
//! on the async-io reactor. The top-level [`Qmp`], [`GuestAgent`] and [`Listener`] run on smol when its feature
//! is on, else on async-std; [`async_std`](mod@crate::async_std) names them on async-std. For another executor
//! over async-io, implement [`Spawn`] and use `qmp_async::Qmp<OnAsyncIo<YourSpawn>>`.
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
//!     println!("QEMU {}", qmp.greeting().version_string());
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
//! use qmp_smol::async_std::{GuestAgent, Qmp};
//! use qmp_smol::Options;
//!
//! async_std::task::block_on(async {
//!     // `qmp_smol::async_std` names the handles on async-std (the top-level ones run on smol when its
//!     // feature is on).
//!     let options = Options::default().command_timeout(Some(Duration::from_secs(5)));
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
    AddFdInfo, Connecting, ConnectionError, Driver, Duplex, Error, EventItem, Events, Greeting, Io, Options,
    ProtocolViolation, QmpError, RawJson, RequestError, ServerEvent, Timestamp, UsageError, Version,
};
pub use runtime::{AsyncIoTimer, OnAsyncIo, Spawn};
#[cfg(feature = "async-std")]
pub use runtime::{AsyncStd, AsyncStdExecutor};
#[cfg(feature = "smol")]
pub use runtime::{Smol, SmolExecutor};
pub use transport::{Pipes, Tcp, TcpFds, Unix, UnixFds};

/// The runtime of the top-level handles: smol when its feature is on, else async-std.
#[cfg(feature = "smol")]
pub type DefaultRuntime = Smol;
/// The runtime of the top-level handles: smol when its feature is on, else async-std.
#[cfg(all(feature = "async-std", not(feature = "smol")))]
pub type DefaultRuntime = AsyncStd;

/// A QMP connection ([`qmp_async::Qmp`]) on the default runtime.
#[cfg(any(feature = "smol", feature = "async-std"))]
pub type Qmp = qmp_async::Qmp<DefaultRuntime>;
/// A guest-agent connection ([`qmp_async::GuestAgent`]) on the default runtime.
#[cfg(any(feature = "smol", feature = "async-std"))]
pub type GuestAgent = qmp_async::GuestAgent<DefaultRuntime>;
/// A unix socket QEMU connects to ([`qmp_async::Listener`]) on the default runtime.
#[cfg(any(feature = "smol", feature = "async-std"))]
pub type Listener = qmp_async::Listener<DefaultRuntime>;

/// Serves `service` on the unix socket `path` on the default runtime: see [`qmp_async::serve::serve_unix`].
#[cfg(any(feature = "smol", feature = "async-std"))]
pub fn serve_unix(
    path: impl AsRef<std::path::Path>,
    service: serve::Service,
    options: serve::ServeOptions,
) -> std::io::Result<(serve::ServerHandle, serve::Serving)> {
    serve::serve_unix(DefaultRuntime::default(), path, service, options)
}

/// Serves `service` on the TCP address `addr` on the default runtime: see [`qmp_async::serve::serve_tcp`].
#[cfg(any(feature = "smol", feature = "async-std"))]
pub fn serve_tcp(
    addr: impl std::net::ToSocketAddrs,
    service: serve::Service,
    options: serve::ServeOptions,
) -> std::io::Result<(serve::ServerHandle, serve::Serving)> {
    serve::serve_tcp(DefaultRuntime::default(), addr, service, options)
}

/// The handles on async-std (feature `async-std`).
#[cfg(feature = "async-std")]
pub mod async_std {
    use super::AsyncStd;

    /// Serves `service` on the unix socket `path` on async-std: see [`qmp_async::serve::serve_unix`].
    pub fn serve_unix(
        path: impl AsRef<std::path::Path>,
        service: super::serve::Service,
        options: super::serve::ServeOptions,
    ) -> std::io::Result<(super::serve::ServerHandle, super::serve::Serving)> {
        super::serve::serve_unix(AsyncStd::default(), path, service, options)
    }

    /// Serves `service` on the TCP address `addr` on async-std: see [`qmp_async::serve::serve_tcp`].
    pub fn serve_tcp(
        addr: impl std::net::ToSocketAddrs,
        service: super::serve::Service,
        options: super::serve::ServeOptions,
    ) -> std::io::Result<(super::serve::ServerHandle, super::serve::Serving)> {
        super::serve::serve_tcp(AsyncStd::default(), addr, service, options)
    }

    /// A QMP connection ([`qmp_async::Qmp`]) on async-std.
    pub type Qmp = qmp_async::Qmp<AsyncStd>;
    /// A guest-agent connection ([`qmp_async::GuestAgent`]) on async-std.
    pub type GuestAgent = qmp_async::GuestAgent<AsyncStd>;
    /// A unix socket QEMU connects to ([`qmp_async::Listener`]) on async-std.
    pub type Listener = qmp_async::Listener<AsyncStd>;
}
