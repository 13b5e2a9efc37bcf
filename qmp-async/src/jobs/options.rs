//! [`JobOptions`]: how a job runner follows a job (progress polling, dismissal, deadline, what to do at "ready").

use std::time::Duration;

/// How long a job may take to end after the runner cancelled it on its deadline, before the runner gives up.
pub const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Settings of `run_job` / `watch_job`. `JobOptions::default()`: progress every 500 ms, dismiss when concluded
/// (`run_job`), no deadline, wait at "ready" for the callback to ask for completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOptions {
    pub(crate) progress_interval: Option<Duration>,
    pub(crate) dismiss: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) complete_when_ready: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            progress_interval: Some(Duration::from_millis(500)),
            dismiss: true,
            timeout: None,
            complete_when_ready: false,
        }
    }
}

impl JobOptions {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads progress with `query-jobs` this often while the job runs (`None`: only when its status changes).
    pub fn progress_interval(mut self, every: Option<Duration>) -> Self {
        self.progress_interval = every.map(|d| d.max(Duration::from_millis(10)));
        self
    }

    /// Whether to `job-dismiss` the job once concluded (after reading its error). `run_job` also starts the job
    /// with `auto-dismiss: false` (on the commands that take it) so that QEMU keeps the error until then.
    /// Default: true. `watch_job` follows another's job: pass false there to leave the job to its owner.
    pub fn dismiss(mut self, dismiss: bool) -> Self {
        self.dismiss = dismiss;
        self
    }

    /// A deadline for the whole job from the moment the runner starts (`None`: none). When it passes, the runner
    /// sends `job-cancel`, waits up to [`CANCEL_GRACE`] for the job to end, and fails with
    /// [`JobError::TimedOut`](super::JobError::TimedOut).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send `job-complete` as soon as the job reaches "ready" (a mirror then switches to its target), without
    /// asking the callback. Default: false.
    pub fn complete_when_ready(mut self, complete: bool) -> Self {
        self.complete_when_ready = complete;
        self
    }
}
