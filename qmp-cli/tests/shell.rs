//! `qmp shell` at a terminal: driven through a pseudo-terminal (expectrl) against real QEMU processes the tests
//! start. Every wait is for text the shell prints (a prompt, a result, a notice), with a generous timeout.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use expectrl::process::unix::{PtyStream, UnixProcess, WaitStatus};
use expectrl::{Eof, Expect, Regex, Session};
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use support::{raw_command, Qemu, TempDir};

type Pty = Session<UnixProcess, PtyStream>;

const PROMPT: &str = "(qmp) ";
const UP: &str = "\x1b[A";
const CTRL_C: &str = "\x03";
const CTRL_D: &str = "\x04";

/// Starts `qmp -s SOCKET ARGS... shell SHELL_ARGS...` on a pseudo-terminal, history in `history`.
fn shell(socket: &str, before: &[&str], after: &[&str], history: &Path) -> Pty {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qmp"));
    cmd.args(["-s", socket]).args(before).arg("shell").args(after);
    cmd.env("QMP_HISTORY", history).env("TERM", "xterm").env_remove("XDG_STATE_HOME");
    let mut pty = Session::spawn(cmd).expect("spawn qmp shell on a pty");
    pty.set_expect_timeout(Some(Duration::from_secs(30)));
    pty.expect("# connected to").expect("connected notice");
    pty
}

/// `"major":N` as the compact output of `query-version` shows the server's major version.
fn major(server: &QemuServer) -> String {
    format!("\"major\":{}", server.version().major)
}

fn expect(pty: &mut Pty, what: &str) -> String {
    match pty.expect(what) {
        Ok(found) => String::from_utf8_lossy(found.before()).into_owned(),
        Err(e) => panic!("waiting for {what:?}: {e}"),
    }
}

fn expect_regex(pty: &mut Pty, pattern: &str) -> String {
    match pty.expect(Regex(pattern)) {
        Ok(found) => String::from_utf8_lossy(found.as_bytes()).into_owned(),
        Err(e) => panic!("waiting for /{pattern}/: {e}"),
    }
}

/// Types `text` one key at a time, as a person does, waiting for each key's echo (so the caller must have
/// consumed the output before the prompt, or a letter of an earlier line could pass for the echo). (rustyline 17 with an
/// ExternalPrinter handles only the first key of a burst that arrives in one read until more input comes: it
/// select()s on the terminal while further keys wait in its own buffer. Bracketed paste is read whole.)
fn type_keys(pty: &mut Pty, text: &str) {
    for c in text.chars() {
        pty.send(c.to_string()).expect("send key");
        expect(pty, &c.to_string());
    }
}

/// Ctrl-D at the prompt: the shell prints a line end and exits with 0.
fn quit(mut pty: Pty) {
    // At the prompt, not before it: a Ctrl-D typed ahead meets the terminal's cooked mode and is lost.
    expect_regex(&mut pty, r"\((qmp|HMP)\) ");
    pty.send(CTRL_D).expect("send Ctrl-D");
    pty.expect(Eof).expect("eof after Ctrl-D");
    assert_eq!(pty.get_process().wait().expect("wait"), WaitStatus::Exited(pty.get_process().pid(), 0));
}

#[test]
fn tab_completes_a_command_and_its_argument() {
    let server = require!(QemuServer::storage_daemon());
    let dir = TempDir::new("complete");
    let mut pty = shell(server.socket_path().to_str().expect("utf-8"), &["-c"], &[], &dir.path().join("h"));
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "query-named-b");
    pty.send("\t").expect("send");
    expect(&mut pty, "query-named-block-nodes");
    type_keys(&mut pty, " fl");
    pty.send("\t").expect("send");
    expect(&mut pty, "flat=");
    type_keys(&mut pty, "tr");
    pty.send("\t").expect("send");
    expect(&mut pty, "flat=true");
    pty.send("\r").expect("send");
    expect(&mut pty, "[]");
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "help query-named-block-nodes");
    pty.send("\r").expect("send");
    expect(&mut pty, "flat: bool (optional)");
    quit(pty);
}

