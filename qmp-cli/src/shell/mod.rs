//! `qmp shell`: the interactive shell (qmp-shell's and qmp-tui's job, in one terminal).
//!
//! At a terminal: line editing and persistent history ([`editor`]), Tab completion of command names, argument
//! names, nested keys and enum values ([`complete`], from [`schema`]), `help COMMAND` from the schema, events
//! printed live above the prompt without disturbing the line being typed ([`printer`]), HMP with `-H` or a `!`
//! prefix ([`hmp`]), qmp-shell's `key=value` syntax with JSON values and transactions ([`mod@line`]), the wire
//! traffic with `-v` ([`wire`]) and a record with `--log FILE`. Ctrl-C clears the line, or stops waiting for a
//! running command; Ctrl-D ends the shell. When the server goes away the shell says so and reconnects with
//! backoff ([`link`], which also explains the threading).
//!
//! Without a terminal (commands piped in) there is no prompt and no editing: results and events are JSON lines
//! on stdout, errors on stderr, and a lost connection ends the shell with status 3.

mod complete;
mod editor;
mod hmp;
mod line;
mod link;
mod printer;
mod schema;
mod wire;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use rustyline::error::ReadlineError;

use crate::output::Failure;
use crate::session::Target;
use line::{Action, Interpreter};
use link::{Done, Link, Request};
use printer::{Kind, Printer};

/// `qmp shell` options.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// HMP mode: every line is a human monitor command (`info block`); its text is printed as text.
    #[arg(short = 'H', long)]
    pub hmp: bool,
    /// Show the wire traffic: `> ` what is sent, `< ` what arrives.
    #[arg(short, long)]
    pub verbose: bool,
    /// Append a record of the session (lines typed, results, events, notices) to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

pub(crate) const HELP: &str = "\
commands:  NAME [key=value ...]    values are JSON when they parse (size=1024, on=true, ids=[\"a\"],
                                   file={\"driver\":\"file\"}), strings otherwise; dotted keys nest
           NAME '{json}'  |  {\"execute\": NAME, \"arguments\": {...}}  |  {\"exec-oob\": NAME}
           transaction( TYPE key=value, TYPE key=value )   or over lines, ending with )
           !HMP COMMAND                   one human monitor command (qmp shell -H: every line)
           help [COMMAND]                 this text, or COMMAND's arguments and types
keys:      Tab completes commands, arguments, nested keys and values; Up/Down and Ctrl-R search history;
           Ctrl-C clears the line or stops waiting for a command; Ctrl-D quits";

/// How long Ctrl-D waits for the session thread to finish (it may still wait for a cancelled command).
const QUIT_WAIT: Duration = Duration::from_secs(1);

/// How often the editor checks for Ctrl-C while a command runs.
const INTERRUPT_CHECK: Duration = Duration::from_millis(50);

/// Runs the shell until Ctrl-D (or the end of piped input).
pub fn run(
    target: &Target,
    guest_agent: bool,
    timeout: Duration,
    compact: bool,
    settings: Settings,
) -> Result<(), Failure> {
    let interactive = std::io::stdin().is_terminal();
    let log = match &settings.log {
        None => None,
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Failure::Usage(format!("--log {}: {e}", path.display())))?,
        ),
    };
    let knowledge = Arc::default();
    let mut editor = None;
    let printer = if interactive {
        let helper = editor::ShellHelper { knowledge: Arc::clone(&knowledge) };
        let mut ed = editor::new_editor(helper).map_err(|e| Failure::Usage(format!("terminal: {e}")))?;
        let external = ed.create_external_printer().map_err(|e| Failure::Usage(format!("terminal: {e}")))?;
        editor = Some(ed);
        Printer::new(Some(Box::new(external)), log)
    } else {
        Printer::new(None, log)
    };
    let link = Link {
        target: target.clone(),
        guest_agent,
        timeout,
        compact,
        verbose: settings.verbose,
        interactive,
        printer: Arc::new(printer),
        knowledge,
        cancelled: Arc::new(AtomicU64::new(0)),
        quiet: Arc::new(AtomicBool::new(false)),
    };
    let printer = Arc::clone(&link.printer);
    let cancelled = Arc::clone(&link.cancelled);
    let (requests, requests_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let (connected_tx, connected) = mpsc::channel();
    // The connection is made, and lives, on the session thread (the client's stream is not Send).
    let thread = std::thread::Builder::new()
        .name("qmp-session".into())
        .spawn(move || match link.connect(timeout) {
            Ok(session) => {
                let _ = connected_tx.send(Ok(session.describe()));
                link.run(session, requests_rx, done_tx)
            }
            Err(failure) => {
                let _ = connected_tx.send(Err(failure));
                Ok(())
            }
        })
        .map_err(|e| Failure::Usage(format!("cannot start the session thread: {e}")))?;
    let peer = connected.recv().unwrap_or_else(|_| Err(Failure::Connection("the session thread ended".into())))?;
    if interactive {
        let what = if settings.hmp { "HMP mode; " } else { "" };
        printer.print(Kind::Diagnostic, &format!("# connected to {peer} ({what}help: commands and keys)"));
    }
    let mut interpreter = Interpreter::new(settings.hmp);
    let outcome = match editor {
        Some(mut editor) => edit(&mut editor, &mut interpreter, &printer, &requests, &done, &cancelled),
        None => piped(&mut interpreter, &printer, &requests, &done),
    };
    let _ = requests.send(Request::Quit);
    if interactive {
        // A cancelled command may still hold the session thread (until its reply or its timeout): do not wait
        // for it longer than a moment.
        let deadline = std::time::Instant::now() + QUIT_WAIT;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !thread.is_finished() {
            return outcome;
        }
    }
    let ended = thread.join().unwrap_or(Ok(()));
    outcome.and(ended)
}

