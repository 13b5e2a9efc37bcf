//! The session thread: it owns the connection, runs the commands the editor sends it, prints their results,
//! prints events live while the prompt waits, and reconnects with backoff when the server goes away.
//!
//! Why a thread over qmp-blocking rather than an async adapter: the editor (rustyline) blocks its thread in
//! `readline` anyway, and one more thread that owns the blocking client is all "live events" needs: it waits
//! for events in short slices ([`EVENT_SLICE`]) and looks for a command between slices. No runtime, no locks
//! around the client, and the CLI's other subcommands already use the same [`Session`].
//!
//! Ordering: a command's result is printed after the events that were read before it (the client's buffer is
//! drained first); events that come while the prompt waits are printed at once. Cancelling (Ctrl-C while a
//! command runs) frees the prompt at once; the blocking client cannot abandon the wait, so the thread keeps
//! waiting for that reply, drops it when it comes, and runs the commands typed meanwhile after it (QEMU runs
//! in-band commands in order anyway).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::complete::Knowledge;
use super::line::Action;
use super::printer::{Kind, Printer};
use super::schema::Schema;
use super::wire::Tap;
use super::{hmp, HELP};
use crate::output::{event_json, Failure};
use crate::session::{Session, Target};

/// How long one wait for events lasts before the thread looks for a command again.
pub const EVENT_SLICE: Duration = Duration::from_millis(30);
/// First and longest pause between reconnection attempts (doubling in between).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(4));
/// Connect timeout of one reconnection attempt (at most; `--timeout` when shorter).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request from the editor.
#[derive(Debug)]
pub enum Request {
    Run { seq: u64, action: Action },
    Quit,
}

/// A request is over (its output printed); `fatal` ends the shell (piped mode only).
#[derive(Debug)]
pub struct Done {
    pub seq: u64,
    pub fatal: Option<Failure>,
}

/// How to (re)connect and print.
#[derive(Debug, Clone)]
pub struct Link {
    pub target: Target,
    pub guest_agent: bool,
    pub timeout: Duration,
    pub compact: bool,
    pub verbose: bool,
    /// At a terminal: reconnect when the server goes away. Piped: a lost connection ends the shell.
    pub interactive: bool,
    pub printer: Arc<Printer>,
    pub knowledge: Arc<RwLock<Knowledge>>,
    /// The sequence number of the last command the user cancelled.
    pub cancelled: Arc<AtomicU64>,
    /// Hides the wire trace while the shell itself talks (fetching the schema).
    pub quiet: Arc<AtomicBool>,
}

impl Link {
    /// Connects (through the wire trace with `-v`) and learns the server's commands and schema.
    pub fn connect(&self, timeout: Duration) -> Result<Session, Failure> {
        let (printer, quiet, verbose) = (self.printer.clone(), self.quiet.clone(), self.verbose);
        let wrap = move |s| if verbose { Tap::wrap(s, printer, quiet) } else { s };
        let mut session = Session::connect_with(&self.target, self.guest_agent, timeout, wrap)?;
        self.quiet.store(true, Ordering::SeqCst);
        let knowledge = learn(&mut session);
        self.quiet.store(false, Ordering::SeqCst);
        *self.knowledge.write().unwrap_or_else(|p| p.into_inner()) = knowledge;
        Ok(session)
    }

    /// Runs the thread until [`Request::Quit`] or until the editor goes away.
    pub fn run(self, session: Session, requests: Receiver<Request>, done: Sender<Done>) -> Result<(), Failure> {
        let mut session = Some(session);
        let mut lost: Option<Failure> = None;
        let mut backoff = BACKOFF.0;
        let mut next_attempt = Instant::now();
        loop {
            let request = match session.as_mut() {
                Some(s) => match requests.try_recv() {
                    Ok(request) => Some(request),
                    Err(TryRecvError::Disconnected) => return Ok(()),
                    Err(TryRecvError::Empty) => {
                        if let Err(failure) = self.print_events(s, Some(EVENT_SLICE)) {
                            let normal = s.closed_normally();
                            session = None;
                            if self.interactive {
                                self.notice(&format!("connection lost ({failure}); reconnecting to {}", self.target));
                                backoff = BACKOFF.0;
                                next_attempt = Instant::now() + backoff;
                            } else if !normal {
                                lost = Some(failure);
                            }
                        }
                        None
                    }
                },
                None if self.interactive => {
                    let wait = next_attempt.saturating_duration_since(Instant::now());
                    match requests.recv_timeout(wait) {
                        Ok(request) => Some(request),
                        Err(RecvTimeoutError::Disconnected) => return Ok(()),
                        Err(RecvTimeoutError::Timeout) => {
                            match self.connect(self.timeout.min(RECONNECT_TIMEOUT)) {
                                Ok(s) => {
                                    self.notice(&format!("reconnected to {}", s.describe()));
                                    session = Some(s);
                                }
                                Err(_) => {
                                    backoff = (backoff * 2).min(BACKOFF.1);
                                    next_attempt = Instant::now() + backoff;
                                }
                            }
                            None
                        }
                    }
                }
                None => match requests.recv() {
                    Ok(request) => Some(request),
                    Err(_) => return Ok(()),
                },
            };
            let Some(request) = request else { continue };
            let (seq, action) = match request {
                Request::Quit => {
                    if let Some(s) = session.as_mut() {
                        let _ = self.print_events(s, Some(Duration::ZERO));
                    }
                    return lost.map_or(Ok(()), Err);
                }
                Request::Run { seq, action } => (seq, action),
            };
            let fatal = match session.as_mut() {
                None if lost.is_some() => lost.take(),
                None if !self.interactive => Some(Failure::Connection("the server closed the connection".into())),
                None => {
                    self.error(&format!("not connected to {} (reconnecting); the command was not sent", self.target));
                    None
                }
                Some(s) => match self.perform(s, seq, action) {
                    Err(failure @ Failure::Connection(_)) => {
                        session = None;
                        if self.interactive {
                            self.notice(&format!("connection lost ({failure}); reconnecting to {}", self.target));
                            backoff = BACKOFF.0;
                            next_attempt = Instant::now() + backoff;
                            None
                        } else {
                            Some(failure)
                        }
                    }
                    _ => None,
                },
            };
            let ends = fatal.is_some();
            if done.send(Done { seq, fatal }).is_err() || ends {
                return Ok(());
            }
        }
    }