#[test]
fn history_is_recalled_after_a_restart_of_the_shell() {
    let server = require!(QemuServer::storage_daemon());
    let major = major(&server);
    let sock = server.socket_path().to_str().expect("utf-8").to_owned();
    let dir = TempDir::new("history");
    let history = dir.path().join("state/qmp/history");
    let mut pty = shell(&sock, &["-c"], &[], &history);
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "query-version");
    pty.send("\r").expect("send");
    expect(&mut pty, &major);
    quit(pty);
    assert!(std::fs::read_to_string(&history).expect("history file").contains("query-version"));

    let mut pty = shell(&sock, &["-c"], &[], &history);
    expect(&mut pty, PROMPT);
    pty.send(UP).expect("send up");
    expect(&mut pty, "query-version");
    pty.send("\r").expect("send");
    expect(&mut pty, &major);
    quit(pty);
}

#[test]
fn an_event_arriving_while_a_line_is_half_typed_leaves_the_line_intact() {
    let dir = TempDir::new("live-event");
    let sockets = [dir.path().join("a.sock"), dir.path().join("b.sock")];
    let Some(qemu) = Qemu::storage_daemon(&sockets) else { return };
    let mut pty = shell(qemu.socket(0), &["-c"], &[], &dir.path().join("h"));
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "query-named-block-no");
    // A second client starts a job: its JOB_STATUS_CHANGE events reach the shell while the line is unfinished.
    raw_command(
        &sockets[1],
        r#"{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "d0", "size": 1048576}}"#,
    );
    let create = r#"{"execute": "blockdev-create", "arguments": {"job-id": "j0", "options": {"driver": "qcow2", "file": "d0", "size": 1048576}}}"#;
    assert!(raw_command(&sockets[1], create).contains("return"));
    expect(&mut pty, "JOB_STATUS_CHANGE");
    expect(&mut pty, r#""status":"concluded""#);
    // The prompt and the half line are redrawn below the event; finishing the word runs the command.
    expect(&mut pty, "(qmp) query-named-block-no");
    type_keys(&mut pty, "des");
    pty.send("\r").expect("send");
    expect(&mut pty, r#""node-name":"d0""#);
    quit(pty);
}

#[test]
fn ctrl_c_clears_a_half_typed_line() {
    let server = require!(QemuServer::storage_daemon());
    let dir = TempDir::new("ctrl-c");
    let mut pty = shell(server.socket_path().to_str().expect("utf-8"), &["-c"], &[], &dir.path().join("h"));
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "blockdev-del node-na");
    pty.send(CTRL_C).expect("send Ctrl-C");
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "query-version");
    pty.send("\r").expect("send");
    let before = expect(&mut pty, &major(&server));
    assert!(!before.contains("error"), "the half line was not sent: {before}");
    quit(pty);
}

#[test]
fn the_shell_reconnects_when_the_server_comes_back() {
    let dir = TempDir::new("reconnect");
    let socket = [dir.path().join("qmp.sock")];
    let Some(mut qemu) = Qemu::storage_daemon(&socket) else { return };
    let mut pty = shell(qemu.socket(0), &["-c"], &[], &dir.path().join("h"));
    expect(&mut pty, PROMPT);
    qemu.child.kill().expect("kill qsd");
    qemu.child.wait().expect("reap qsd");
    expect(&mut pty, "# connection lost");
    let Some(again) = Qemu::storage_daemon(&socket) else { return };
    expect(&mut pty, &format!("# reconnected to QEMU {}", again.version()));
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "query-version");
    pty.send("\r").expect("send");
    expect(&mut pty, &format!("\"major\":{}", again.version().major));
    quit(pty);
}

