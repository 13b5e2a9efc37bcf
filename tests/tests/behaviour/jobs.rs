//! Job scenarios against a real qemu-storage-daemon 10: `run_job` / `watch_job` on every adapter, with null-co
//! and file-backed nodes in the server's temporary directory.
//!
//! Each takes the [`heavy`] lock: they start QEMU processes and threads, and a runtime's executor busy with
//! them would disturb the memory measurements and starve the flood scenarios (and be starved by them).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use qmp_blocking::jobs::{JobAction, JobError, JobOptions, JobStatus, JobUpdate};
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use serde_json::{json, Value};

use crate::harness::{heavy, Adapter, Call, SuiteOpts};

const MIB: u64 = 1 << 20;

/// A file node `name` over a new sparse file of `size` bytes in `dir`.
fn add_file_node<A: Adapter>(conn: &A::Conn, dir: &Path, name: &str, size: u64) {
    let path = dir.join(format!("{name}.img"));
    std::fs::File::create(&path).and_then(|f| f.set_len(size)).expect("create the image file");
    let args = json!({"driver": "file", "node-name": name, "filename": path});
    A::execute::<Value>(conn, Call::new("blockdev-add").args(args)).expect("blockdev-add file");
}

/// A null-co node `name` of `size` bytes (reads zeroes, drops writes).
fn add_null_node<A: Adapter>(conn: &A::Conn, name: &str, size: u64) {
    let args = json!({"driver": "null-co", "node-name": name, "size": size, "read-zeroes": true});
    A::execute::<Value>(conn, Call::new("blockdev-add").args(args)).expect("blockdev-add null-co");
}

/// Records every update; answers with `decide`.
fn recorder<'a>(
    seen: &'a Mutex<Vec<JobUpdate>>,
    mut decide: impl FnMut(&JobUpdate) -> JobAction + Send + 'a,
) -> impl FnMut(&JobUpdate) -> JobAction + Send + 'a {
    move |update| {
        seen.lock().unwrap().push(update.clone());
        decide(update)
    }
}

/// The status changes among `updates`, in order.
fn statuses(updates: &Mutex<Vec<JobUpdate>>) -> Vec<JobStatus> {
    updates.lock().unwrap().iter().filter(|u| u.status_changed).map(|u| u.status).collect()
}

fn query_jobs<A: Adapter>(conn: &A::Conn) -> Vec<Value> {
    A::execute(conn, Call::new("query-jobs")).expect("query-jobs")
}

fn fast() -> JobOptions {
    JobOptions::default().progress_interval(Some(Duration::from_millis(50))).timeout(Some(Duration::from_secs(60)))
}

/// blockdev-create of a qcow2 image on a file node: created, running, ..., concluded, null; dismissed.
pub fn job_blockdev_create_succeeds<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    add_file_node::<A>(&conn, server.dir(), "file0", 0);
    let seen = Mutex::new(Vec::new());
    let args = json!({"job-id": "create0", "options": {"driver": "qcow2", "file": "file0", "size": 16 * MIB}});
    let outcome = A::run_job(&conn, "blockdev-create", args, fast(), &mut recorder(&seen, |_| JobAction::Continue))
        .unwrap_or_else(|e| panic!("{}: blockdev-create: {e:?}", A::NAME));
    assert_eq!(outcome.id, "create0");
    assert_eq!(outcome.status, JobStatus::Null, "dismissed: {outcome:?}");
    assert_eq!(outcome.error, None);
    assert!(!outcome.cancelled);
    let statuses = statuses(&seen);
    assert_eq!(statuses.first(), Some(&JobStatus::Created), "{}: {statuses:?}", A::NAME);
    assert!(statuses.contains(&JobStatus::Running), "{statuses:?}");
    assert!(statuses.ends_with(&[JobStatus::Concluded, JobStatus::Null]), "{statuses:?}");
    assert!(query_jobs::<A>(&conn).is_empty(), "the job was dismissed");
    // The image is a qcow2 now: it opens as one.
    let args = json!({"driver": "qcow2", "node-name": "qcow0", "file": "file0"});
    A::execute::<Value>(&conn, Call::new("blockdev-add").args(args)).expect("the new image opens as qcow2");
    A::close(conn);
}

