//! Jobs to the end in one call: [`Qmp::run_job`](crate::Qmp::run_job) starts a QEMU job (blockdev-create,
//! backup, mirror, stream, commit, snapshot-*) and follows it until it is over; [`Qmp::watch_job`](crate::Qmp::watch_job)
//! follows a job someone else started.
//!
//! A runner subscribes to events **before** it sends the start command (QEMU sends "created" and "running"
//! before the reply), follows `JOB_STATUS_CHANGE` for its job id, reads progress (`current`/`total` from
//! `query-jobs`, on every status change and every [`JobOptions::progress_interval`]) and reports both to a
//! callback, which can answer [`JobAction::Complete`] (a mirror at "ready") or [`JobAction::Cancel`]. When the
//! job has concluded it reads the job's error, `job-dismiss`es it (unless [`JobOptions::dismiss`] is off; the
//! commands that take `auto-dismiss` are started with it off, so the error is not lost) and returns a
//! [`JobOutcome`], or [`JobError::Failed`] with QEMU's error text.
//!
//! - [`tracker`]: the logic, sans I/O ([`JobTracker`]): no async, no runtime. `qmp-blocking` drives the same
//!   tracker from its own loop, so both follow jobs by the same rules. It lives here, not in the protocol core
//!   (`qmp-proto`), because jobs are a use of QMP, not part of the protocol; and `qmp-async` pulls in no runtime
//!   (its dependencies are runtime-neutral channel crates), so `qmp-blocking` can depend on it.
//! - [`status`], [`options`], [`outcome`]: the vocabulary.
//! - `run`: the async runner over [`Qmp`](crate::Qmp).

pub mod options;
pub mod outcome;
mod run;
pub mod status;
pub mod tracker;

pub use options::{JobOptions, CANCEL_GRACE};
pub use outcome::{JobError, JobOutcome};
pub use status::{JobAction, JobStatus, JobUpdate};
pub use tracker::{JobCommand, JobStep, JobTracker};
