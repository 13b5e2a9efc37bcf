//! A scripted fake QEMU for testing code that speaks QMP, without a QEMU binary.
//!
//! You write a [`Script`]: per command, an [`Answer`] (a value, an error, or a handler closure), events before
//! and after it, a delay, and faults ([`Fault`]): silence, a disconnect mid-reply, garbage bytes, a message over
//! the client's limit. [`FakeQemu`] serves it on a unix socket from a thread, so the code under test connects
//! to [`FakeQemu::path`] with any client: `qmp-blocking`, `qmp-tokio`, `qmp-smol`, or another library.
//! Events can also be injected at any moment with [`FakeQemu::event`], and the commands the fake received are
//! listed by [`FakeQemu::commands`]. [`Script::guest_agent`] plays a guest agent instead (no greeting, LF
//! endings, `guest-sync-delimited` answered as qemu-ga answers it).
//!
//! The protocol itself is [`qmp_proto::Server`]'s, byte for byte what qemu-storage-daemon 10 sends: the
//! greeting, `qmp_capabilities` (and QEMU's errors before it), JSON parse errors, malformed commands, id echo,
//! in-order replies, events only after negotiation. The script and its faults live in one sans-IO place,
//! [`FakeSession`] (bytes and time in, bytes out, a deadline and a "close now"); [`FakeQemu`] only carries its
//! bytes, so you can drive a [`FakeSession`] from your own event loop or in memory too.
//!
//! # Record and replay
//! [`RecordingProxy`] records a real session (your code against a real QEMU, through a socket of the proxy's)
//! as a [`Transcript`], in the format of qmp-rs's corpus of real QEMU conversations; [`ReplayServer`] plays
//! it back as a server, checking that the client writes the same bytes, so the code can be tested again
//! without QEMU and a change in what it sends is caught ([`ReplayError::Mismatch`]).
//!
//! # Property tests and fuzzing
//! Feature `arbitrary`: module `generate`, generators of valid and malformed QMP messages
//! (commands, replies, events, greetings; bad JSON, wrong shapes, huge, deeply nested) and whole streams, plus
//! `Arbitrary` types for fuzz targets. Feature `proptest`: module `strategies`, the same
//! generators as proptest strategies.
//!
//! # Blocking
//! ```
//! use std::time::Duration;
//! use qmp_blocking::{Client, Error, Options};
//! use qmp_test_kit::{Answer, FakeQemu, Fault, Script};
//! use serde_json::{json, Value};
//!
//! let script = Script::new()
//!     .on("query-status", Answer::value(json!({"status": "running", "running": true})))
//!     .on("stop", Answer::value(json!({})).event_before("STOP", None))
//!     .on("query-jobs", Answer::value(json!([])).fault(Fault::Silence));
//! let fake = FakeQemu::start(script)?;
//!
//! let mut qmp = Client::connect_unix(fake.path(), Options::default())?;
//! let status: Value = qmp.execute("query-status", ())?;
//! assert_eq!(status["status"], "running");
//! qmp.execute::<Value>("stop", ())?;
//! assert_eq!(qmp.next_event(Some(Duration::ZERO))?.unwrap().name, "STOP");
//! // A hung QEMU: the command times out, the connection is still there.
//! let hung = qmp.execute_with_timeout::<Value>("query-jobs", (), Some(Duration::from_millis(50)));
//! assert!(matches!(hung, Err(Error::TimedOut)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # tokio
//! ```
//! use qmp_test_kit::{Answer, FakeQemu, Fault, Script};
//! use qmp_tokio::{ConnectionError, Error, Options, Qmp};
//! use serde_json::{json, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let script = Script::new()
//!     .once("blockdev-add", Answer::error("GenericError", "Duplicate nodes with node-name='n0'"))
//!     .on("query-block", Answer::value(json!([])).fault(Fault::DisconnectMidReply));
//! let fake = FakeQemu::start(script)?;
//!
//! let qmp = Qmp::connect_unix(fake.path(), Options::default()).await?;
//! let added = qmp.execute::<Value>("blockdev-add", json!({"node-name": "n0"})).await;
//! assert!(matches!(added, Err(Error::Qmp(e)) if e.class == "GenericError"));
//! let cut = qmp.execute::<Value>("query-block", ()).await;
//! assert!(matches!(cut, Err(Error::Connection(ConnectionError::EofMidMessage { .. }))));
//! # Ok(()) }
//! ```
//!
//! # On an async runtime's clock
//! [`serve_stream`] (feature `async`, on by default) carries the same [`FakeSession`] on the runtime itself (tokio, smol or async-std, through
//! `qmp-async`'s runtime traits) over one connection, a socket pair say: its delays are the runtime's timers,
//! so with tokio's paused time a test of a 30-second timeout against a silent fake takes no time at all. It
//! returns a [`FakeHandle`] to inject events and list commands.
//!
//! # Why a crate of its own
//! It sits above `qmp-proto` (whose [`Server`](qmp_proto::Server) it drives) and `qmp-async` (whose runtime
//! and transport traits carry [`serve_stream`]; it brings no runtime), and below nothing: a user of any adapter
//! (or of none) adds it to `[dev-dependencies]` alone, and the library crates stay free of test-only code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod carrier;
mod fake;
#[cfg(feature = "arbitrary")]
pub mod generate;
mod record;
mod replay;
mod script;
#[cfg(feature = "async")]
mod serve_async;
mod session;
#[cfg(feature = "proptest")]
pub mod strategies;
mod transcript;

pub use fake::FakeQemu;
pub use qmp_proto::server::{Command, Failure};
pub use record::RecordingProxy;
pub use replay::{Mismatch, ReplayError, ReplayServer, ReplaySession};
pub use script::{Answer, Fault, OnConnect, Script};
#[cfg(feature = "async")]
pub use serve_async::{serve_connection, serve_stream, FakeHandle};
pub use session::{FakeSession, RECORDED_COMMANDS};
pub use transcript::{Step, Transcript, TranscriptError};
