//! [`JobTracker`]: the whole logic of following a QEMU job, sans I/O, shared by every runner (the async one in
//! this crate and `qmp-blocking`'s loop).
//!
//! The tracker never sends, reads or sleeps: a runner feeds it events, command replies, the callback's wishes
//! and the time, and asks it what to do next. The contract, in the order a runner calls it:
//!
//! 1. [`poll_update`](JobTracker::poll_update) until `None`, handing each [`JobUpdate`] to the caller's callback
//!    and its [`JobAction`] to [`handle_action`](JobTracker::handle_action);
//! 2. [`poll_step`](JobTracker::poll_step):
//!    - [`JobStep::Send`]: run that command, give its answer to [`handle_reply`](JobTracker::handle_reply);
//!    - [`JobStep::Wait`]: wait for the next event (give it to [`handle_event`](JobTracker::handle_event)) or
//!      until the instant, whichever comes first (an instant already past: take only an event that has already
//!      arrived); lost events go to
//!      [`handle_lost_events`](JobTracker::handle_lost_events), the connection's end to
//!      [`handle_closed`](JobTracker::handle_closed);
//!    - [`JobStep::Done`]: the result; stop.
//!
//! The runner must have subscribed to events **before** sending the first command it is given: QEMU sends
//! "created" and "running" before the reply to the start command.
//!
//! What it does with the job: starts it (with `auto-dismiss: false` where the command takes it, so the error is
//! kept), follows `JOB_STATUS_CHANGE` for its id (and `BLOCK_JOB_COMPLETED` for a block job's error), reads
//! progress with `query-jobs` on every status change and every [`JobOptions::progress_interval`], sends
//! `job-complete` / `job-cancel` when asked, reads the error once the job has concluded, then `job-dismiss`es it
//! unless told not to. Events move the status; `query-jobs` does only when the tracker starts watching a job or
//! events were lost (an answer can be older than events read after it). Once concluded, only "null" follows.

use std::collections::VecDeque;
use std::time::Instant;

use qmp_proto::adapter::Error;
use qmp_proto::{ServerEvent, UsageError};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::options::{JobOptions, CANCEL_GRACE};
use super::outcome::{JobError, JobOutcome};
use super::status::{JobAction, JobStatus, JobUpdate};

/// Commands that take `auto-dismiss` (and `auto-finalize`). Jobs of other commands (`blockdev-create`,
/// `x-blockdev-amend`, `snapshot-*`) are always dismissed by hand.
pub const AUTO_DISMISS_COMMANDS: &[&str] =
    &["blockdev-backup", "drive-backup", "blockdev-mirror", "drive-mirror", "block-stream", "block-commit"];

/// What a runner must do next.
#[derive(Debug)]
pub enum JobStep {
    /// Run this command and give its answer to [`JobTracker::handle_reply`].
    Send(JobCommand),
    /// Wait for an event, or until this instant (`None`: no time limit).
    Wait(Option<Instant>),
    /// The job is over (or lost): the result. Later steps are `Wait(None)`.
    Done(Result<JobOutcome, JobError>),
}

/// A command the tracker wants run.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCommand {
    /// The command's name.
    pub name: String,
    /// Its arguments (a JSON object).
    pub args: Value,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Query,
    Complete,
    Cancel,
    Dismiss,
}

/// The state of one followed job. See the [module docs](self) for how to drive it.
#[derive(Debug)]
pub struct JobTracker {
    id: String,
    opts: JobOptions,
    start: Option<JobCommand>,
    watching: bool,
    job_type: Option<String>,
    status: JobStatus,
    progress: (u64, u64),
    error: Option<String>,
    seen: bool,
    /// Take the status from the next `query-jobs` answer (watching from scratch, or events were lost); otherwise
    /// events alone move it (an answer can be older than the events read after it).
    status_from_query: bool,
    /// Look at the events that have already arrived before anything else (after every answer and event).
    drain: bool,
    deadline: Option<Instant>,
    give_up_at: Option<Instant>,
    next_poll: Option<Instant>,
    want_cancel: bool,
    cancel_sent: bool,
    want_complete: bool,
    final_query_done: bool,
    dismiss_sent: bool,
    timed_out: bool,
    finished: bool,
    done: Option<Result<JobOutcome, JobError>>,
    updates: VecDeque<JobUpdate>,
}