/// blockdev-create of a qcow2 image on null-co fails with QEMU's error text; the job is dismissed all the same.
pub fn job_blockdev_create_fails<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    add_null_node::<A>(&conn, "null0", 64 * MIB);
    let seen = Mutex::new(Vec::new());
    let args = json!({"job-id": "create1", "options": {"driver": "qcow2", "file": "null0", "size": 16 * MIB}});
    let result = A::run_job(&conn, "blockdev-create", args, fast(), &mut recorder(&seen, |_| JobAction::Continue));
    match result {
        Err(JobError::Failed(outcome)) => {
            assert_eq!(outcome.id, "create1");
            assert_eq!(outcome.status, JobStatus::Null);
            let error = outcome.error.expect("QEMU's error text");
            assert!(error.contains("Image is not in qcow2 format"), "{}: {error}", A::NAME);
        }
        other => panic!("{}: expected the job to fail, got {other:?}", A::NAME),
    }
    assert!(statuses(&seen).contains(&JobStatus::Aborting), "{:?}", statuses(&seen));
    assert!(query_jobs::<A>(&conn).is_empty(), "the failed job was dismissed");
    // A missing node is found by the job, not by the command: a job that fails, with QEMU's text.
    let args = json!({"job-id": "create2", "options": {"driver": "qcow2", "file": "no-such-node", "size": MIB}});
    match A::run_job(&conn, "blockdev-create", args, fast(), &mut |_| JobAction::Continue) {
        Err(JobError::Failed(o)) => {
            assert_eq!(o.error.as_deref(), Some("Cannot find device='no-such-node' nor node-name='no-such-node'"))
        }
        other => panic!("{}: expected the job to fail, got {other:?}", A::NAME),
    }
    // A start command QEMU refuses is a Start error, and nothing is left behind.
    let args = json!({"job-id": "create3", "options": {"driver": "no-such-driver", "size": MIB}});
    match A::run_job(&conn, "blockdev-create", args, fast(), &mut |_| JobAction::Continue) {
        Err(JobError::Start(qmp_blocking::Error::Qmp(e))) => assert!(e.desc.contains("no-such-driver"), "{e}"),
        other => panic!("{}: expected a Start error, got {other:?}", A::NAME),
    }
    assert!(query_jobs::<A>(&conn).is_empty());
    A::close(conn);
}

/// blockdev-backup (rate-limited so that it takes about two seconds): progress rises to its total, the job ends
/// without error and is dismissed.
pub fn job_backup_progress_rises_to_total<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    add_file_node::<A>(&conn, server.dir(), "src", 16 * MIB);
    add_null_node::<A>(&conn, "dst", 16 * MIB);
    let seen = Mutex::new(Vec::new());
    let args = json!({"job-id": "backup0", "device": "src", "target": "dst", "sync": "full", "speed": 8 * MIB});
    let outcome = A::run_job(&conn, "blockdev-backup", args, fast(), &mut recorder(&seen, |_| JobAction::Continue))
        .unwrap_or_else(|e| panic!("{}: backup: {e:?}", A::NAME));
    assert_eq!(outcome.job_type.as_deref(), Some("backup"));
    assert_eq!(outcome.progress, (16 * MIB, 16 * MIB), "{outcome:?}");
    assert_eq!(outcome.status, JobStatus::Null);
    let updates = seen.lock().unwrap().clone();
    let readings: Vec<u64> = updates.iter().filter(|u| u.total > 0).map(|u| u.current).collect();
    assert!(readings.windows(2).all(|w| w[0] <= w[1]), "{}: progress never goes back: {readings:?}", A::NAME);
    assert!(readings.iter().any(|&c| c > 0 && c < 16 * MIB), "{}: a reading on the way: {readings:?}", A::NAME);
    assert_eq!(readings.last(), Some(&(16 * MIB)));
    // auto-dismiss was off, so the job waited for the runner's dismissal: "concluded" then "null".
    assert!(statuses(&seen).ends_with(&[JobStatus::Concluded, JobStatus::Null]), "{:?}", statuses(&seen));
    assert!(query_jobs::<A>(&conn).is_empty());
    A::close(conn);
}

