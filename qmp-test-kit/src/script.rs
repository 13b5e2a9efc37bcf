//! What a fake QEMU answers: a [`Script`] of [`Answer`]s per command, each a value, an error or a handler,
//! with events around it and at most one [`Fault`]. Pure data and closures: no I/O, no clock.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use qmp_proto::server::{Command, Failure};
use qmp_proto::RawJson;
use serde_json::Value;

/// A handler: computes a command's result from the command.
type Handler = Box<dyn FnMut(&Command) -> Result<Value, Failure> + Send>;

/// Something wrong the fake does instead of (or around) an honest reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Nothing is ever written for this command, and the connection stays open until the client leaves: a hung
    /// QEMU. Without OOB, QEMU reads nothing more while a command runs, and neither does the fake, so later
    /// commands hang too.
    Silence,
    /// The first half of the reply's bytes is written, then the connection closes.
    DisconnectMidReply,
    /// The connection closes without a reply.
    Disconnect,
    /// These bytes are written just before the reply (which follows, intact).
    Garbage(Vec<u8>),
    /// The reply's return value is replaced by a string that makes the message at least this many bytes long
    /// (over a client's limit, say); its id is kept, so the client can tell whose reply it was.
    Oversized(usize),
}

/// What the fake does with one command: a result (a value, an error, or a handler's), events before and after
/// it, an optional delay, and an optional [`Fault`].
///
/// ```
/// use std::time::Duration;
/// use qmp_test_kit::{Answer, Fault};
/// use serde_json::json;
/// let answer = Answer::value(json!({}))
///     .event_before("STOP", None)
///     .delay(Duration::from_millis(20))
///     .fault(Fault::Garbage(b"}{".to_vec()));
/// ```
pub struct Answer {
    result: AnswerResult,
    pub(crate) events_before: Vec<(String, Option<Value>)>,
    pub(crate) events_after: Vec<(String, Option<Value>)>,
    pub(crate) delay: Duration,
    pub(crate) fault: Option<Fault>,
}

enum AnswerResult {
    Fixed(Result<Value, Failure>),
    Verbatim(RawJson),
    Handler(Handler),
}

/// A successful result, as the session writes it.
#[derive(Debug, Clone)]
pub(crate) enum Returned {
    /// A value, written as QEMU writes it.
    Value(Value),
    /// JSON text, written byte for byte.
    Verbatim(RawJson),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let result: &dyn fmt::Debug = match &self.result {
            AnswerResult::Fixed(r) => r,
            AnswerResult::Verbatim(raw) => raw,
            AnswerResult::Handler(_) => &"<handler>",
        };
        f.debug_struct("Answer")
            .field("result", result)
            .field("events_before", &self.events_before)
            .field("events_after", &self.events_after)
            .field("delay", &self.delay)
            .field("fault", &self.fault)
            .finish()
    }
}

impl Answer {
    fn new(result: AnswerResult) -> Self {
        Answer { result, events_before: Vec::new(), events_after: Vec::new(), delay: Duration::ZERO, fault: None }
    }

    /// Succeeds with `value` (`{"return": value}`).
    pub fn value(value: Value) -> Self {
        Answer::new(AnswerResult::Fixed(Ok(value)))
    }

    /// Succeeds with the return value written byte for byte as `json` has it: member order, spacing and numbers
    /// as given (a value as some QEMU wrote it), where [`value`](Self::value) writes a `Value` in its map's
    /// order (text over several lines is written on one, as one message per line requires). Text that is not
    /// one JSON value is refused with serde_json's error.
    ///
    /// ```
    /// use qmp_test_kit::Answer;
    /// let answer = Answer::json(r#"{"z": 1, "a": {"y": 2, "b": 3}}"#)?;
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn json(json: &str) -> Result<Self, serde_json::Error> {
        Ok(Answer::new(AnswerResult::Verbatim(RawJson::from_json(json)?)))
    }

    /// Fails with `class` and `desc` (`{"error": {"class": ..., "desc": ...}}`).
    pub fn error(class: impl Into<String>, desc: impl Into<String>) -> Self {
        Answer::new(AnswerResult::Fixed(Err(Failure::new(class, desc))))
    }

    /// Computes the result from the command (its name, `arguments`, id, whether it came out of band) each time.
    pub fn handler(handler: impl FnMut(&Command) -> Result<Value, Failure> + Send + 'static) -> Self {
        Answer::new(AnswerResult::Handler(Box::new(handler)))
    }

    /// An event written before the reply (QEMU writes a command's own events first: `stop` sends `STOP`, then
    /// its reply). Events go out only once the client has negotiated, as in QEMU.
    pub fn event_before(mut self, name: impl Into<String>, data: Option<Value>) -> Self {
        self.events_before.push((name.into(), data));
        self
    }

    /// An event written after the reply (a job's later status changes, say).
    pub fn event_after(mut self, name: impl Into<String>, data: Option<Value>) -> Self {
        self.events_after.push((name.into(), data));
        self
    }

