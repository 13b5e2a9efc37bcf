//! The sans-IO job tracker on its own: the steps it asks for, in order, for scripted events and answers.

use std::time::{Duration, Instant};

use qmp_async::jobs::{JobAction, JobCommand, JobError, JobOptions, JobStatus, JobStep, JobTracker};
use qmp_async::{Error, QmpError, RawJson, ServerEvent};
use serde_json::{json, Value};

fn status_event(id: &str, status: &str) -> ServerEvent {
    let data = json!({"id": id, "status": status}).to_string();
    ServerEvent { name: "JOB_STATUS_CHANGE".into(), data: Some(RawJson::from_json(&data).unwrap()), timestamp: None }
}

fn qmp_error(desc: &str) -> Error {
    let raw = json!({"class": "GenericError", "desc": desc}).to_string();
    Error::Qmp(QmpError { class: "GenericError".into(), desc: desc.into(), raw: RawJson::from_json(&raw).unwrap() })
}

#[track_caller]
fn expect_send(tracker: &mut JobTracker, now: Instant, name: &str) -> JobCommand {
    match tracker.poll_step(now) {
        JobStep::Send(command) if command.name == name => command,
        other => panic!("expected to send {name}, got {other:?}"),
    }
}

/// Takes the zero wait that follows every answer and event, feeding nothing.
#[track_caller]
fn expect_drain(tracker: &mut JobTracker, now: Instant) {
    match tracker.poll_step(now) {
        JobStep::Wait(Some(at)) if at == now => {}
        other => panic!("expected a zero wait, got {other:?}"),
    }
}

fn job(id: &str, status: &str, current: u64, total: u64) -> Value {
    json!({"id": id, "type": "backup", "status": status, "current-progress": current, "total-progress": total})
}

#[test]
fn start_arguments() {
    let now = Instant::now();
    let args = json!({"job-id": "j0", "device": "a", "target": "b", "sync": "full"});
    let mut t = JobTracker::run("blockdev-backup", args.clone(), JobOptions::default(), now).unwrap();
    let start = expect_send(&mut t, now, "blockdev-backup");
    assert_eq!(start.args["auto-dismiss"], false, "kept until the runner dismisses it");
    let mut t = JobTracker::run("blockdev-backup", args, JobOptions::default().dismiss(false), now).unwrap();
    assert!(expect_send(&mut t, now, "blockdev-backup").args.get("auto-dismiss").is_none());
    let create = json!({"job-id": "c0", "options": {"driver": "qcow2"}});
    let mut t = JobTracker::run("blockdev-create", create, JobOptions::default(), now).unwrap();
    assert!(expect_send(&mut t, now, "blockdev-create").args.get("auto-dismiss").is_none(), "takes no such member");
    let mut t = JobTracker::run("block-stream", json!({"device": "top"}), JobOptions::default(), now).unwrap();
    assert_eq!(t.id(), "top", "a block job without job-id is named after its device");
    assert_eq!(expect_send(&mut t, now, "block-stream").args["device"], "top");
    assert!(matches!(
        JobTracker::run("blockdev-create", json!({"options": {}}), JobOptions::default(), now),
        Err(JobError::NoJobId(c)) if c == "blockdev-create"
    ));
    assert!(matches!(JobTracker::run("x", json!([1]), JobOptions::default(), now), Err(JobError::NoJobId(_))));
}

/// The whole life of a failing job: stale events ignored, progress read, error read once concluded, dismissed.
#[test]
fn a_failing_job_from_start_to_dismissal() {
    let now = Instant::now();
    let opts = JobOptions::default().progress_interval(Some(Duration::from_secs(1)));
    let mut t = JobTracker::run("blockdev-backup", json!({"job-id": "j0"}), opts, now).unwrap();
    // An older job's "null" with the same id, from a subscriber's backlog: not this job's.
    t.handle_event(&status_event("j0", "null"), now);
    t.handle_event(&status_event("other", "created"), now);
    assert_eq!(t.status(), JobStatus::Undefined);
    let start = expect_send(&mut t, now, "blockdev-backup");
    t.handle_event(&status_event("j0", "created"), now);
    t.handle_event(&status_event("j0", "running"), now);
    t.handle_reply(&start, Ok(json!({})), now);
    let updates: Vec<_> = std::iter::from_fn(|| t.poll_update()).collect();
    assert_eq!(updates.iter().map(|u| u.status).collect::<Vec<_>>(), [JobStatus::Created, JobStatus::Running]);
    expect_drain(&mut t, now);
    let query = expect_send(&mut t, now, "query-jobs");
    // The answer says "created" (older than the events): events decide the status.
    t.handle_reply(&query, Ok(json!([job("j0", "created", 10, 100), job("j1", "running", 1, 2)])), now);
    assert_eq!((t.status(), t.progress()), (JobStatus::Running, (10, 100)));
    assert_eq!(t.poll_update().map(|u| (u.current, u.status_changed)), Some((10, false)));
    expect_drain(&mut t, now);
    assert!(matches!(t.poll_step(now), JobStep::Wait(Some(at)) if at == now + Duration::from_secs(1)));
    let later = now + Duration::from_secs(1);
    let query = expect_send(&mut t, later, "query-jobs");
    t.handle_reply(&query, Ok(json!([job("j0", "running", 60, 100)])), later);
    assert_eq!(t.poll_update().map(|u| (u.current, u.status_changed)), Some((60, false)));
    expect_drain(&mut t, later);
    for status in ["aborting", "concluded"] {
        t.handle_event(&status_event("j0", status), later);
    }
    // A late "running" cannot step back from the end.
    t.handle_event(&status_event("j0", "running"), later);
    assert_eq!(t.status(), JobStatus::Concluded);
    expect_drain(&mut t, later);
    let query = expect_send(&mut t, later, "query-jobs");
    let mut failed = job("j0", "concluded", 60, 100);
    failed["error"] = json!("Input/output error");
    t.handle_reply(&query, Ok(json!([failed])), later);
    expect_drain(&mut t, later);
    let dismiss = expect_send(&mut t, later, "job-dismiss");
    assert_eq!(dismiss.args, json!({"id": "j0"}));
    t.handle_reply(&dismiss, Ok(json!({})), later);
    expect_drain(&mut t, later);
    match t.poll_step(later) {
        JobStep::Done(Err(JobError::Failed(o))) => {
            assert_eq!(
                (o.status, o.error.as_deref(), o.progress),
                (JobStatus::Null, Some("Input/output error"), (60, 100))
            );
            assert_eq!(o.job_type.as_deref(), Some("backup"));
        }
        other => panic!("expected the failure, got {other:?}"),
    }
    assert!(matches!(t.poll_step(later), JobStep::Wait(None)), "done only once");
}

