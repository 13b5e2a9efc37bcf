//! The async job runner: [`Qmp::run_job`], [`Qmp::watch_job`] and the explicit [`Qmp::cancel_job`] /
//! [`Qmp::complete_job`], driving a [`JobTracker`] over a connection's events and commands.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::Serialize;
use serde_json::{json, Value};

use super::{JobAction, JobError, JobOptions, JobOutcome, JobStep, JobTracker, JobUpdate};
use crate::events::{EventItem, Events};
use crate::runtime::{until, Runtime};
use crate::{Error, Qmp};

/// The events a runner listens to.
const JOB_EVENTS: &[&str] = &["JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"];

impl<R: Runtime> Qmp<R> {
    /// Starts a job with `command` and `args` and follows it to its end: see [`jobs`](crate::jobs).
    ///
    /// `args` must name the job (`job-id`, or `device` for a block job without one). `on_update` is called after
    /// every status change and every progress reading; its [`JobAction`] completes or cancels the job. Ends with
    /// the [`JobOutcome`] of a job concluded without error, or [`JobError::Failed`] with QEMU's error text,
    /// [`JobError::Start`] when the command was refused, [`JobError::TimedOut`] after
    /// [`JobOptions::timeout`], [`JobError::Connection`] when the connection went away.
    ///
    /// ```no_run
    /// # async fn example<R: qmp_async::Runtime>(qmp: qmp_async::Qmp<R>) -> Result<(), qmp_async::jobs::JobError> {
    /// use qmp_async::jobs::{JobAction, JobOptions, JobStatus};
    /// use serde_json::json;
    ///
    /// let args = json!({"job-id": "m0", "device": "src", "target": "dst", "sync": "full"});
    /// let outcome = qmp
    ///     .run_job("blockdev-mirror", args, JobOptions::default(), |update| {
    ///         println!("{} {}/{}", update.status, update.current, update.total);
    ///         if update.status == JobStatus::Ready { JobAction::Complete } else { JobAction::Continue }
    ///     })
    ///     .await?;
    /// println!("{outcome}");
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Not cancel safe in the sense of "nothing happens": dropping the future **cancels the job**. A task spawned
    /// on the runtime sends `job-cancel`, waits for the job to end and dismisses it (if
    /// [`JobOptions::dismiss`]), within [`CANCEL_GRACE`](super::options::CANCEL_GRACE). The connection itself is
    /// never left in a bad state. Drop it where the runtime can spawn (inside the runtime, for tokio); elsewhere
    /// the job is left running (and a warning logged).
    pub async fn run_job<F>(
        &self,
        command: &str,
        args: impl Serialize,
        options: JobOptions,
        on_update: F,
    ) -> Result<JobOutcome, JobError>
    where
        F: FnMut(&JobUpdate) -> JobAction,
    {
        let tracker = JobTracker::run(command, args, options.clone(), self.handle().runtime.now())?;
        // Subscribe before sending: "created" and "running" come before the start command's reply.
        let mut events = self.events_named(JOB_EVENTS);
        skip_backlog(&mut events);
        let guard = CancelOnDrop { qmp: Some(self.clone()), id: tracker.id().to_owned(), options };
        let result = drive(self, tracker, events, on_update).await;
        guard.disarm();
        result
    }

    /// Follows a job someone else started (another program, another monitor) to its end, like
    /// [`run_job`](Self::run_job) without the start. Fails with [`JobError::NotFound`] when `query-jobs` does not
    /// list `id`. It dismisses the job at the end if [`JobOptions::dismiss`] is on (the default): pass
    /// `JobOptions::default().dismiss(false)` to leave that to the job's owner.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future stops following the job and leaves it alone (it is not cancelled).
    pub async fn watch_job<F>(&self, id: &str, options: JobOptions, on_update: F) -> Result<JobOutcome, JobError>
    where
        F: FnMut(&JobUpdate) -> JobAction,
    {
        let events = self.events_named(JOB_EVENTS);
        let tracker = JobTracker::watch(id, options, self.handle().runtime.now());
        drive(self, tracker, events, on_update).await
    }

    /// Cancels job `id` (`job-cancel`) without waiting for it to end; a runner following it sees it end.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn cancel_job(&self, id: &str) -> Result<(), Error> {
        self.execute::<serde::de::IgnoredAny>("job-cancel", json!({ "id": id })).await.map(drop)
    }

    /// Completes job `id` (`job-complete`: a mirror at "ready" switches to its target).
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn complete_job(&self, id: &str) -> Result<(), Error> {
        self.execute::<serde::de::IgnoredAny>("job-complete", json!({ "id": id })).await.map(drop)
    }
}

/// Runs the tracker's steps until it is done (the contract in [`tracker`](super::tracker)).
async fn drive<R: Runtime, F: FnMut(&JobUpdate) -> JobAction>(
    qmp: &Qmp<R>,
    mut tracker: JobTracker,
    mut events: Events,
    mut on_update: F,
) -> Result<JobOutcome, JobError> {
    let runtime = &qmp.handle().runtime;
    loop {
        while let Some(update) = tracker.poll_update() {
            tracker.handle_action(on_update(&update));
        }
        match tracker.poll_step(runtime.now()) {
            JobStep::Done(result) => return result,
            JobStep::Send(command) => {
                let reply = qmp.execute::<Value>(&command.name, &command.args).await;
                tracker.handle_reply(&command, reply, runtime.now());
            }
            JobStep::Wait(wake) => {
                let item = match wake {
                    Some(at) => match until(runtime.timer(at), events.recv()).await {
                        Some(item) => item,
                        None => continue,
                    },
                    None => events.recv().await,
                };
                match item {
                    Some(EventItem::Event(event)) => tracker.handle_event(&event, runtime.now()),
                    Some(EventItem::Lagged(_)) => tracker.handle_lost_events(runtime.now()),
                    None => tracker.handle_closed(Error::Connection(qmp.closed().await)),
                }
            }
        }
    }
}

/// Drops the events already waiting in a new subscription: they came before the start command, so they are not
/// about the job it starts (only the connection's first subscriber has such a backlog).
fn skip_backlog(events: &mut Events) {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let mut next = pin!(events.recv());
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(Some(_)) => continue,
            Poll::Ready(None) | Poll::Pending => return,
        }
    }
}

/// Cancels the job if the runner's future is dropped before it ends.
struct CancelOnDrop<R: Runtime> {
    qmp: Option<Qmp<R>>,
    id: String,
    options: JobOptions,
}

impl<R: Runtime> CancelOnDrop<R> {
    fn disarm(mut self) {
        self.qmp = None;
    }
}

impl<R: Runtime> Drop for CancelOnDrop<R> {
    fn drop(&mut self) {
        let Some(qmp) = self.qmp.take() else { return };
        tracing::debug!(job = %self.id, "job runner dropped; cancelling the job");
        let options = self.options.clone().progress_interval(None).timeout(Some(super::options::CANCEL_GRACE));
        let events = qmp.events_named(JOB_EVENTS);
        let mut tracker = JobTracker::watch(&self.id, options, qmp.handle().runtime.now());
        tracker.cancel();
        let runtime = qmp.handle().runtime.clone();
        let cleanup = async move {
            let result = drive(&qmp, tracker, events, |_| JobAction::Continue).await;
            tracing::debug!(?result, "job cancelled after its runner was dropped");
        };
        // A runtime that cannot spawn here (tokio outside its context) panics: never from a destructor.
        let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.spawn(cleanup)));
        if spawned.is_err() {
            tracing::warn!(job = %self.id, "could not spawn the task that cancels the job; it goes on running");
        }
    }
}