/// blockdev-mirror reaches "ready", the callback completes it, it ends without error.
pub fn job_mirror_ready_then_completed<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    add_file_node::<A>(&conn, server.dir(), "src", 8 * MIB);
    add_file_node::<A>(&conn, server.dir(), "dst", 8 * MIB);
    let seen = Mutex::new(Vec::new());
    let mut completes = 0;
    let args = json!({"job-id": "mirror0", "device": "src", "target": "dst", "sync": "full"});
    let decide = |u: &JobUpdate| {
        if u.status == JobStatus::Ready && u.status_changed {
            completes += 1;
            JobAction::Complete
        } else {
            JobAction::Continue
        }
    };
    let outcome = A::run_job(&conn, "blockdev-mirror", args, fast(), &mut recorder(&seen, decide))
        .unwrap_or_else(|e| panic!("{}: mirror: {e:?}", A::NAME));
    assert_eq!(completes, 1);
    assert_eq!(outcome.job_type.as_deref(), Some("mirror"));
    assert_eq!(outcome.error, None);
    assert!(!outcome.cancelled);
    let statuses = statuses(&seen);
    let ready = statuses.iter().position(|s| *s == JobStatus::Ready).expect("reached ready");
    assert!(statuses[ready..].ends_with(&[JobStatus::Concluded, JobStatus::Null]), "{statuses:?}");
    assert!(seen.lock().unwrap().iter().all(|u| u.refused.is_none()), "job-complete was accepted");
    A::close(conn);
}

/// A mirror cancelled while it runs (rate-limited so that it cannot reach "ready" first) ends cancelled and is
/// dismissed; a `job-complete` before "ready" is refused and reported, and the job goes on.
pub fn job_mirror_cancelled<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    add_file_node::<A>(&conn, server.dir(), "src", 64 * MIB);
    add_null_node::<A>(&conn, "dst", 64 * MIB);
    let seen = Mutex::new(Vec::new());
    let mut asked = 0;
    let args = json!({"job-id": "mirror1", "device": "src", "target": "dst", "sync": "full", "speed": MIB});
    let decide = |u: &JobUpdate| {
        if u.status != JobStatus::Running || u.current == 0 {
            return JobAction::Continue;
        }
        asked += 1;
        match asked {
            1 => JobAction::Complete,
            _ if u.refused.is_some() || asked > 2 => JobAction::Cancel,
            _ => JobAction::Continue,
        }
    };
    let result = A::run_job(&conn, "blockdev-mirror", args, fast(), &mut recorder(&seen, decide));
    // QEMU reports a job cancelled before "ready" as failed: its error is strerror(ECANCELED).
    let outcome = match result {
        Err(JobError::Failed(outcome)) => outcome,
        other => panic!("{}: expected the cancelled job's failure, got {other:?}", A::NAME),
    };
    assert_eq!(outcome.error.as_deref(), Some("Operation canceled"), "{outcome:?}");
    assert!(outcome.cancelled, "{outcome:?}");
    assert_eq!(outcome.status, JobStatus::Null);
    assert!(outcome.progress.0 < 64 * MIB, "cancelled on the way: {outcome:?}");
    let refused: Vec<_> = seen.lock().unwrap().iter().filter_map(|u| u.refused.clone()).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "job-complete");
    assert!(refused[0].1.contains("cannot accept command verb 'complete'"), "{refused:?}");
    let statuses = statuses(&seen);
    assert!(!statuses.contains(&JobStatus::Ready), "{statuses:?}");
    assert!(statuses.ends_with(&[JobStatus::Aborting, JobStatus::Concluded, JobStatus::Null]), "{statuses:?}");
    assert!(query_jobs::<A>(&conn).is_empty());
    A::close(conn);
}

