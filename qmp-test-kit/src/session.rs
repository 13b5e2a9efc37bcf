//! [`FakeSession`]: one connection of a fake QEMU, sans-IO (the script and its faults decide the bytes and
//! their times here, and nowhere else).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use qmp_proto::server::{Command, Event, EventOutcome, Failure, Server, ServerConfig, Token};
use qmp_proto::Timestamp;
use serde_json::Value;

use crate::script::{Fault, Returned, Script};

/// Commands kept for [`FakeSession::commands`]; older ones are dropped.
pub const RECORDED_COMMANDS: usize = 4096;

/// A command's answer, decided when it arrived and written when it is due.
#[derive(Debug)]
struct Planned {
    token: Token,
    result: Result<Returned, Failure>,
    events_before: Vec<(String, Option<Value>)>,
    events_after: Vec<(String, Option<Value>)>,
    fault: Option<Fault>,
}

#[derive(Debug)]
enum Due {
    Greeting(Vec<u8>, Option<Fault>),
    Answer(Planned),
}

/// [`FakeSession`]: one client connection of a fake QEMU, sans-IO. It wraps [`qmp_proto::Server`] (which reads
/// and answers the protocol as qemu-storage-daemon 10 does) and plays a [`Script`]: it decides which bytes go
/// out and when (delays, faults, closing); a carrier only moves them. Driven like the core:
///
/// 1. after [`handle_input`](FakeSession::handle_input), [`handle_eof`](FakeSession::handle_eof),
///    [`handle_timeout`](FakeSession::handle_timeout) or [`event`](FakeSession::event), write what
///    [`poll_transmit`](FakeSession::poll_transmit) gives;
/// 2. then, if [`is_finished`](FakeSession::is_finished), close the connection;
/// 3. read only while [`wants_input`](FakeSession::wants_input), and call `handle_timeout` at
///    [`poll_timeout`](FakeSession::poll_timeout).
///
/// ```
/// use std::time::{Duration, Instant};
/// use qmp_proto::Timestamp;
/// use qmp_test_kit::{Answer, FakeSession, Script};
/// use serde_json::json;
///
/// let script = Script::new().on("query-status", Answer::value(json!({"running": true})).delay(Duration::from_secs(1)));
/// let t0 = Instant::now();
/// let mut fake = FakeSession::new(script, t0, Timestamp { seconds: 0, microseconds: 0 });
/// let mut out = Vec::new();
/// fake.poll_transmit(&mut out); // the greeting
/// fake.handle_input(b"{\"execute\": \"qmp_capabilities\"}{\"execute\": \"query-status\", \"id\": 1}", t0);
/// out.clear();
/// fake.poll_transmit(&mut out);
/// assert_eq!(out, b"{\"return\": {}}\r\n"); // the reply to query-status is due in a second
/// assert_eq!(fake.poll_timeout(), Some(t0 + Duration::from_secs(1)));
/// fake.handle_timeout(t0 + Duration::from_secs(1));
/// out.clear();
/// fake.poll_transmit(&mut out);
/// assert_eq!(out, b"{\"return\": {\"running\": true}, \"id\": 1}\r\n");
/// ```
#[derive(Debug)]
pub struct FakeSession {
    server: Server,
    script: Script,
    out: Vec<u8>,
    /// Output due later, in the order it falls due.
    due: VecDeque<(Instant, Due)>,
    /// A fault closes the connection once `out` is written.
    closing: bool,
    commands: VecDeque<Command>,
    started: Instant,
    started_wall: Timestamp,
}

impl FakeSession {
    /// A session for a client that just connected at `now` (wall-clock time `wall`, from which event timestamps
    /// are counted: the session reads no clock). The greeting is ready, or due, at once.
    pub fn new(script: Script, now: Instant, wall: Timestamp) -> Self {
        let base = if script.guest_agent { ServerConfig::guest_agent() } else { ServerConfig::qmp() };
        let mut config = base.version(10, 0, 2, "qmp-test-kit");
        if let Some((major, minor, micro, package)) = &script.version {
            config = config.version(*major, *minor, *micro, package.clone());
        }
        if let Some(Fault::Oversized(size)) = script.on_connect.fault {
            let (major, minor, micro, _) = script.version.clone().unwrap_or((10, 0, 2, String::new()));
            config = config.version(major, minor, micro, "x".repeat(size));
        }
        config = script.oob_commands.iter().fold(config, |c, name| c.oob_command(name.clone()));
        let mut server = Server::new(config);
        let mut greeting = Vec::new();
        server.poll_transmit(&mut greeting);
        let on_connect = script.on_connect.clone();
        let mut session = FakeSession {
            server,
            script,
            out: Vec::new(),
            due: VecDeque::new(),
            closing: false,
            commands: VecDeque::new(),
            started: now,
            started_wall: wall,
        };
        session.schedule(now + on_connect.delay, Due::Greeting(greeting, on_connect.fault));
        session.drain(now);
        session
    }

    /// Bytes the client sent.
    pub fn handle_input(&mut self, input: &[u8], now: Instant) {
        if self.is_finished() {
            return;
        }
        self.server.handle_input(input);
        self.drain(now);
    }

    /// The client hung up.
    pub fn handle_eof(&mut self) {
        self.server.handle_eof();
        self.due.clear();
    }