    /// Runs one action and prints what came of it; only a lost connection is returned.
    fn perform(&self, session: &mut Session, seq: u64, action: Action) -> Result<(), Failure> {
        let (name, args, oob, as_text) = match action {
            Action::Nothing => return Ok(()),
            Action::Help(None) => {
                self.printer.print(Kind::Diagnostic, HELP);
                return Ok(());
            }
            Action::Help(Some(command)) => {
                let known = self.knowledge.read().unwrap_or_else(|p| p.into_inner());
                let text = match &known.schema {
                    Some(schema) => schema.help(&command).unwrap_or_else(|| format!("no command {command:?}")),
                    None if known.commands.contains(&command) => format!("{command} (the agent has no schema)"),
                    None => format!("no command {command:?}"),
                };
                self.printer.print(Kind::Diagnostic, text.trim_end());
                return Ok(());
            }
            Action::Qmp { name, args, oob } => (name, args, oob, false),
            Action::Hmp(_) if matches!(session, Session::Agent(_)) => {
                self.error("the guest agent has no human monitor");
                return Ok(());
            }
            Action::Hmp(line) => ("human-monitor-command".to_owned(), Some(hmp::arguments(&line)), false, true),
        };
        let result = session.execute(&name, args.as_ref(), oob);
        // Events read before the reply come first.
        let events = self.print_events(session, Some(Duration::ZERO));
        if self.cancelled.load(Ordering::SeqCst) == seq {
            self.notice(&format!("the reply to the cancelled {name} came and was dropped"));
        } else {
            match result {
                Ok(value) if as_text => {
                    if let Some(text) = hmp::text(&value) {
                        self.printer.print(Kind::Output, &text);
                    }
                }
                Ok(value) => self.printer.print(Kind::Output, &self.json(&value)),
                Err(Failure::Server(e)) => self.error(&format!("{}: {}", e.class, e.desc)),
                Err(Failure::Usage(msg) | Failure::Job(msg)) => self.error(&msg),
                Err(lost @ Failure::Connection(_)) => return Err(lost),
            }
        }
        events
    }

    /// Prints the events that are buffered, waiting up to `wait` for the first one.
    fn print_events(&self, session: &mut Session, wait: Option<Duration>) -> Result<(), Failure> {
        if let Session::Agent(_) = session {
            if let Some(wait) = wait {
                std::thread::sleep(wait);
            }
            return Ok(());
        }
        let mut wait = wait;
        while let Some(event) = session.next_event(wait)? {
            self.printer.print(Kind::Output, &event_json(&event).to_string());
            wait = Some(Duration::ZERO);
        }
        Ok(())
    }

    fn json(&self, value: &Value) -> String {
        if self.compact {
            value.to_string()
        } else {
            serde_json::to_string_pretty(value).unwrap_or_default()
        }
    }

    fn error(&self, message: &str) {
        self.printer.print(Kind::Diagnostic, &format!("error: {message}"));
    }

    fn notice(&self, message: &str) {
        self.printer.print(Kind::Diagnostic, &format!("# {message}"));
    }
}

/// What completion needs: command names and, for QMP, the schema. Failures leave it empty (completion is a
/// convenience; the session goes on).
fn learn(session: &mut Session) -> Knowledge {
    match session {
        Session::Qmp(_) => {
            let names = session.execute("query-commands", None, false).unwrap_or_default();
            let commands = names
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name")?.as_str().map(str::to_owned))
                .collect();
            let schema = session.execute("query-qmp-schema", None, false).ok().map(|v| Schema::from_value(&v));
            let mut commands: Vec<String> = commands;
            if commands.is_empty() {
                commands = schema.iter().flat_map(|s| s.command_names().map(str::to_owned)).collect();
            }
            Knowledge { commands, schema }
        }
        Session::Agent(_) => {
            let info = session.execute("guest-info", None, false).unwrap_or_default();
            let listed = info.get("supported_commands").and_then(Value::as_array).cloned().unwrap_or_default();
            let commands = listed
                .iter()
                .filter(|c| c.get("enabled").and_then(Value::as_bool) != Some(false))
                .filter_map(|c| c.get("name")?.as_str().map(str::to_owned))
                .collect();
            Knowledge { commands, schema: None }
        }
    }
}
