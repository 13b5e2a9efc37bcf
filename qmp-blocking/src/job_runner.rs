//! Jobs to the end in one call, blocking: [`Client::run_job`] and [`Client::watch_job`].
//!
//! The logic is `qmp-async`'s sans-IO [`JobTracker`] (the same rules as the async adapters; it needs no runtime,
//! see [`qmp_async::jobs`]); this file is only the loop that feeds it. Events for the job are taken out of the
//! client's event buffer; the others stay there for [`Client::next_event`], in order.

use std::time::Instant;

use qmp_async::jobs::{JobAction, JobError, JobOptions, JobOutcome, JobStep, JobTracker, JobUpdate};
use serde::Serialize;
use serde_json::{json, Value};

use crate::transport::Transport;
use crate::{Client, Error};

impl<S: Transport> Client<S> {
    /// Starts a job with `command` and `args` and follows it to its end: the blocking twin of
    /// `qmp_async::Qmp::run_job` (same rules, see [`qmp_async::jobs`]).
    ///
    /// `args` must name the job (`job-id`, or `device` for a block job without one). `on_update` is called after
    /// every status change and every progress reading (every [`JobOptions::progress_interval`] while the job
    /// runs: also the place to check a Ctrl-C flag); its [`JobAction`] completes or cancels the job. Events that
    /// arrive meanwhile for other jobs or of other kinds stay buffered for [`next_event`](Self::next_event).
    ///
    /// ```no_run
    /// use qmp_blocking::jobs::{JobAction, JobOptions};
    /// use serde_json::json;
    ///
    /// let mut qmp = qmp_blocking::Client::connect_unix("/tmp/qsd.sock", Default::default())?;
    /// let args = json!({"job-id": "c0", "options": {"driver": "qcow2", "file": "file0", "size": 1048576}});
    /// let outcome = qmp.run_job("blockdev-create", args, JobOptions::default(), |update| {
    ///     eprintln!("{} {}/{}", update.status, update.current, update.total);
    ///     JobAction::Continue
    /// })?;
    /// assert!(outcome.error.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_job<F>(
        &mut self,
        command: &str,
        args: impl Serialize,
        options: JobOptions,
        on_update: F,
    ) -> Result<JobOutcome, JobError>
    where
        F: FnMut(&JobUpdate) -> JobAction,
    {
        let tracker = JobTracker::run(command, args, options, Instant::now())?;
        // Buffered events about this id came before the start command: an older job's.
        self.driver.events.retain(|e| !tracker.concerns(e));
        drive(self, tracker, on_update)
    }

    /// Follows a job someone else started to its end: the blocking twin of `qmp_async::Qmp::watch_job`.
    /// Fails with [`JobError::NotFound`] when `query-jobs` does not list `id`; dismisses the job at the end
    /// unless `options.dismiss(false)`.
    pub fn watch_job<F>(&mut self, id: &str, options: JobOptions, on_update: F) -> Result<JobOutcome, JobError>
    where
        F: FnMut(&JobUpdate) -> JobAction,
    {
        drive(self, JobTracker::watch(id, options, Instant::now()), on_update)
    }

    /// Cancels job `id` (`job-cancel`) without waiting for it to end.
    pub fn cancel_job(&mut self, id: &str) -> Result<(), Error> {
        self.execute::<serde::de::IgnoredAny>("job-cancel", json!({ "id": id })).map(drop)
    }

    /// Completes job `id` (`job-complete`: a mirror at "ready" switches to its target).
    pub fn complete_job(&mut self, id: &str) -> Result<(), Error> {
        self.execute::<serde::de::IgnoredAny>("job-complete", json!({ "id": id })).map(drop)
    }
}

/// Runs the tracker's steps until it is done (the contract in `qmp_async::jobs::tracker`).
fn drive<S: Transport, F: FnMut(&JobUpdate) -> JobAction>(
    client: &mut Client<S>,
    mut tracker: JobTracker,
    mut on_update: F,
) -> Result<JobOutcome, JobError> {
    let mut dropped = client.dropped_events();
    loop {
        while let Some(update) = tracker.poll_update() {
            tracker.handle_action(on_update(&update));
        }
        let now = Instant::now();
        match tracker.poll_step(now) {
            JobStep::Done(result) => {
                client.driver.events.retain(|e| !tracker.concerns(e));
                return result;
            }
            JobStep::Send(command) => {
                let reply = client.execute::<Value>(&command.name, &command.args);
                tracker.handle_reply(&command, reply, Instant::now());
            }
            JobStep::Wait(wake) => {
                let timeout = wake.map(|at| at.saturating_duration_since(now));
                match client.driver.next_event_where(|e| tracker.concerns(e), timeout) {
                    Ok(Some(event)) => tracker.handle_event(&event, Instant::now()),
                    Ok(None) => {}
                    Err(e) => tracker.handle_closed(e),
                }
            }
        }
        if client.dropped_events() > dropped {
            dropped = client.dropped_events();
            tracker.handle_lost_events(Instant::now());
        }
    }
}