/// A backup started on one monitor is followed to its end from a second monitor (without dismissing it: the
/// owner does); `watch_job` of an unknown id is NotFound.
pub fn job_watched_from_a_second_monitor<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon_two_monitors());
    let owner = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect the first monitor");
    let watcher = A::connect(&server.second_monitor_path(), &SuiteOpts::default()).expect("connect the second");
    match A::watch_job(&watcher, "nobody", fast(), &mut |_| JobAction::Continue) {
        Err(JobError::NotFound(id)) => assert_eq!(id, "nobody"),
        other => panic!("{}: expected NotFound, got {other:?}", A::NAME),
    }
    add_file_node::<A>(&owner, server.dir(), "src", 8 * MIB);
    add_null_node::<A>(&owner, "dst", 8 * MIB);
    let args = json!({"job-id": "backup1", "device": "src", "target": "dst", "sync": "full", "speed": 8 * MIB});
    let watched = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let owner_run =
            scope.spawn(|| A::run_job(&owner, "blockdev-backup", args, fast(), &mut |_| JobAction::Continue));
        // Wait until the job exists, as seen from the second monitor.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !query_jobs::<A>(&watcher).iter().any(|j| j["id"] == "backup1") {
            assert!(std::time::Instant::now() < deadline, "the job never showed up");
            std::thread::sleep(Duration::from_millis(10));
        }
        let watch =
            A::watch_job(&watcher, "backup1", fast().dismiss(false), &mut recorder(&watched, |_| JobAction::Continue))
                .unwrap_or_else(|e| panic!("{}: watch: {e:?}", A::NAME));
        assert_eq!(watch.id, "backup1");
        assert_eq!(watch.error, None);
        assert!(watch.status.is_over(), "{watch:?}");
        assert_eq!(watch.progress, (8 * MIB, 8 * MIB), "{watch:?}");
        let owned = owner_run.join().expect("the owner's thread").expect("the owner's run");
        assert_eq!(owned.status, JobStatus::Null, "the owner dismissed it: {owned:?}");
    });
    let statuses = statuses(&watched);
    assert!(statuses.contains(&JobStatus::Running) && statuses.contains(&JobStatus::Concluded), "{statuses:?}");
    assert!(query_jobs::<A>(&watcher).is_empty());
    A::close(watcher);
    A::close(owner);
}

/// A job that outlives its deadline is cancelled, waited for and dismissed: TimedOut with its outcome.
pub fn job_deadline_cancels_the_job<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    add_file_node::<A>(&conn, server.dir(), "src", 64 * MIB);
    add_null_node::<A>(&conn, "dst", 64 * MIB);
    let args = json!({"job-id": "mirror2", "device": "src", "target": "dst", "sync": "full", "speed": MIB});
    let start = std::time::Instant::now();
    let opts = fast().timeout(Some(Duration::from_millis(300)));
    match A::run_job(&conn, "blockdev-mirror", args, opts, &mut |_| JobAction::Continue) {
        Err(JobError::TimedOut(outcome)) => {
            assert!(outcome.cancelled, "{outcome:?}");
            assert_eq!(outcome.status, JobStatus::Null, "{outcome:?}");
        }
        other => panic!("{}: expected TimedOut, got {other:?}", A::NAME),
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    assert!(query_jobs::<A>(&conn).is_empty(), "cancelled and dismissed");
    A::close(conn);
}

/// The server going away in the middle of a job ends the runner with the connection error.
pub fn job_connection_loss_ends_the_runner<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    add_file_node::<A>(&conn, server.dir(), "src", 64 * MIB);
    add_null_node::<A>(&conn, "dst", 64 * MIB);
    let server = Mutex::new(server);
    let args = json!({"job-id": "backup2", "device": "src", "target": "dst", "sync": "full", "speed": MIB});
    let kill_when_running = |u: &JobUpdate| {
        if u.status == JobStatus::Running && u.current > 0 {
            server.lock().unwrap().kill().expect("kill the storage daemon");
        }
        JobAction::Continue
    };
    match A::run_job(&conn, "blockdev-backup", args, fast(), &mut { kill_when_running }) {
        Err(JobError::Connection(qmp_blocking::Error::Connection(_))) => {}
        other => panic!("{}: expected the connection error, got {other:?}", A::NAME),
    }
}

/// Async adapters: dropping `run_job`'s future cancels the job (a task sends job-cancel and dismisses it).
pub fn job_dropped_runner_cancels_the_job<A: Adapter>() {
    let _heavy = heavy();
    let server = require!(QemuServer::storage_daemon());
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    add_file_node::<A>(&conn, server.dir(), "src", 64 * MIB);
    add_null_node::<A>(&conn, "dst", 64 * MIB);
    let args = json!({"job-id": "mirror3", "device": "src", "target": "dst", "sync": "full", "speed": MIB});
    let ended = A::run_job_dropped_after(&conn, "blockdev-mirror", args, fast(), Duration::from_millis(300));
    assert!(ended.is_none(), "{}: the job cannot end within 300 ms: {ended:?}", A::NAME);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = query_jobs::<A>(&conn);
        if jobs.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}: the job is still there: {jobs:?}", A::NAME);
        std::thread::sleep(Duration::from_millis(20));
    }
    A::close(conn);
}
