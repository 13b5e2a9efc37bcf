//! [`JobStatus`]: the states of a QEMU job (QAPI `JobStatus`), and [`JobUpdate`], what a job runner reports.

use std::fmt;

/// A job's state, as `JOB_STATUS_CHANGE` and `query-jobs` name it.
///
/// The usual path is created, running, (ready, for mirror and commit of the active layer), waiting, pending,
/// concluded, null; paused and standby come and go; aborting precedes concluded on failure or cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobStatus {
    /// Not known yet (no event and no `query-jobs` answer seen).
    Undefined,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Paused by the user (`job-pause`) or by QEMU.
    Paused,
    /// Ready to be completed (`job-complete`): a mirror in sync with its source.
    Ready,
    /// Ready, but paused.
    Standby,
    /// Done, waiting for the other jobs of its transaction.
    Waiting,
    /// Waiting to be finalized (`job-finalize`, or at once with `auto-finalize`).
    Pending,
    /// Failing or being cancelled.
    Aborting,
    /// Over; its result is in `query-jobs` until it is dismissed.
    Concluded,
    /// Dismissed: gone from `query-jobs`.
    Null,
}

impl JobStatus {
    /// Reads QEMU's name of a status; `None` for a name this crate does not know.
    pub fn parse(name: &str) -> Option<JobStatus> {
        Some(match name {
            "undefined" => JobStatus::Undefined,
            "created" => JobStatus::Created,
            "running" => JobStatus::Running,
            "paused" => JobStatus::Paused,
            "ready" => JobStatus::Ready,
            "standby" => JobStatus::Standby,
            "waiting" => JobStatus::Waiting,
            "pending" => JobStatus::Pending,
            "aborting" => JobStatus::Aborting,
            "concluded" => JobStatus::Concluded,
            "null" => JobStatus::Null,
            _ => return None,
        })
    }

    /// QEMU's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Undefined => "undefined",
            JobStatus::Created => "created",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Ready => "ready",
            JobStatus::Standby => "standby",
            JobStatus::Waiting => "waiting",
            JobStatus::Pending => "pending",
            JobStatus::Aborting => "aborting",
            JobStatus::Concluded => "concluded",
            JobStatus::Null => "null",
        }
    }

    /// Concluded or null: the job does no more work.
    pub fn is_over(self) -> bool {
        matches!(self, JobStatus::Concluded | JobStatus::Null)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job runner tells its callback: after every status change and every `query-jobs` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUpdate {
    /// The job's id.
    pub id: String,
    /// Its status now.
    pub status: JobStatus,
    /// Whether this update is a status change (otherwise, a progress reading).
    pub status_changed: bool,
    /// Work done so far, in the job's own unit (bytes for block jobs), from `query-jobs`.
    pub current: u64,
    /// Work to do in all, in the same unit; it may grow while the job runs (a mirror whose source is written).
    pub total: u64,
    /// A `job-complete` or `job-cancel` the runner sent that QEMU refused (for example a complete before
    /// "ready"): the command and QEMU's error text. The job goes on.
    pub refused: Option<(String, String)>,
}

/// What the callback of a job runner asks for after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JobAction {
    /// Nothing: keep following the job.
    #[default]
    Continue,
    /// `job-complete` (a job in "ready" state: a mirror switches to its target).
    Complete,
    /// `job-cancel`, then wait for the job to end.
    Cancel,
}
