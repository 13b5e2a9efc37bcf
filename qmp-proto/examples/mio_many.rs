//! Many QMP connections driven by the sans-IO core from ONE thread with mio: the pattern for embedding
//! `qmp-proto` in your own I/O loop.
//!
//! ```sh
//! cargo run -p qmp-proto --example mio_many -- [-n COMMANDS] [-w IN_FLIGHT] SOCKET...
//! ```
//! Connects to every QMP socket, and on each runs COMMANDS `query-version` round trips (IN_FLIGHT at a time),
//! then closes gracefully. What it shows:
//! - one `Client` per connection, one `mio::Poll`, one read buffer shared by all (its size does not matter);
//! - the driving contract after every input or call: drain events, transmit, re-arm the deadline;
//! - partial writes: each connection keeps its unwritten tail in `out` and goes on issuing commands, which the
//!   core appends behind it; the rest goes when the socket is writable again;
//! - ONE deadline set for all connections (`BTreeSet<(Instant, token)>`), from each client's `poll_timeout`;
//! - a default command deadline (`Config::command_timeout`) started from the `now` passed with each command;
//! - `close_gracefully`: the commands already accepted finish, then `Closed(Local)`.
//!
//! `run` is also what the CI test (`tests/mio_example.rs`) and the `embedded` bench call.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use qmp_proto::{Client, ClientEvent, Config, ConnectionError, ExecuteOptions};

/// One connection: its socket, its core, the bytes not written yet and its progress.
struct Connection {
    stream: UnixStream,
    client: Client,
    /// Bytes from `poll_transmit` not yet taken by the socket (after a partial write, the tail).
    out: Vec<u8>,
    /// The deadline this connection has in the shared set.
    armed: Option<Instant>,
    /// Commands still to issue, and replies received.
    to_issue: usize,
    replies: usize,
    /// The versions the server reported (one per reply), checked by the caller.
    majors: Vec<u64>,
    done: bool,
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    /// Replies received, per connection.
    pub replies: Vec<usize>,
    /// The major version from every reply, per connection (each must be the server's).
    pub majors: Vec<Vec<u64>>,
}

/// Runs `commands` round trips on each socket in `paths`, `in_flight` at a time per connection, from one
/// thread; `Ok` once every connection closed gracefully.
#[allow(dead_code)] // the bench calls `run_with`
pub fn run(paths: &[PathBuf], commands: usize, in_flight: usize) -> io::Result<Report> {
    run_with(paths, commands, in_flight, || {})
}

/// [`run`], calling `all_live` once, when every connection has had its first reply (the bench reads the
/// process's memory there).
pub fn run_with(
    paths: &[PathBuf],
    commands: usize,
    in_flight: usize,
    mut all_live: impl FnMut(),
) -> io::Result<Report> {
    let mut all_live_called = false;
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(paths.len());
    let config = Config::qmp().command_timeout(Some(Duration::from_secs(10)));
    for (i, path) in paths.iter().enumerate() {
        let mut stream = UnixStream::connect(path)?;
        poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        let client = Client::new(config.clone(), Instant::now());
        conns.push(Connection {
            stream,
            client,
            out: Vec::new(),
            armed: None,
            to_issue: commands,
            replies: 0,
            majors: Vec::new(),
            done: false,
        });
    }
    // The one deadline set: (when, connection).
    let mut deadlines: BTreeSet<(Instant, usize)> = BTreeSet::new();
    let mut events = Events::with_capacity(1024);
    // Shared by every connection; any size works (the core keeps partial messages itself).
    let mut buf = vec![0u8; 16 * 1024];
    while conns.iter().any(|c| !c.done) {
        let now = Instant::now();
        let timeout = deadlines.first().map(|(at, _)| at.saturating_duration_since(now));
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let mut touched = BTreeSet::new();
        for event in events.iter() {
            let i = event.token().0;
            let conn = &mut conns[i];
            if conn.done {
                continue;
            }
            if event.is_readable() || event.is_read_closed() {
                read_all(conn, &mut buf);
            }
            touched.insert(i);
        }
        // Deadlines that passed.
        let now = Instant::now();
        while let Some(&(at, i)) = deadlines.first() {
            if at > now {
                break;
            }
            deadlines.pop_first();
            conns[i].armed = None;
            conns[i].client.handle_timeout(now);
            touched.insert(i);
        }
        for i in touched {
            let conn = &mut conns[i];
            service(conn, in_flight)?;
            // Re-arm this connection's deadline in the shared set.
            let next = if conn.done { None } else { conn.client.poll_timeout() };
            if next != conn.armed {
                if let Some(old) = conn.armed.take() {
                    deadlines.remove(&(old, i));
                }
                if let Some(at) = next {
                    deadlines.insert((at, i));
                }
                conn.armed = next;
            }
            if conn.done {
                poll.registry().deregister(&mut conn.stream)?;
            }
        }
        if !all_live_called && conns.iter().all(|c| c.replies > 0 || c.done) {
            all_live_called = true;
            all_live();
        }
    }
    Ok(Report {
        replies: conns.iter().map(|c| c.replies).collect(),
        majors: conns.into_iter().map(|c| c.majors).collect(),
    })
}