impl JobTracker {
    /// A job to start with `command` and `args` (a JSON object naming the job with `job-id`, or `device` for a
    /// block job without one). Fails with [`JobError::Start`] carrying [`UsageError::InvalidArguments`] when
    /// `args` does not serialize, and with [`JobError::NoJobId`] when the arguments name no job, or are not an
    /// object.
    pub fn run(command: &str, args: impl Serialize, opts: JobOptions, now: Instant) -> Result<JobTracker, JobError> {
        let args = serde_json::to_value(args)
            .map_err(|e| JobError::Start(Error::Usage(UsageError::InvalidArguments(e.to_string()))))?;
        let Value::Object(mut args) = args else { return Err(JobError::NoJobId(command.to_owned())) };
        let id = job_id(&args).ok_or_else(|| JobError::NoJobId(command.to_owned()))?;
        if opts.dismiss && AUTO_DISMISS_COMMANDS.contains(&command) && !args.contains_key("auto-dismiss") {
            args.insert("auto-dismiss".into(), Value::Bool(false));
        }
        let mut tracker = Self::new(id, opts, now, false);
        tracker.start = Some(JobCommand { name: command.to_owned(), args: Value::Object(args), kind: Kind::Start });
        Ok(tracker)
    }

    /// A job someone else started, known by its id: the first step reads its state with `query-jobs`.
    pub fn watch(id: &str, opts: JobOptions, now: Instant) -> JobTracker {
        let mut tracker = Self::new(id.to_owned(), opts, now, true);
        tracker.next_poll = Some(now);
        tracker
    }