/// The interactive loop.
fn edit(
    editor: &mut editor::LineEditor,
    interpreter: &mut Interpreter,
    printer: &Printer,
    requests: &Sender<Request>,
    done: &Receiver<Done>,
    cancelled: &AtomicU64,
) -> Result<(), Failure> {
    let interrupted = Arc::new(AtomicBool::new(false));
    // Outside readline (while a command runs) Ctrl-C is a signal: it sets the flag instead of ending qmp.
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted))
        .map_err(|e| Failure::Usage(format!("cannot catch Ctrl-C: {e}")))?;
    let mut seq = 0;
    loop {
        interrupted.store(false, Ordering::SeqCst);
        let prompt = interpreter.prompt();
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                printer.print(Kind::Diagnostic, "");
                return Ok(());
            }
            Err(e) => return Err(Failure::Usage(format!("reading the terminal: {e}"))),
        };
        editor::remember(editor, &line);
        printer.record(&format!("{prompt}{line}"));
        seq += 1;
        match interpreter.interpret(&line) {
            Err(message) => printer.print(Kind::Diagnostic, &format!("error: {message}")),
            Ok(Action::Nothing) => {}
            Ok(action) => {
                if requests.send(Request::Run { seq, action }).is_err() {
                    return Ok(());
                }
                if let Some(fatal) = wait(seq, done, Some((&interrupted, cancelled, printer))) {
                    return Err(fatal);
                }
            }
        }
    }
}

/// Lines from a pipe: no prompt, no editing.
fn piped(
    interpreter: &mut Interpreter,
    printer: &Printer,
    requests: &Sender<Request>,
    done: &Receiver<Done>,
) -> Result<(), Failure> {
    let mut seq = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Failure::Usage(format!("reading stdin: {e}")))?;
        printer.record(&format!("{}{line}", interpreter.prompt()));
        seq += 1;
        match interpreter.interpret(&line) {
            Err(message) => printer.print(Kind::Diagnostic, &format!("error: {message}")),
            Ok(Action::Nothing) => {}
            Ok(action) => {
                if requests.send(Request::Run { seq, action }).is_err() {
                    return Ok(());
                }
                if let Some(fatal) = wait(seq, done, None) {
                    return Err(fatal);
                }
            }
        }
    }
    Ok(())
}

/// Waits until request `seq` is done; at a terminal, Ctrl-C stops waiting (the reply will be dropped).
fn wait(seq: u64, done: &Receiver<Done>, interrupt: Option<(&AtomicBool, &AtomicU64, &Printer)>) -> Option<Failure> {
    loop {
        match done.recv_timeout(INTERRUPT_CHECK) {
            Ok(d) if d.seq == seq => return d.fatal,
            Ok(_) => {} // a cancelled command's, late
            Err(RecvTimeoutError::Disconnected) => return None,
            Err(RecvTimeoutError::Timeout) => {
                if let Some((interrupted, cancelled, printer)) = interrupt {
                    if interrupted.swap(false, Ordering::SeqCst) {
                        cancelled.store(seq, Ordering::SeqCst);
                        printer.print(Kind::Diagnostic, "^C: stopped waiting; the reply will be dropped when it comes");
                        return None;
                    }
                }
            }
        }
    }
}
