//! A blocking client for QMP (the QEMU Machine Protocol) and the QEMU guest agent, over `std::io`.
//!
//! No async runtime, no threads: each call writes its command and reads until its reply arrives, with read
//! timeouts for every deadline. The protocol itself (framing, negotiation, ids, flow control, timeouts) lives in
//! [`qmp_proto`]; this crate only moves bytes and time between a socket and it.
//!
//! - [`Client`]: QMP over a unix socket ([`Client::connect_unix`]), TCP ([`Client::connect_tcp`]) or any
//!   [`Transport`] ([`Client::from_stream`]).
//! - [`GuestAgent`]: the guest agent, synchronised with `guest-sync-delimited` on connect.
//! - [`serve`]: the server side over `std::io` (one client at a time, as QEMU), and [`fake_qemu`]: a fake
//!   qemu-storage-daemon 10 for tests and demos without QEMU (what `qmp serve` runs).
//! - Events are buffered (bounded, see [`Options::event_buffer`]) while you run commands, and taken with
//!   [`Client::next_event`].
//!
//! ```no_run
//! use qmp_blocking::{Client, Options};
//! #[derive(serde::Deserialize)]
//! struct Status { status: String, running: bool }
//!
//! let mut qmp = Client::connect_unix("/tmp/qmp.sock", Options::default())?;
//! let status: Status = qmp.execute("query-status", ())?;
//! println!("{} (running: {})", status.status, status.running);
//! # Ok::<(), qmp_blocking::Error>(())
//! ```
//!
//! Errors come in the core's tiers: [`Error::Qmp`] (the server rejected this command), [`Error::Usage`] (the call
//! was wrong, nothing sent), [`Error::TimedOut`] (this command only), [`Error::Connection`] (over, sticky).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod driver;
pub mod fake_qemu;
mod guest_agent;
pub mod serve;
mod transport;

pub use client::{Client, Pending};
pub use guest_agent::GuestAgent;
pub use qmp_proto::adapter::{Error, Options};
pub use qmp_proto::{
    ConnectionError, Greeting, ProtocolViolation, QmpError, RawJson, RequestError, ServerEvent, Timestamp, UsageError,
    Version,
};
pub use transport::Transport;
