//! `qmp job run|list|watch|cancel|complete`: QEMU jobs from the shell, on qmp-blocking's job runner.
//!
//! `run` and `watch` show progress (see [`job_display`](crate::job_display)) and exit 0 when the job concluded
//! without error, 1 with QEMU's error (printed on stderr), 3 when the connection was lost or the job outlived
//! `--job-timeout`. Ctrl-C during `run` cancels the job (`job-cancel`) and waits for it to end; during `watch` it
//! only stops watching.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use qmp_blocking::jobs::{JobAction, JobError, JobOptions, JobOutcome, JobStatus};
use qmp_blocking::Error;
use serde_json::{json, Value};

use crate::job_display::{jobs_table, Display};
use crate::output::Failure;
use crate::session::Session;

/// Progress readings while a job runs, and how often Ctrl-C is looked at.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Start a job and follow it to its end: `qmp job run blockdev-backup job-id=j0 device=n0 target=n1 sync=full`.
    Run {
        /// The command that starts the job (blockdev-create, blockdev-backup, blockdev-mirror, block-stream, ...).
        name: String,
        /// Its arguments (key=value words or one JSON object); they must include job-id (or device).
        args: Vec<String>,
        /// Complete the job (job-complete) as soon as it is ready (a mirror switches to its target).
        #[arg(long)]
        complete_on_ready: bool,
        /// Leave the concluded job for someone else to dismiss.
        #[arg(long)]
        no_dismiss: bool,
        /// Cancel the job if it has not ended after this many seconds (exit 3).
        #[arg(long)]
        job_timeout: Option<f64>,
    },
    /// List the jobs (query-jobs) as a table.
    List,
    /// Follow a running job to its end (Ctrl-C stops watching; the job goes on).
    Watch {
        /// The job's id.
        id: String,
        /// Dismiss the job once it has concluded.
        #[arg(long)]
        dismiss: bool,
    },
    /// Cancel a job (job-cancel).
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Complete a job that is ready (job-complete).
    Complete {
        /// The job's id.
        id: String,
    },
}

/// Runs one `qmp job` subcommand.
pub fn run(session: &mut Session, command: JobCommand, compact: bool) -> Result<(), Failure> {
    match command {
        JobCommand::Run { name, args, complete_on_ready, no_dismiss, job_timeout } => {
            let args = crate::args::parse_arguments(&args).map_err(Failure::Usage)?.unwrap_or_else(|| json!({}));
            let timeout = match job_timeout {
                Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
                Some(_) => return Err(Failure::Usage("--job-timeout must be a positive number of seconds".into())),
                None => None,
            };
            let options = JobOptions::default()
                .progress_interval(Some(PROGRESS_EVERY))
                .dismiss(!no_dismiss)
                .timeout(timeout)
                .complete_when_ready(complete_on_ready);
            let id = args.get("job-id").or_else(|| args.get("device")).and_then(Value::as_str).unwrap_or("job");
            let display = Display::for_stdout(id);
            let interrupted = interrupt_flag()?;
            let client = session.qmp()?;
            let result = client.run_job(&name, &args, options, |update| {
                display.update(update);
                if interrupted.load(Ordering::Relaxed) {
                    JobAction::Cancel
                } else {
                    JobAction::Continue
                }
            });
            display.finish(&result);
            verdict(result)
        }
        JobCommand::Watch { id, dismiss } => {
            let options = JobOptions::default().progress_interval(Some(PROGRESS_EVERY)).dismiss(dismiss);
            let display = Display::for_stdout(&id);
            let result = session.qmp()?.watch_job(&id, options, |update| {
                display.update(update);
                JobAction::Continue
            });
            display.finish(&result);
            verdict(result)
        }
        JobCommand::List => {
            let jobs = session.execute("query-jobs", None, false)?;
            if compact {
                println!("{jobs}");
            } else {
                print!("{}", jobs_table(&jobs));
            }
            Ok(())
        }
        JobCommand::Cancel { id } => Ok(session.qmp()?.cancel_job(&id)?),
        JobCommand::Complete { id } => Ok(session.qmp()?.complete_job(&id)?),
    }
}

/// Ctrl-C sets the flag (the job runner then cancels the job) instead of ending the process.
fn interrupt_flag() -> Result<Arc<AtomicBool>, Failure> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    ctrlc::set_handler(move || set.store(true, Ordering::Relaxed))
        .map_err(|e| Failure::Usage(format!("cannot catch Ctrl-C: {e}")))?;
    Ok(flag)
}

/// The exit status of a followed job.
fn verdict(result: Result<JobOutcome, JobError>) -> Result<(), Failure> {
    match result {
        Ok(outcome) if outcome.status == JobStatus::Concluded || outcome.status == JobStatus::Null => Ok(()),
        Ok(outcome) => Err(Failure::Job(format!("job {} ended in state {}", outcome.id, outcome.status))),
        Err(JobError::Failed(outcome)) => Err(Failure::Job(format!(
            "job {} failed: {}",
            outcome.id,
            outcome.error.as_deref().unwrap_or("unknown error")
        ))),
        Err(JobError::Start(e)) => Err(e.into()),
        Err(JobError::NoJobId(command)) => Err(Failure::Usage(format!("{command} needs job-id=ID"))),
        Err(JobError::NotFound(id)) => Err(Failure::Job(format!("no job with id {id:?}"))),
        Err(JobError::Connection(Error::Connection(e))) => Err(Failure::Connection(e.to_string())),
        Err(e) => Err(Failure::Connection(e.to_string())),
    }
}
