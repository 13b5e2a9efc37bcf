//! `qmp job` against a real qemu-storage-daemon 10: JSON lines into a pipe, the progress bar under a
//! pseudo-terminal, exit statuses (0 ok, 1 QEMU's error, 3 connection loss), Ctrl-C cancelling, list and watch.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};

use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn qmp(sock: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmp")).args(["-s", sock]).args(args).output().expect("run qmp")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

/// A file node `name` (a sparse file of `size` bytes in the server's directory) and a null-co node `null`.
fn nodes(server: &QemuServer, sock: &str, file: &str, null: &str, size: u64) {
    let path = server.dir().join(format!("{file}.img"));
    std::fs::File::create(&path).and_then(|f| f.set_len(size)).expect("image file");
    let path = path.to_str().expect("utf-8 path");
    let out =
        qmp(sock, &["exec", "blockdev-add", "driver=file", &format!("node-name={file}"), &format!("filename={path}")]);
    assert!(out.status.success(), "{out:?}");
    let args = ["exec", "blockdev-add", "driver=null-co", &format!("node-name={null}"), &format!("size={size}")];
    assert!(qmp(sock, &args).status.success());
}

#[test]
fn run_into_a_pipe_prints_json_lines_and_exits_0() {
    let server = require!(QemuServer::storage_daemon());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    nodes(&server, sock, "src", "dst", 8 * MIB);
    let speed = format!("speed={}", 8 * MIB);
    let out =
        qmp(sock, &["job", "run", "blockdev-backup", "job-id=j0", "device=src", "target=dst", "sync=full", &speed]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = lines(&out);
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses.first(), Some(&"created"), "{statuses:?}");
    assert!(statuses.contains(&"running") && statuses.contains(&"concluded"), "{statuses:?}");
    let progress: Vec<u64> =
        lines.iter().filter(|l| l["total"] == 8 * MIB).filter_map(|l| l["current"].as_u64()).collect();
    assert!(progress.iter().any(|&c| c > 0 && c < 8 * MIB), "progress on the way: {progress:?}");
    let last = lines.last().expect("an outcome line");
    assert_eq!(last["result"], "ok", "{last}");
    assert_eq!(
        (last["id"].as_str(), last["type"].as_str(), last["status"].as_str()),
        (Some("j0"), Some("backup"), Some("null"))
    );
    assert_eq!(last["current"], 8 * MIB);
    let out = qmp(sock, &["job", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ID  TYPE  STATUS  PROGRESS  ERROR\n", "dismissed");
}

#[test]
fn failing_job_exits_1_with_qemus_error_then_list_and_watch() {
    let server = require!(QemuServer::storage_daemon());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    let out = qmp(sock, &["exec", "blockdev-add", "driver=null-co", "node-name=null0", "size=67108864"]);
    assert!(out.status.success());
    let args = [
        "job",
        "run",
        "--no-dismiss",
        "blockdev-create",
        "job-id=c0",
        "options.driver=qcow2",
        "options.file=null0",
        "options.size=1048576",
    ];
    let out = qmp(sock, &args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("job c0 failed: Image is not in qcow2 format"), "{stderr}");
    let last = lines(&out).pop().expect("an outcome line");
    assert_eq!((last["result"].as_str(), last["status"].as_str()), (Some("failed"), Some("concluded")), "{last}");
    // Left for someone else to dismiss: the table shows it with its error.
    let out = qmp(sock, &["job", "list"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().nth(1).expect("one job");
    let cells: Vec<&str> = row.split("  ").filter(|c| !c.is_empty()).map(str::trim).collect();
    assert_eq!(cells, ["c0", "create", "concluded", "1/1 (100%)", "Image is not in qcow2 format"], "{table}");
    // watch --dismiss: reads the concluded job, dismisses it, exits 1 with its error.
    let out = qmp(sock, &["job", "watch", "--dismiss", "c0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(lines(&out).pop().expect("outcome")["status"], "null");
    assert_eq!(qmp(sock, &["-c", "job", "list"]).stdout, b"[]\n");
    let out = qmp(sock, &["job", "watch", "c0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job with id \"c0\""), "{out:?}");
    let out = qmp(sock, &["job", "cancel", "c0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = qmp(sock, &["job", "run", "blockdev-create", "options.driver=qcow2"]);
    assert_eq!(out.status.code(), Some(2), "no job-id: {out:?}");
}

/// Spawns `qmp job run` of a slow mirror with stdout piped, and returns it once a running line with progress
/// has been printed.
fn slow_mirror(sock: &str, server: &QemuServer) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    nodes(server, sock, "src", "dst", 64 * MIB);
    let mut child = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["-s", sock, "job", "run", "blockdev-mirror", "job-id=m0", "device=src", "target=dst", "sync=full"])
        .arg(format!("speed={MIB}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qmp");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["status"] == "running" && v["current"].as_u64().is_some_and(|c| c > 0) {
            return (child, stdout);
        }
        line.clear();
    }
    let status = child.wait();
    panic!("qmp ended before the mirror ran: {status:?}");
}

#[test]
fn ctrl_c_cancels_the_job_and_waits_for_its_end() {
    let server = require!(QemuServer::storage_daemon());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    let (mut child, mut stdout) = slow_mirror(sock, &server);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read the rest");
    let last: Value = serde_json::from_str(rest.lines().last().expect("an outcome line")).expect("json");
    assert_eq!(status.code(), Some(1), "cancelled before ready: QEMU's error; {last}");
    assert_eq!(last["cancelled"], true, "{last}");
    assert_eq!(last["error"], "Operation canceled", "{last}");
    assert_eq!(last["status"], "null", "waited for the end and dismissed: {last}");
    assert_eq!(qmp(sock, &["-c", "job", "list"]).stdout, b"[]\n");
}

#[test]
fn connection_loss_exits_3() {
    let mut server = require!(QemuServer::storage_daemon());
    let sock = server.socket_path().to_str().expect("utf-8 path").to_owned();
    let (mut child, _stdout) = slow_mirror(&sock, &server);
    server.kill().expect("kill the storage daemon");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn run_on_a_terminal_draws_a_progress_bar() {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let server = require!(QemuServer::storage_daemon());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    nodes(&server, sock, "src", "dst", 8 * MIB);
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let terminal = std::fs::OpenOptions::new().read(true).write(true).open(name.to_str().expect("utf-8")).expect("pts");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["-s", sock, "job", "run", "blockdev-backup", "job-id=j1", "device=src", "target=dst", "sync=full"])
        .arg(format!("speed={}", 8 * MIB))
        .stdout(terminal.try_clone().expect("dup"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qmp");
    drop(terminal);
    // Read the terminal until the child has closed it (EIO on Linux once no slave is open).
    let mut master = std::fs::File::from(master);
    let reader = std::thread::spawn(move || {
        let mut screen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            screen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&screen).into_owned()
    });
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let screen = reader.join().expect("reader");
    assert!(!screen.contains('{'), "no JSON on a terminal: {screen:?}");
    // The bar was drawn several times on the way (progress redrawn in place), and finished at 100%.
    let draws = screen.matches("j1 [").count();
    assert!(draws >= 2, "the bar was redrawn: {screen:?}");
    assert!(screen.contains("50%") || screen.matches('%').count() >= 3, "{screen:?}");
    let end = screen.rsplit("j1 [").next().expect("the last drawing");
    assert!(end.contains("100%") && end.contains("8.00 MiB/8.00 MiB") && end.contains("null (done)"), "{end:?}");
}