    /// Answers (events, reply, fault) only after `delay`; other output (injected events) goes on meanwhile.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Misbehaves this way when answering.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The result for `command`.
    pub(crate) fn result(&mut self, command: &Command) -> Result<Returned, Failure> {
        match &mut self.result {
            AnswerResult::Fixed(result) => result.clone().map(Returned::Value),
            AnswerResult::Verbatim(raw) => Ok(Returned::Verbatim(raw.clone())),
            AnswerResult::Handler(handler) => handler(command).map(Returned::Value),
        }
    }
}

/// What the fake does when a client connects: the greeting, possibly late or wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnConnect {
    pub(crate) delay: Duration,
    pub(crate) fault: Option<Fault>,
}

/// The answers of a fake QEMU, per command.
///
/// For each command, the answers given with [`once`](Self::once) are used first, one per call, in order; then
/// the one given with [`on`](Self::on), every time; then the [`fallback`](Self::fallback); and without one, QEMU's
/// `CommandNotFound` ("The command X has not been found"). The protocol's own commands (`qmp_capabilities`) and
/// malformed input are answered by [`qmp_proto::Server`] exactly as qemu-storage-daemon 10 answers them.
///
/// ```
/// use qmp_test_kit::{Answer, Fault, Script};
/// use serde_json::json;
/// let script = Script::new()
///     .on("query-status", Answer::value(json!({"status": "running", "running": true})))
///     .once("blockdev-del", Answer::error("GenericError", "Node 'disk0' is busy"))
///     .on("blockdev-del", Answer::value(json!({})))
///     .on("query-block", Answer::handler(|cmd| Ok(json!([{"device": cmd.arguments.map().len()}]))))
///     .on("query-jobs", Answer::value(json!([])).fault(Fault::Silence));
/// ```
#[derive(Debug, Default)]
pub struct Script {
    always: HashMap<String, Answer>,
    once: HashMap<String, Vec<Answer>>,
    fallback: Option<Answer>,
    pub(crate) on_connect: OnConnect,
    pub(crate) version: Option<(u64, u64, u64, String)>,
    pub(crate) oob_commands: Vec<String>,
    pub(crate) guest_agent: bool,
}

impl Script {
    /// A script that answers nothing but the protocol's own commands.
    pub fn new() -> Self {
        Script::default()
    }

    /// Answers every call of `command` with `answer` (after its [`once`](Self::once) answers are used up).
    pub fn on(mut self, command: impl Into<String>, answer: Answer) -> Self {
        self.always.insert(command.into(), answer);
        self
    }

    /// Answers the next call of `command` with `answer`; several `once` answers are used in the order given.
    pub fn once(mut self, command: impl Into<String>, answer: Answer) -> Self {
        self.once.entry(command.into()).or_default().push(answer);
        self
    }

    /// Answers every command the script does not name.
    pub fn fallback(mut self, answer: Answer) -> Self {
        self.fallback = Some(answer);
        self
    }

    /// Lets `command` run out of band (`exec-oob`); other commands sent with `exec-oob` get QEMU's "The command
    /// X does not support OOB" once the client has enabled OOB.
    pub fn oob_command(mut self, command: impl Into<String>) -> Self {
        self.oob_commands.push(command.into());
        self
    }

    /// Plays a guest agent instead of QEMU's monitor: no greeting, LF line endings, `guest-sync` and
    /// `guest-sync-delimited` answered by the server itself (as qemu-ga does), no events.
    pub fn guest_agent(mut self) -> Self {
        self.guest_agent = true;
        self
    }

    /// The version in the greeting (default: 10.0.2, package "qmp-test-kit").
    pub fn version(mut self, major: u64, minor: u64, micro: u64, package: impl Into<String>) -> Self {
        self.version = Some((major, minor, micro, package.into()));
        self
    }

    /// Sends the greeting only after `delay`.
    pub fn greeting_delay(mut self, delay: Duration) -> Self {
        self.on_connect.delay = delay;
        self
    }

    /// Misbehaves when greeting: [`Fault::Silence`] (no greeting), [`Fault::Disconnect`], half a greeting
    /// ([`Fault::DisconnectMidReply`]), [`Fault::Garbage`] before it, or a greeting padded to
    /// [`Fault::Oversized`] bytes.
    pub fn greeting_fault(mut self, fault: Fault) -> Self {
        self.on_connect.fault = Some(fault);
        self
    }

    /// The answer for `command`, if the script has one: a `once` answer is taken out, others are lent.
    pub(crate) fn answer_for(&mut self, command: &str) -> Option<Lent<'_>> {
        if let Some(queue) = self.once.get_mut(command).filter(|q| !q.is_empty()) {
            return Some(Lent::Owned(queue.remove(0)));
        }
        match self.always.get_mut(command) {
            Some(answer) => Some(Lent::Borrowed(answer)),
            None => self.fallback.as_mut().map(Lent::Borrowed),
        }
    }
}

/// An answer taken from a script: owned when it was a `once` answer.
pub(crate) enum Lent<'a> {
    Owned(Answer),
    Borrowed(&'a mut Answer),
}

impl Lent<'_> {
    pub(crate) fn get(&mut self) -> &mut Answer {
        match self {
            Lent::Owned(a) => a,
            Lent::Borrowed(a) => a,
        }
    }
}