    fn new(id: String, opts: JobOptions, now: Instant, watching: bool) -> JobTracker {
        let deadline = opts.timeout.and_then(|t| now.checked_add(t));
        JobTracker {
            id,
            opts,
            start: None,
            watching,
            job_type: None,
            status: JobStatus::Undefined,
            progress: (0, 0),
            error: None,
            seen: false,
            status_from_query: watching,
            drain: false,
            deadline,
            give_up_at: None,
            next_poll: None,
            want_cancel: false,
            cancel_sent: false,
            want_complete: false,
            final_query_done: false,
            dismiss_sent: false,
            timed_out: false,
            finished: false,
            done: None,
            updates: VecDeque::new(),
        }
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The last status seen.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// The last progress reading (`current`, `total`).
    pub fn progress(&self) -> (u64, u64) {
        self.progress
    }

    /// Whether the event concerns this job (to keep it out of other readers' way in a shared event buffer).
    pub fn concerns(&self, event: &ServerEvent) -> bool {
        match event.name.as_str() {
            "JOB_STATUS_CHANGE" => data_str(event, "id").as_deref() == Some(&self.id),
            "BLOCK_JOB_COMPLETED"
            | "BLOCK_JOB_CANCELLED"
            | "BLOCK_JOB_READY"
            | "BLOCK_JOB_ERROR"
            | "BLOCK_JOB_PENDING" => data_str(event, "device").as_deref() == Some(&self.id),
            _ => false,
        }
    }

    /// The next update for the callback.
    pub fn poll_update(&mut self) -> Option<JobUpdate> {
        self.updates.pop_front()
    }

    /// The callback's answer to an update.
    pub fn handle_action(&mut self, action: JobAction) {
        match action {
            JobAction::Continue => {}
            JobAction::Complete => self.want_complete = true,
            JobAction::Cancel => self.want_cancel = true,
        }
    }

    /// Asks for `job-cancel` (a dropped runner, Ctrl-C): the same as the callback answering
    /// [`JobAction::Cancel`].
    pub fn cancel(&mut self) {
        self.want_cancel = true;
    }

    /// A server event (any: those of other jobs are ignored).
    pub fn handle_event(&mut self, event: &ServerEvent, now: Instant) {
        if !self.concerns(event) {
            return;
        }
        self.drain = true;
        match event.name.as_str() {
            "JOB_STATUS_CHANGE" => {
                let Some(status) = data_str(event, "status").as_deref().and_then(JobStatus::parse) else { return };
                // A job this runner starts begins with "created": anything before that is an older job's, with
                // the same id (a subscriber's backlog can reach back to before the start command).
                if !self.watching && !self.seen && status != JobStatus::Created {
                    return;
                }
                if self.set_status(status) {
                    self.seen = true;
                    if !status.is_over() {
                        self.next_poll = Some(now);
                    }
                    self.push_update(true, None);
                }
            }
            "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_CANCELLED" => {
                let data = event.data.as_ref().and_then(|d| d.as_value().ok()).unwrap_or(Value::Null);
                if let Some(e) = data.get("error").and_then(Value::as_str) {
                    self.error = Some(e.to_owned());
                }
                if let (Some(cur), Some(len)) =
                    (data.get("offset").and_then(Value::as_u64), data.get("len").and_then(Value::as_u64))
                {
                    self.progress = (cur, len);
                }
            }
            _ => {}
        }
    }

    /// Events were lost (a lagging subscriber, a full buffer): the state is read again with `query-jobs`.
    pub fn handle_lost_events(&mut self, now: Instant) {
        self.next_poll = Some(now);
        self.status_from_query = true;
    }

    /// The connection is over: the runner ends with [`JobError::Connection`].
    pub fn handle_closed(&mut self, error: Error) {
        self.finish_with(Err(JobError::Connection(error)));
    }

    /// The answer to the command of the last [`JobStep::Send`].
    pub fn handle_reply(&mut self, command: &JobCommand, reply: Result<Value, Error>, now: Instant) {
        self.drain = true;
        match (command.kind, reply) {
            (Kind::Start, Ok(_)) => self.next_poll = Some(now),
            (Kind::Start, Err(e)) => self.finish_with(Err(JobError::Start(e))),
            (Kind::Query, Ok(jobs)) => self.read_query(&jobs),
            (Kind::Complete | Kind::Cancel, Err(Error::Qmp(e))) => {
                self.push_update(false, Some((command.name.clone(), e.desc)));
            }
            (Kind::Complete | Kind::Cancel, Ok(_)) => {}
            // Dismissed (or already gone: someone else dismissed it, or auto-dismiss was on).
            (Kind::Dismiss, Ok(_) | Err(Error::Qmp(_))) => {
                if self.set_status(JobStatus::Null) {
                    self.push_update(true, None);
                }
            }
            (Kind::Query | Kind::Complete | Kind::Cancel | Kind::Dismiss, Err(e)) => {
                self.finish_with(Err(JobError::Connection(e)))
            }
        }
    }

    /// What to do next. See the [module docs](self).
    pub fn poll_step(&mut self, now: Instant) -> JobStep {
        if let Some(done) = self.done.take() {
            return JobStep::Done(done);
        }
        if self.finished {
            return JobStep::Wait(None);
        }
        if let Some(start) = self.start.take() {
            return JobStep::Send(start);
        }
        if self.drain {
            // The events that came with (before) the last answer: a zero wait.
            self.drain = false;
            return JobStep::Wait(Some(now));
        }
        if self.give_up_at.is_some_and(|at| at <= now) {
            return self.finish();
        }
        if !self.timed_out && self.deadline.is_some_and(|at| at <= now) {
            self.timed_out = true;
            self.want_cancel = true;
            self.give_up_at = Some(now + CANCEL_GRACE);
        }
        if self.want_cancel && !self.cancel_sent && !self.status.is_over() {
            self.cancel_sent = true;
            return self.send("job-cancel", Kind::Cancel);
        }
        if self.want_complete && !self.status.is_over() {
            self.want_complete = false;
            return self.send("job-complete", Kind::Complete);
        }
        match self.status {
            JobStatus::Concluded if !self.final_query_done => {
                self.final_query_done = true;
                return JobStep::Send(JobCommand { name: "query-jobs".into(), args: json!({}), kind: Kind::Query });
            }
            JobStatus::Concluded if self.opts.dismiss && !self.dismiss_sent => {
                self.dismiss_sent = true;
                return self.send("job-dismiss", Kind::Dismiss);
            }
            JobStatus::Concluded if !self.opts.dismiss => return self.finish(),
            JobStatus::Null => return self.finish(),
            _ => {}
        }
        if self.next_poll.is_some_and(|at| at <= now) && !self.status.is_over() {
            self.next_poll = self.opts.progress_interval.and_then(|every| now.checked_add(every));
            return JobStep::Send(JobCommand { name: "query-jobs".into(), args: json!({}), kind: Kind::Query });
        }
        let wake = [self.next_poll.filter(|_| !self.status.is_over()), self.deadline.filter(|_| !self.timed_out)]
            .into_iter()
            .chain([self.give_up_at])
            .flatten()
            .min();
        JobStep::Wait(wake)
    }

    fn send(&self, name: &str, kind: Kind) -> JobStep {
        JobStep::Send(JobCommand { name: name.to_owned(), args: json!({ "id": self.id }), kind })
    }

    /// Takes the status, unless it would step back from the end (an old event read after `query-jobs`).
    fn set_status(&mut self, status: JobStatus) -> bool {
        let allowed = match self.status {
            JobStatus::Null => false,
            JobStatus::Concluded => status == JobStatus::Null,
            _ => status != JobStatus::Undefined,
        };
        if allowed && status != self.status {
            self.status = status;
            if status == JobStatus::Ready && self.opts.complete_when_ready {
                self.want_complete = true;
            }
            return true;
        }
        false
    }

    fn read_query(&mut self, jobs: &Value) {
        let ours = jobs.as_array().into_iter().flatten().find(|job| job["id"].as_str() == Some(self.id.as_str()));
        let Some(job) = ours else {
            if self.watching && !self.seen {
                self.finish_with(Err(JobError::NotFound(self.id.clone())));
            } else if self.set_status(JobStatus::Null) {
                // Gone: dismissed by someone else (or by QEMU, with auto-dismiss on).
                self.push_update(true, None);
            }
            return;
        };
        self.seen = true;
        if let Some(t) = job["type"].as_str() {
            self.job_type = Some(t.to_owned());
        }
        if let (Some(cur), Some(total)) = (job["current-progress"].as_u64(), job["total-progress"].as_u64()) {
            self.progress = (cur, total);
        }
        if let Some(e) = job["error"].as_str() {
            self.error = Some(e.to_owned());
        }
        let from_query = std::mem::take(&mut self.status_from_query);
        let changed =
            from_query && job["status"].as_str().and_then(JobStatus::parse).is_some_and(|s| self.set_status(s));
        self.push_update(changed, None);
    }

    fn push_update(&mut self, status_changed: bool, refused: Option<(String, String)>) {
        self.updates.push_back(JobUpdate {
            id: self.id.clone(),
            status: self.status,
            status_changed,
            current: self.progress.0,
            total: self.progress.1,
            refused,
        });
    }

    fn outcome(&self) -> JobOutcome {
        JobOutcome {
            id: self.id.clone(),
            job_type: self.job_type.clone(),
            status: self.status,
            error: self.error.clone(),
            cancelled: self.cancel_sent,
            progress: self.progress,
        }
    }

    fn finish(&mut self) -> JobStep {
        let outcome = self.outcome();
        self.finished = true;
        JobStep::Done(if self.timed_out {
            Err(JobError::TimedOut(outcome))
        } else if outcome.error.is_some() {
            Err(JobError::Failed(outcome))
        } else {
            Ok(outcome)
        })
    }

    fn finish_with(&mut self, result: Result<JobOutcome, JobError>) {
        if !self.finished {
            self.finished = true;
            self.done = Some(result);
        }
    }
}

/// The id a start command gives its job: `job-id`, else (block jobs) `device`.
fn job_id(args: &Map<String, Value>) -> Option<String> {
    args.get("job-id").or_else(|| args.get("device")).and_then(Value::as_str).map(str::to_owned)
}

fn data_str(event: &ServerEvent, key: &str) -> Option<String> {
    let data = event.data.as_ref()?.as_value().ok()?;
    data.get(key)?.as_str().map(str::to_owned)
}
