//! The async layer of qmp-rs, written once for every runtime: QMP (the QEMU Machine Protocol) and the QEMU guest
//! agent over any executor and any byte stream.
//!
//! The protocol (framing, negotiation, ids, flow control, deadlines, the guest agent's rules) lives in the
//! sans-IO core [`qmp_proto`]; this crate moves bytes, time and requests between a [`Transport`] and it. One
//! connection state per connection owns the transport and the core; the handles ([`Qmp`], [`GuestAgent`], both
//! `Clone + Send + Sync`) send it requests and wait for replies, so every call is **cancel safe**: dropping a
//! future never leaves half a command on the wire and never hands a reply to the wrong caller.
//!
//! Who moves it: a call, while it waits for its reply, drives the connection itself in its own task (writes its
//! command, reads when the socket is readable), as a hand-written loop over the socket would; the [`Driver`]
//! future (spawned by the connect helpers) does the rest: the handshake, events while no call waits, timers, the
//! close. A sequential caller costs one task wake-up per command and never a wake-up of another thread. The one
//! rule this asks of you is the ordinary one for futures: poll a call's future when it is woken, or drop it. A
//! call future that was polled once and then kept, neither polled nor dropped, while its task waits on something
//! else, holds up the connection's input (events, other calls' replies) until it is polled again.
//!
//! It is generic over two small traits, the way quinn runs on several runtimes: a [`Runtime`] (a clock, a
//! timer, spawn) and a [`Transport`] (read, write, write with a file descriptor, shut down). [`Net`] adds a
//! runtime's sockets for the `connect_*` helpers and [`Listener`]; [`Streams`] turns a runtime's own streams into
//! transports for [`Qmp::from_stream`]. Use it through an adapter crate, which implements them:
//!
//! | runtime | crate | handle |
//! |---|---|---|
//! | tokio | `qmp-tokio` | `qmp_tokio::Qmp` = `Qmp<qmp_tokio::Tokio>` |
//! | smol, async-std | `qmp-smol` | `qmp_smol::Qmp` = `Qmp<qmp_smol::Smol>` (or `AsyncStd`) |
//! | anything else | this crate | implement [`Runtime`] and [`Transport`], then [`Qmp::with_driver`] |
//!
//! - [`Qmp`]: `connect_unix`, `connect_tcp`, [`from_stream`](Qmp::from_stream),
//!   [`from_transport`](Qmp::from_transport), [`Listener`] when QEMU connects to us;
//!   [`execute`](Qmp::execute), [`execute_raw`](Qmp::execute_raw), [`execute_oob`](Qmp::execute_oob),
//!   [`execute_with_timeout`](Qmp::execute_with_timeout), [`send_fd`](Qmp::send_fd) and
//!   [`add_fd`](Qmp::add_fd) (SCM_RIGHTS), [`close`](Qmp::close), [`closed`](Qmp::closed).
//! - Events: [`Qmp::events`] / [`Qmp::events_named`] give a [`Stream`](futures_core::Stream) per subscriber;
//!   the first subscriber gets every event since the connection started, a slow one gets an
//!   [`EventItem::Lagged`] marker instead of unbounded memory, and the reader never waits for anyone (see
//!   [`events`]).
//! - Jobs: [`Qmp::run_job`] starts a QEMU job and follows it to its end (status, progress, complete or cancel,
//!   error, dismissal) in one call; [`Qmp::watch_job`] follows someone else's (see [`jobs`]).
//! - [`serve`]: the server side: [`qmp_proto::Server`] on any runtime, a handler per command, events
//!   broadcast to every client, graceful shutdown.
//! - [`proxy`]: many clients on one QEMU monitor, each with its own policy (allow-list, deny-list, read-only),
//!   replies routed to their sender, events fanned out, QEMU's queue shared round-robin.
//! - [`proxy`] listens on unix sockets, and with feature `tls` on TCP with TLS and client certificates
//!   (`tls`: rustls with the `ring` provider, `futures-rustls`, `x509-cert` for the certificates' subjects).
//! - [`GuestAgent`]: qemu-ga, synchronised with `guest-sync-delimited` on connect.
//! - Errors come in the core's tiers, the same in every adapter: [`Error::Qmp`] (the server rejected this
//!   command), [`Error::Usage`] (the call was wrong, nothing sent), [`Error::TimedOut`] (this command only),
//!   [`Error::Connection`] (over, sticky).
//! - Logging through `tracing`: wire traffic at TRACE (target `qmp_async::wire`), connection lifecycle at DEBUG (in a
//!   `qmp` span per connection); nothing is printed.
//! - Feature `qapi`: typed commands with the types of [`qmp_qapi`] (re-exported as [`qapi`]), which hold for
//!   every QEMU from 7.2 to 10.0 (`execute_typed`), the server's schema (`Qmp::server_schema`) and typed events
//!   (`EventItem::to_qapi`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod callers;
mod command;
mod connect;
mod connecting;
mod driver;
pub mod events;
mod guest_agent;
mod handle;
pub mod jobs;
mod mailbox;
pub mod proxy;
mod qmp;
mod reply;
mod runtime;
pub mod serve;
mod session;
mod shared;
#[cfg(test)]
mod test_waker;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
#[cfg(feature = "qapi")]
mod typed;

pub use command::AddFdInfo;
pub use connect::Listener;
pub use connecting::Connecting;
pub use driver::{Driver, CLOSE_LINGER};
pub use events::{EventItem, Events};
pub use guest_agent::GuestAgent;
pub use qmp::Qmp;
pub use qmp_proto::adapter::{Error, Options};
pub use qmp_proto::{
    ConnectionError, Greeting, ProtocolViolation, QmpError, RawJson, RequestError, ServerEvent, Timestamp, UsageError,
    Version,
};
/// Typed commands and events (feature `qapi`): the adapter-neutral [`qmp_qapi`] crate (`qmp`, `qga` and
/// `ServerSchema` inside).
#[cfg(feature = "qapi")]
pub use qmp_qapi as qapi;
pub use runtime::{Net, Runtime, Streams, Timer};
pub use transport::{
    fd_passing_unsupported, peer_credentials, recv_with_fds, send_byte_with_fd, Duplex, Io, NoFds, PeerCredentials,
    SendFd, Transport,
};
