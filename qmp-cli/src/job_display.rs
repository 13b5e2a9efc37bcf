//! How `qmp job run` and `qmp job watch` show a job: a progress bar (indicatif) when stdout is a terminal, JSON
//! lines of status and progress otherwise (one per update, then one for the outcome).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qmp_blocking::jobs::{JobError, JobOutcome, JobUpdate};
use serde_json::{json, Value};

/// Where updates go.
pub enum Display {
    Bar(ProgressBar),
    JsonLines,
}

impl Display {
    /// A bar on a terminal, JSON lines otherwise.
    pub fn for_stdout(id: &str) -> Display {
        if !std::io::stdout().is_terminal() {
            return Display::JsonLines;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{prefix} [{bar:40}] {percent:>3}% {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(id.to_owned());
        Display::Bar(bar)
    }

    /// Shows one update.
    pub fn update(&self, update: &JobUpdate) {
        match self {
            Display::Bar(bar) => {
                bar.set_length(update.total);
                bar.set_position(update.current);
                bar.set_message(update.status.to_string());
                if let Some((command, error)) = &update.refused {
                    bar.println(format!("{command} refused: {error}"));
                }
            }
            Display::JsonLines => {
                let mut line = json!({
                    "id": update.id,
                    "status": update.status.as_str(),
                    "current": update.current,
                    "total": update.total,
                });
                if let Some((command, error)) = &update.refused {
                    line["refused"] = json!({"command": command, "error": error});
                }
                println!("{line}");
            }
        }
    }

    /// Shows how the job ended.
    pub fn finish(&self, result: &Result<JobOutcome, JobError>) {
        match self {
            Display::Bar(bar) => {
                let text = match result {
                    Ok(outcome) => format!("{} (done)", outcome.status),
                    Err(e) => match e.outcome() {
                        Some(outcome) => {
                            format!("{} ({})", outcome.status, outcome.error.as_deref().unwrap_or("failed"))
                        }
                        None => "lost".to_owned(),
                    },
                };
                if let Some(outcome) =
                    result.as_ref().ok().or_else(|| result.as_ref().err().and_then(JobError::outcome))
                {
                    bar.set_length(outcome.progress.1);
                    bar.set_position(outcome.progress.0);
                }
                if result.is_ok() {
                    bar.finish_with_message(text);
                } else {
                    bar.abandon_with_message(text);
                }
            }
            Display::JsonLines => println!("{}", outcome_json(result)),
        }
    }
}

/// The last JSON line: `{"id", "type", "status", "result": "ok"|"failed"|"timed-out"|"lost", "error", ...}`.
fn outcome_json(result: &Result<JobOutcome, JobError>) -> Value {
    let (outcome, verdict) = match result {
        Ok(o) => (Some(o), "ok"),
        Err(JobError::Failed(o)) => (Some(o), "failed"),
        Err(JobError::TimedOut(o)) => (Some(o), "timed-out"),
        Err(_) => (None, "lost"),
    };
    match outcome {
        Some(o) => json!({
            "id": o.id,
            "type": o.job_type,
            "status": o.status.as_str(),
            "result": verdict,
            "error": o.error,
            "cancelled": o.cancelled,
            "current": o.progress.0,
            "total": o.progress.1,
        }),
        None => json!({"result": verdict, "error": result.as_ref().err().map(ToString::to_string)}),
    }
}

/// `query-jobs` as a table: id, type, status, progress, error.
pub fn jobs_table(jobs: &Value) -> String {
    let mut rows = vec![["ID".to_owned(), "TYPE".into(), "STATUS".into(), "PROGRESS".into(), "ERROR".into()]];
    for job in jobs.as_array().into_iter().flatten() {
        let text = |key: &str| job[key].as_str().unwrap_or("-").to_owned();
        let (cur, total) = (job["current-progress"].as_u64().unwrap_or(0), job["total-progress"].as_u64().unwrap_or(0));
        let percent = cur.saturating_mul(100).checked_div(total).map_or(String::new(), |p| format!(" ({p}%)"));
        rows.push([text("id"), text("type"), text("status"), format!("{cur}/{total}{percent}"), text("error")]);
    }
    let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_shows_percent() {
        let jobs = json!([
            {"id": "j0", "type": "backup", "status": "running", "current-progress": 512, "total-progress": 1024},
            {"id": "create-long", "type": "create", "status": "concluded", "current-progress": 1,
             "total-progress": 1, "error": "Image is not in qcow2 format"},
        ]);
        let expected = [
            "ID           TYPE    STATUS     PROGRESS        ERROR",
            "j0           backup  running    512/1024 (50%)  -",
            "create-long  create  concluded  1/1 (100%)      Image is not in qcow2 format",
        ];
        assert_eq!(jobs_table(&jobs), expected.map(|l| format!("{l}\n")).concat());
        assert_eq!(jobs_table(&json!([])), "ID  TYPE  STATUS  PROGRESS  ERROR\n");
    }
}
