//! A sans-IO implementation of the QEMU Machine Protocol (QMP) and the QEMU Guest Agent protocol (QGA).
//!
//! This crate is the protocol and nothing else: no sockets, no async runtime, no threads, no clock. A
//! [`Client`] takes the bytes you read and the time you pass in, and gives back events, bytes to write and the
//! next deadline. The adapters `qmp-tokio`, `qmp-smol` and `qmp-blocking` drive it over real sockets; use this
//! crate directly to embed QMP in your own I/O loop, or to test against it without any I/O at all.
//!
//! # What it does for you
//! - **Framing by JSON value**, not by line: CRLF (QMP), LF (qemu-ga), `pretty=on` multi-line output and
//!   0xFF-delimited guest-agent replies all work; any split of the input gives the same events.
//! - **Negotiation**: the greeting is answered with `qmp_capabilities` (enabling `oob` when offered and
//!   configured); commands you issue earlier wait until it succeeds; events that arrive before its reply are
//!   delivered as events.
//! - **Ids and routing**: every command gets the smallest integer id not in use (cheap for QEMU to read: one
//!   digit while fewer than 10 commands are alive, however long the connection lives); replies are routed by
//!   id; replies nobody waits for (cancelled, timed out) are swallowed, and their ids stay reserved until they
//!   come ([`Client::abandoned`]); unknown ones are reported. A [`RequestId`] stays unique for the client's life.
//!   Opt-in, QMP only: [`Config::in_band_ids`]`(false)` sends in-band commands with no id at all (7+ bytes fewer
//!   for QEMU to read, ~17 us of its CPU per command) and matches each reply without one to the oldest in-band
//!   command on the wire, since QEMU answers them in order; OOB commands keep their ids. The price: replies in
//!   a trace of the wire carry no id.
//! - **Flow control**: at most 8 in-band commands on the wire (QEMU's own queue length), OOB bypasses it.
//! - **Deadlines** for the handshake (greeting and negotiation, or the guest agent's connect-time sync) and for
//!   each command, on the caller's clock.
//! - **Bounds** on message size, pending commands and undrained events; overflow is reported, never absorbed.
//! - **Classification at framing speed**: a reply is routed without parsing its payload into anything. Its
//!   `return` payload (an object or array, as in every reply QEMU writes) is not even validated when it
//!   arrives: the framer already found where it ends, and it is validated once, when you parse it
//!   ([`RawJson::deserialize`]; invalid JSON there is serde_json's syntax error, for the adapters the `Decode`
//!   error of that one call). Everything else in a message is checked on arrival: a message that is not JSON
//!   outside that payload is a [`ProtocolViolation`]. The exact guarantee: [`message::classify_framed`].
//! - **Guest agent**: no greeting; `guest-sync-delimited` resynchronisation, on demand
//!   ([`Client::guest_sync`]) or first thing ([`Config::sync_on_connect`]: `Ready` once the agent echoed the
//!   nonce you pass, within the handshake deadline); commands that reply only when they fail (an error ends
//!   them; EOF or their deadline, the grace period, ends them as a success: [`DEFAULT_NO_REPLY_GRACE`]).
//!
//! # For adapters
//! [`adapter`] holds what every adapter shares and re-exports (the connection `Options`, the `Error`): plain
//! types and helpers, no I/O, nothing the state machine uses.
//!
//! # The driving contract
//! After **every** input ([`Client::handle_input`], [`Client::handle_eof`], [`Client::handle_timeout`]) and every
//! call ([`Client::execute`], [`Client::cancel`], [`Client::guest_sync`], [`Client::close`]):
//! 1. drain [`Client::poll_event`] until it returns `None`;
//! 2. call [`Client::poll_transmit`] and write everything it gave you;
//! 3. re-arm your timer from [`Client::poll_timeout`], and call `handle_timeout` when it fires.
//!
//! Nothing happens between calls: the client never blocks, reads a clock or allocates without bound.
//!
//! What the contract allows (the example `examples/mio_many.rs` in this crate does all of it, for many
//! connections on one thread):
//! - a read buffer of any size: input may be split anywhere;
//! - several `handle_input` calls before draining, up to [`Config::max_queued_events`] server events;
//! - `execute` and `poll_transmit` while bytes of an earlier `poll_transmit` are still unwritten (after a
//!   partial write): keep the tail in front, new commands are appended behind it;
//! - one deadline set for many clients: each client's [`Client::poll_timeout`] is its earliest deadline;
//! - a default command deadline: [`Config::command_timeout`] with [`ExecuteOptions::now`];
//! - two closes: [`Client::close`] now (unwritten commands are dropped), [`Client::close_gracefully`] once the
//!   commands accepted so far have ended.
//!
//! # Errors
//! Three tiers (see [`error`]): [`QmpError`] arrives in a [`ClientEvent::Reply`] when the server rejects one
//! command (and a reply whose payload is not valid JSON fails only the parse of that payload); [`UsageError`] is returned at once when a call is wrong and nothing was sent; [`ConnectionError`]
//! arrives once in [`ClientEvent::Closed`] and is sticky. [`ProtocolViolation`]s (a malformed message, an unknown
//! id, an id-less error) are reported as events and the session goes on.
//!
//! # Example: a whole client over a `UnixStream`
//! The server here is a thread playing QEMU's part over a socket pair; point the same loop at
//! `UnixStream::connect("/path/to/qmp.sock")` to talk to a real QEMU.
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::time::{Duration, Instant};
//! use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions};
//!
//! let (mut sock, mut qemu) = UnixStream::pair()?;
//! std::thread::spawn(move || -> std::io::Result<()> {
//!     let mut buf = [0u8; 4096];
//!     qemu.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \
//!                     \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n")?;
//!     qemu.read(&mut buf)?; // {"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":1}
//!     qemu.write_all(b"{\"return\": {}, \"id\": 1}\r\n")?;
//!     qemu.read(&mut buf)?; // {"execute":"query-status","id":1}: qmp_capabilities' id is free again
//!     qemu.write_all(b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n\
//!                      {\"return\": {\"status\": \"running\", \"running\": true}, \"id\": 1}\r\n")?;
//!     Ok(()) // dropping the socket is EOF
//! });
//!
//! let mut client = Client::new(Config::qmp(), Instant::now());
//! let mut query = None;
//! let (mut buf, mut out) = (vec![0u8; 64 * 1024], Vec::new());
//! 'session: loop {
//!     // 1. drain events
//!     while let Some(event) = client.poll_event() {
//!         match event {
//!             ClientEvent::Ready { oob } => {
//!                 assert!(oob);
//!                 let opts = ExecuteOptions::new().deadline(Instant::now() + Duration::from_secs(5));
//!                 query = Some(client.execute_no_args("query-status", opts)?);
//!             }
//!             ClientEvent::Event(ev) => assert_eq!(ev.name, "RESUME"),
//!             ClientEvent::Reply { id, result } => {
//!                 assert_eq!(Some(id), query);
//!                 let status: serde_json::Value = result?.deserialize()?;
//!                 assert_eq!(status["status"], "running");
//!             }
//!             ClientEvent::Closed(cause) => {
//!                 println!("closed: {cause}");
//!                 break 'session;
//!             }
//!             other => println!("{other:?}"),
//!         }
//!     }
//!     // 2. transmit
//!     client.poll_transmit(&mut out);
//!     sock.write_all(&out)?;
//!     out.clear();
//!     // 3. wait for input until the next deadline
//!     let now = Instant::now();
//!     match client.poll_timeout() {
//!         Some(at) if at <= now => {
//!             client.handle_timeout(now);
//!             continue;
//!         }
//!         Some(at) => sock.set_read_timeout(Some(at - now))?,
//!         None => sock.set_read_timeout(None)?,
//!     }
//!     match sock.read(&mut buf) {
//!         Ok(0) => client.handle_eof(),
//!         Ok(n) => client.handle_input(&buf[..n]),
//!         Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
//!             client.handle_timeout(Instant::now())
//!         }
//!         Err(e) => client.handle_transport_error(e.to_string()),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod adapter;
mod client;
mod config;
pub mod encode;
pub mod error;
pub mod framer;
mod ids;
pub mod message;
mod raw;
pub mod server;
mod timers;

pub use client::{Client, ClientEvent, RequestId};
pub use config::{Config, ExecuteOptions, Mode, DEFAULT_NO_REPLY_GRACE, ORDERED_COMMAND_MAX};
pub use error::{ConnectionError, ProtocolViolation, QmpError, RequestError, UsageError};
pub use message::{Greeting, ServerEvent, Timestamp, Version};
pub use raw::RawJson;
pub use server::{Server, ServerConfig};
