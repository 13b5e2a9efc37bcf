//! Serving QMP over `std::io`: [`serve_stream`] runs one session of [`qmp_proto::Server`] on a blocking
//! stream; [`serve_unix`] and [`serve_tcp`] accept clients on a unix or TCP socket one at a time, as QEMU serves
//! a monitor.
//!
//! Each command is answered by a [`Responder`] on the spot (no threads); it may also emit events, which go
//! out before the reply, the order QEMU uses for a command's own events (`stop` writes `STOP`, then its reply).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use qmp_proto::server::{Command, Event, Failure, Server, ServerConfig};
use qmp_proto::Timestamp;
use serde_json::Value;

/// What a responder does with a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Events to send first (name, data).
    pub events: Vec<(String, Option<Value>)>,
    /// The reply.
    pub reply: Result<Value, Failure>,
    /// End the session after the reply (as `quit` does).
    pub close: bool,
}

impl Response {
    /// A plain reply, no events.
    pub fn reply(reply: Result<Value, Failure>) -> Self {
        Response { events: Vec::new(), reply, close: false }
    }
}

/// Answers the commands of a served session.
pub trait Responder {
    /// The protocol settings of each session (greeting, listed commands, ...).
    fn config(&self) -> ServerConfig;

    /// Answers one command.
    fn respond(&mut self, command: &Command) -> Response;
}

/// The system clock as an event timestamp (-1/-1 when it is before 1970, as QEMU does).
pub fn now_timestamp() -> Timestamp {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp { seconds: d.as_secs() as i64, microseconds: i64::from(d.subsec_micros()) },
        Err(_) => Timestamp { seconds: -1, microseconds: -1 },
    }
}

/// Runs one session over `stream` until the client hangs up or a response closes it.
pub fn serve_stream<S: Read + Write>(stream: &mut S, responder: &mut impl Responder) -> io::Result<()> {
    let mut server = Server::new(responder.config());
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(event) = server.poll_event() {
            if let Event::Command(cmd) = event {
                let response = responder.respond(&cmd);
                for (name, data) in &response.events {
                    server.event(name, data.as_ref(), now_timestamp());
                }
                // The token is the one just handed over: it cannot be unknown.
                let _ = server.reply(cmd.token, response.reply);
                if response.close {
                    server.close();
                }
            }
        }
        out.clear();
        server.poll_transmit(&mut out);
        stream.write_all(&out)?;
        stream.flush()?;
        if server.is_closed() {
            return Ok(());
        }
        if !server.wants_input() {
            // Only a command still unanswered stops reading, and every command is answered above.
            continue;
        }
        match stream.read(&mut buf) {
            Ok(0) => server.handle_eof(),
            Ok(n) => server.handle_input(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => server.handle_eof(),
        }
    }
}

/// Binds `path` and serves one client at a time, forever (or until accepting fails).
pub fn serve_unix(path: impl AsRef<Path>, responder: &mut impl Responder) -> io::Result<()> {
    let listener = UnixListener::bind(path)?;
    serve_listener(&listener, responder)
}

/// Serves clients of `listener` one at a time, forever (or until accepting fails).
pub fn serve_listener(listener: &UnixListener, responder: &mut impl Responder) -> io::Result<()> {
    serve_accepted(|| listener.accept().map(|(stream, _)| stream), responder)
}

/// Binds `addr` and serves one client at a time, forever (or until accepting fails). QEMU's
/// `-qmp tcp:HOST:PORT,server=on` is the same protocol over TCP.
pub fn serve_tcp(addr: impl ToSocketAddrs, responder: &mut impl Responder) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    serve_tcp_listener(&listener, responder)
}

/// Serves clients of a bound TCP `listener` (to port 0, say, whose port `local_addr()` tells) one at a time,
/// forever (or until accepting fails). Replies go out with `TCP_NODELAY`: commands are small and
/// latency-bound.
pub fn serve_tcp_listener(listener: &TcpListener, responder: &mut impl Responder) -> io::Result<()> {
    serve_accepted(
        || {
            let (stream, _) = listener.accept()?;
            // Only latency is at stake: a client gone already fails its session, not the server.
            let _ = stream.set_nodelay(true);
            Ok::<TcpStream, io::Error>(stream)
        },
        responder,
    )
}

/// Serves the connections `accept` returns, one at a time.
fn serve_accepted<S: Read + Write>(
    mut accept: impl FnMut() -> io::Result<S>,
    responder: &mut impl Responder,
) -> io::Result<()> {
    loop {
        let mut stream = accept()?;
        // A client's I/O error ends its session, not the server.
        let _ = serve_stream(&mut stream, responder);
    }
}