#[test]
fn hmp_mode_and_the_hmp_prefix_print_text() {
    let dir = TempDir::new("hmp");
    let socket = [dir.path().join("qmp.sock")];
    let Some(qemu) = Qemu::system(&socket) else { return };
    let mut pty = shell(qemu.socket(0), &[], &["-H"], &dir.path().join("h"));
    expect(&mut pty, "(HMP) ");
    type_keys(&mut pty, "info version");
    pty.send("\r").expect("send");
    let shown = expect_regex(&mut pty, r"\r\n\d+\.\d+\.\d+[^\r\n]*\r\n");
    assert!(!shown.contains('"') && !shown.contains("\\r"), "HMP output as text, not JSON: {shown:?}");
    quit(pty);

    let mut pty = shell(qemu.socket(0), &[], &[], &dir.path().join("h"));
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "!info version");
    pty.send("\r").expect("send");
    let shown = expect_regex(&mut pty, r"\r\n\d+\.\d+\.\d+[^\r\n]*\r\n");
    assert!(!shown.contains('"'), "{shown:?}");
    quit(pty);
}

#[test]
fn verbose_shows_the_wire_and_log_records_the_session() {
    let server = require!(QemuServer::storage_daemon());
    let dir = TempDir::new("verbose");
    let log = dir.path().join("session.log");
    let log_arg = log.to_str().expect("utf-8");
    let mut pty =
        shell(server.socket_path().to_str().expect("utf-8"), &["-c"], &["-v", "--log", log_arg], &dir.path().join("h"));
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "query-version");
    pty.send("\r").expect("send");
    expect_regex(&mut pty, r#"> \{"execute":"query-version","id":[^\r\n]*\r\n"#);
    expect_regex(&mut pty, r#"< \{"return": \{"qemu": \{"micro""#);
    expect(&mut pty, &major(&server));
    quit(pty);
    let record = std::fs::read_to_string(&log).expect("log");
    assert!(record.contains("(qmp) query-version"), "{record}");
    assert!(record.contains("> {\"execute\":\"query-version\""), "{record}");
    assert!(record.contains(&major(&server)), "{record}");
}

#[test]
fn the_guest_agent_in_the_shell() {
    let server = require!(QemuServer::guest_agent());
    let dir = TempDir::new("ga");
    let mut pty = shell(server.socket_path().to_str().expect("utf-8"), &["--ga"], &[], &dir.path().join("h"));
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "guest-sy");
    pty.send("\t").expect("send");
    expect(&mut pty, "guest-sync");
    type_keys(&mut pty, " id=4242");
    pty.send("\r").expect("send");
    expect(&mut pty, "4242\r\n");
    quit(pty);
}

#[test]
fn ctrl_c_stops_waiting_for_a_command_that_does_not_answer() {
    // A server that takes a command and never answers: real QEMU answers too fast to interrupt reliably.
    use qmp_tests::fake_server::{FakeServer, Step};
    let server = FakeServer::spawn(vec![
        Step::SendGreeting,
        Step::AnswerNegotiation,
        Step::ReplyTo { ret: r#"[{"name": "slow-command"}]"#.into() }, // query-commands
        Step::ReplyTo { ret: "[]".into() },                            // query-qmp-schema
        Step::ReadMessage,                                             // slow-command: no answer
        Step::Silence,
    ]);
    let dir = TempDir::new("cancel");
    let mut pty = shell(server.socket_path().to_str().expect("utf-8"), &[], &["-v"], &dir.path().join("h"));
    expect(&mut pty, PROMPT);
    type_keys(&mut pty, "slow-command");
    pty.send("\r").expect("send");
    // Sent: the editor has returned the line and given the terminal back to cooked mode, where Ctrl-C is SIGINT.
    expect(&mut pty, r#"> {"execute":"slow-command""#);
    pty.send(CTRL_C).expect("send Ctrl-C");
    expect(&mut pty, "^C: stopped waiting");
    quit(pty);
}