/// Reads until the socket would block, feeding every chunk to the core (several inputs before draining are
/// fine: replies queue, events up to `max_queued_events`).
fn read_all(conn: &mut Connection, buf: &mut [u8]) {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return conn.client.handle_eof(),
            Ok(n) => conn.client.handle_input(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return conn.client.handle_transport_error(e.to_string()),
        }
    }
}

/// The contract: drain events (issuing commands as replies come), transmit, flush what the socket takes.
fn service(conn: &mut Connection, in_flight: usize) -> io::Result<()> {
    while let Some(event) = conn.client.poll_event() {
        match event {
            ClientEvent::Ready { .. } if conn.to_issue == 0 => conn.client.close_gracefully(),
            ClientEvent::Ready { .. } => issue(conn, in_flight)?,
            ClientEvent::Reply { result, .. } => {
                let version: serde_json::Value =
                    result.map_err(io::Error::other)?.deserialize().map_err(io::Error::other)?;
                conn.majors.push(version["qemu"]["major"].as_u64().unwrap_or(0));
                conn.replies += 1;
                issue(conn, 1)?;
            }
            ClientEvent::TimedOut { id } => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("command {id}")))
            }
            ClientEvent::Closed(ConnectionError::Local) => conn.done = true,
            ClientEvent::Closed(cause) => return Err(io::Error::other(cause)),
            _ => {} // greeting, server events
        }
    }
    // Appended behind any unwritten tail (swapped in when `out` is empty).
    conn.client.poll_transmit(&mut conn.out);
    let mut written = 0;
    while written < conn.out.len() {
        match conn.stream.write(&conn.out[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break, // the rest on the next WRITABLE event
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                conn.client.handle_transport_error(e.to_string());
                return Err(e);
            }
        }
    }
    conn.out.drain(..written);
    Ok(())
}

/// Issues up to `n` more commands, and closes gracefully once the last one is issued.
fn issue(conn: &mut Connection, n: usize) -> io::Result<()> {
    for _ in 0..n.min(conn.to_issue) {
        let opts = ExecuteOptions::new().now(Instant::now()); // the default deadline starts now
        conn.client.execute_no_args("query-version", opts).map_err(io::Error::other)?;
        conn.to_issue -= 1;
        if conn.to_issue == 0 {
            conn.client.close_gracefully(); // the accepted commands still finish
        }
    }
    Ok(())
}

#[allow(dead_code)] // the CI test and the bench include this file for `run`
fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut commands, mut in_flight, mut paths) = (100, 1, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-n" => commands = args.next().and_then(|v| v.parse().ok()).expect("-n COMMANDS"),
            "-w" => in_flight = args.next().and_then(|v| v.parse().ok()).expect("-w IN_FLIGHT"),
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    assert!(!paths.is_empty(), "usage: mio_many [-n COMMANDS] [-w IN_FLIGHT] SOCKET...");
    let start = Instant::now();
    let report = run(&paths, commands, in_flight)?;
    let total: usize = report.replies.iter().sum();
    println!("{total} round trips on {} connections in {:.2?}", paths.len(), start.elapsed());
    Ok(())
}