    /// Writes what has fallen due by `now`. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drain(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.front().map(|(at, _)| *at)
    }

    /// Sends an event now (dropped before negotiation, as QEMU drops it).
    pub fn event(&mut self, name: &str, data: Option<&Value>, now: Instant) -> EventOutcome {
        if self.closing {
            return EventOutcome::Closed;
        }
        let outcome = self.server.event(name, data, self.timestamp(now));
        self.flush();
        outcome
    }

    /// Appends the bytes to write now to `out`; returns how many.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        out.append(&mut self.out);
        n
    }

    /// True while the carrier should read from the client.
    pub fn wants_input(&self) -> bool {
        !self.is_finished() && self.server.wants_input()
    }

    /// True once the connection is to be closed (after writing what [`poll_transmit`](Self::poll_transmit)
    /// gives): the client hung up, a fault closes it, or `quit`-like answers closed the server.
    pub fn is_finished(&self) -> bool {
        self.closing || self.server.is_closed()
    }

    /// The commands handed to the script so far (the protocol's own, answered by the server, are not listed),
    /// at most the last [`RECORDED_COMMANDS`].
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.commands.iter()
    }

    /// Takes the recorded commands out.
    pub fn take_commands(&mut self) -> Vec<Command> {
        self.commands.drain(..).collect()
    }

    /// The script back, for the next connection.
    pub fn into_script(self) -> Script {
        self.script
    }

    fn timestamp(&self, now: Instant) -> Timestamp {
        let elapsed = now.saturating_duration_since(self.started).as_micros() as i64;
        let micros = self.started_wall.microseconds + elapsed;
        Timestamp { seconds: self.started_wall.seconds + micros / 1_000_000, microseconds: micros % 1_000_000 }
    }

    /// Queues output due at `at`, after what is due at the same time.
    fn schedule(&mut self, at: Instant, due: Due) {
        let index = self.due.partition_point(|(t, _)| *t <= at);
        self.due.insert(index, (at, due));
    }

    /// Hands the server's commands to the script and writes what is due, until neither has anything more (an
    /// answer lets the server read on, which may hand over another command).
    fn drain(&mut self, now: Instant) {
        loop {
            self.take_commands_from_server(now);
            let Some((at, _)) = self.due.front() else { break };
            if *at > now || self.is_finished() {
                break;
            }
            if let Some((_, due)) = self.due.pop_front() {
                self.perform(due, now);
            }
        }
        self.flush();
    }

    fn take_commands_from_server(&mut self, now: Instant) {
        while let Some(event) = self.server.poll_event() {
            let Event::Command(command) = event else { continue };
            let planned = match self.script.answer_for(command.name()) {
                Some(mut lent) => {
                    let answer = lent.get();
                    let delay = answer.delay;
                    let planned = Planned {
                        token: command.token,
                        result: answer.result(&command),
                        events_before: answer.events_before.clone(),
                        events_after: answer.events_after.clone(),
                        fault: answer.fault.clone(),
                    };
                    (delay, planned)
                }
                None => {
                    let result = Err(Failure::command_not_found(command.name()));
                    let planned = Planned {
                        token: command.token,
                        result,
                        events_before: Vec::new(),
                        events_after: Vec::new(),
                        fault: None,
                    };
                    (Duration::ZERO, planned)
                }
            };
            if self.commands.len() == RECORDED_COMMANDS {
                self.commands.pop_front();
            }
            self.commands.push_back(command);
            self.schedule(now + planned.0, Due::Answer(planned.1));
        }
    }

    fn perform(&mut self, due: Due, now: Instant) {
        if self.is_finished() {
            return;
        }
        match due {
            Due::Greeting(bytes, fault) => self.write_faulty(bytes, fault.as_ref()),
            Due::Answer(planned) => self.answer(planned, now),
        }
    }

    fn answer(&mut self, planned: Planned, now: Instant) {
        for (name, data) in &planned.events_before {
            self.server.event(name, data.as_ref(), self.timestamp(now));
        }
        self.flush();
        match &planned.fault {
            Some(Fault::Silence) => return,
            Some(Fault::Disconnect) => return self.close(),
            _ => {}
        }
        let result = match planned.fault {
            Some(Fault::Oversized(size)) => Ok(Returned::Value(Value::String("x".repeat(size)))),
            _ => planned.result,
        };
        // The token was handed over by this session and answered once: it is known; verbatim text is valid JSON.
        let _ = match result {
            Ok(Returned::Value(value)) => self.server.reply(planned.token, Ok(value)),
            Ok(Returned::Verbatim(raw)) => self.server.reply_raw(planned.token, Ok(&raw)),
            Err(failure) => self.server.reply(planned.token, Err(failure)),
        };
        let mut bytes = Vec::new();
        self.server.poll_transmit(&mut bytes);
        // The reply is the first line; what follows was answered by the server on reading on.
        let end = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
        let rest = bytes.split_off(end);
        self.write_faulty(bytes, planned.fault.as_ref());
        if self.closing {
            return;
        }
        self.out.extend_from_slice(&rest);
        for (name, data) in &planned.events_after {
            self.server.event(name, data.as_ref(), self.timestamp(now));
        }
        self.flush();
    }

    /// Writes one message as `fault` says.
    fn write_faulty(&mut self, message: Vec<u8>, fault: Option<&Fault>) {
        match fault {
            None | Some(Fault::Oversized(_)) => self.out.extend_from_slice(&message),
            Some(Fault::Silence) => {}
            Some(Fault::Disconnect) => self.close(),
            Some(Fault::DisconnectMidReply) => {
                self.out.extend_from_slice(&message[..message.len() / 2]);
                self.close();
            }
            Some(Fault::Garbage(garbage)) => {
                self.out.extend_from_slice(garbage);
                self.out.extend_from_slice(&message);
            }
        }
    }

    fn close(&mut self) {
        self.closing = true;
        self.due.clear();
        self.server.close();
    }

    fn flush(&mut self) {
        if !self.closing {
            self.server.poll_transmit(&mut self.out);
        }
    }
}
