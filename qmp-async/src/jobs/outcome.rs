//! How a followed job ended: [`JobOutcome`] when it concluded, [`JobError`] when it failed or could not be
//! followed to its end.

use std::fmt;

use qmp_proto::adapter::Error;

use super::status::JobStatus;

/// A job that ran to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// The job's id.
    pub id: String,
    /// The job's type (`backup`, `mirror`, `create`, ...), when `query-jobs` showed it.
    pub job_type: Option<String>,
    /// The last status seen: `Null` once dismissed, `Concluded` when left for someone else to dismiss.
    pub status: JobStatus,
    /// QEMU's error text, when the job failed (also set by a cancel before "ready": "Operation cancelled" or
    /// similar).
    pub error: Option<String>,
    /// Whether the runner sent `job-cancel` (asked by the callback, a dropped future or the deadline).
    pub cancelled: bool,
    /// The last progress reading (`current`, `total`).
    pub progress: (u64, u64),
}

/// Why a job runner did not end with a job concluded without error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The command that starts the job failed: QEMU refused it ([`Error::Qmp`]), or it could not be sent.
    #[error("the job did not start: {0}")]
    Start(#[source] Error),
    /// The job ran and failed; [`JobOutcome::error`] holds QEMU's error text.
    #[error("job {} failed: {}", .0.id, .0.error.as_deref().unwrap_or("unknown error"))]
    Failed(JobOutcome),
    /// The runner's deadline passed: the job was cancelled (and waited for, within a grace period).
    #[error("job {} timed out (status {})", .0.id, .0.status)]
    TimedOut(JobOutcome),
    /// `watch_job`: no job with this id exists.
    #[error("no job with id {0:?}")]
    NotFound(String),
    /// The start command's arguments name no job: give a `job-id` (or a `device` for block jobs).
    #[error("the arguments of {0} name no job: give it a job-id")]
    NoJobId(String),
    /// The connection ended, or a follow-up command (`query-jobs`, `job-dismiss`, ...) failed on this side.
    #[error("lost the job: {0}")]
    Connection(#[source] Error),
}

impl JobError {
    /// The outcome, for an error that has one (failed or timed out).
    pub fn outcome(&self) -> Option<&JobOutcome> {
        match self {
            JobError::Failed(o) | JobError::TimedOut(o) => Some(o),
            _ => None,
        }
    }
}

/// A short, human line: `backup j0: concluded (1048576/1048576)`.
impl fmt::Display for JobOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.job_type {
            write!(f, "{t} ")?;
        }
        write!(f, "{}: {} ({}/{})", self.id, self.status, self.progress.0, self.progress.1)?;
        if let Some(e) = &self.error {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}
