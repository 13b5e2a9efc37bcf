//! A blocking client for QMP (the QEMU Machine Protocol) and the QEMU guest agent, over `std::io`.
//!
//! No async runtime, no threads: each call writes its command and reads until its reply arrives, with read
//! timeouts for every deadline. The protocol itself (framing, negotiation, ids, flow control, timeouts) lives in
//! [`qmp_proto`]; this crate only moves bytes and time between a socket and it.
//!
//! - [`Client`]: QMP over a unix socket ([`Client::connect_unix`]), TCP ([`Client::connect_tcp`]) or any
//!   [`Transport`] ([`Client::from_stream`]).
//! - [`GuestAgent`]: the guest agent, synchronised with `guest-sync-delimited` on connect.
//! - Jobs: [`Client::run_job`] starts a QEMU job and follows it to its end in one call; [`Client::watch_job`]
//!   follows someone else's (see [`jobs`]).
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
//! - Feature `qapi`: typed commands ([`Client::execute_typed`], [`GuestAgent::execute_typed`]) with the types of
//!   [`qmp_qapi`], which hold for every QEMU from 7.2 to 10.0, and [`Client::server_schema`].
//!
//! Errors come in the core's tiers: [`Error::Qmp`] (the server rejected this command), [`Error::Usage`] (the call
//! was wrong, nothing sent), [`Error::TimedOut`] (this command only), [`Error::Connection`] (over, sticky).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod driver;
pub mod fake_qemu;
mod guest_agent;
mod job_runner;
mod pipes;
pub mod serve;
mod transport;
#[cfg(feature = "qapi")]
mod typed;

pub use client::{Client, Pending};
pub use guest_agent::GuestAgent;
pub use pipes::Pipes;
pub use qmp_proto::adapter::{Error, Options};
pub use qmp_proto::{
    ConnectionError, Greeting, ProtocolViolation, QmpError, RawJson, RequestError, ServerEvent, Timestamp, UsageError,
    Version,
};
pub use transport::Transport;

/// Jobs to the end in one call ([`Client::run_job`], [`Client::watch_job`]): the vocabulary, shared with the
/// async adapters (the logic is `qmp-async`'s sans-IO [`JobTracker`](jobs::JobTracker); `qmp-async` brings no
/// async runtime along).
pub mod jobs {
    pub use qmp_async::jobs::{
        JobAction, JobCommand, JobError, JobOptions, JobOutcome, JobStatus, JobStep, JobTracker, JobUpdate,
        CANCEL_GRACE,
    };
}
/// Typed commands and events (feature `qapi`): the adapter-neutral [`qmp_qapi`] crate.
#[cfg(feature = "qapi")]
pub use qmp_qapi as qapi;