#[test]
fn complete_refused_then_cancel_and_deadline() {
    let now = Instant::now();
    let opts = JobOptions::default().progress_interval(None).timeout(Some(Duration::from_secs(5)));
    let mut t = JobTracker::run("blockdev-mirror", json!({"job-id": "m0"}), opts, now).unwrap();
    let start = expect_send(&mut t, now, "blockdev-mirror");
    t.handle_event(&status_event("m0", "created"), now);
    t.handle_reply(&start, Ok(json!({})), now);
    t.handle_action(JobAction::Complete);
    expect_drain(&mut t, now);
    let complete = expect_send(&mut t, now, "job-complete");
    let refusal = "Job 'm0' in state 'created' cannot accept command verb 'complete'";
    t.handle_reply(&complete, Err(qmp_error(refusal)), now);
    let refused = std::iter::from_fn(|| t.poll_update()).find_map(|u| u.refused).expect("reported");
    assert_eq!(refused, ("job-complete".to_owned(), refusal.to_owned()));
    expect_drain(&mut t, now);
    let _ = expect_send(&mut t, now, "query-jobs");
    // Without a progress interval nothing but events (and a deadline) wakes the runner up.
    let mut t2 = JobTracker::watch("m0", JobOptions::default().progress_interval(None), now);
    let q = expect_send(&mut t2, now, "query-jobs");
    t2.handle_reply(&q, Ok(json!([job("m0", "running", 0, 1)])), now);
    assert_eq!(t2.status(), JobStatus::Running, "watching takes the status from query-jobs");
    expect_drain(&mut t2, now);
    assert!(matches!(t2.poll_step(now), JobStep::Wait(None)));
    // The deadline: job-cancel, then a grace period, then TimedOut.
    let late = now + Duration::from_secs(5);
    let mut t = JobTracker::watch("m0", JobOptions::default().timeout(Some(Duration::from_secs(5))), now);
    let q = expect_send(&mut t, now, "query-jobs");
    t.handle_reply(&q, Ok(json!([job("m0", "running", 0, 1)])), now);
    expect_drain(&mut t, now);
    let cancel = expect_send(&mut t, late, "job-cancel");
    t.handle_reply(&cancel, Ok(json!({})), late);
    expect_drain(&mut t, late);
    let _ = expect_send(&mut t, late, "query-jobs");
    let give_up = late + qmp_async::jobs::CANCEL_GRACE;
    match t.poll_step(give_up) {
        JobStep::Done(Err(JobError::TimedOut(o))) => assert!(o.cancelled),
        other => panic!("expected TimedOut, got {other:?}"),
    }
}

#[test]
fn lost_events_and_the_connections_end() {
    let now = Instant::now();
    let mut t = JobTracker::watch("j0", JobOptions::default(), now);
    let q = expect_send(&mut t, now, "query-jobs");
    t.handle_reply(&q, Ok(json!([job("j0", "running", 0, 1)])), now);
    t.handle_lost_events(now);
    expect_drain(&mut t, now);
    let q = expect_send(&mut t, now, "query-jobs");
    t.handle_reply(&q, Ok(json!([job("j0", "pending", 1, 1)])), now);
    assert_eq!(t.status(), JobStatus::Pending, "after lost events, query-jobs sets the status");
    t.handle_closed(Error::Connection(qmp_async::ConnectionError::Local));
    assert!(matches!(t.poll_step(now), JobStep::Done(Err(JobError::Connection(_)))));
    // Unknown to query-jobs while watching: NotFound.
    let mut t = JobTracker::watch("ghost", JobOptions::default(), now);
    let q = expect_send(&mut t, now, "query-jobs");
    t.handle_reply(&q, Ok(json!([])), now);
    assert!(matches!(t.poll_step(now), JobStep::Done(Err(JobError::NotFound(id))) if id == "ghost"));
}
