//! Where the shell's output goes: results, live events, errors, notices and the wire trace.
//!
//! At a terminal everything goes through rustyline's `ExternalPrinter`: while the prompt waits (raw mode) the
//! text is printed above the prompt and the line being typed is redrawn intact below it; while a command runs
//! (no prompt) it is written straight to the terminal. Both paths are one ordered stream, so events and results
//! appear in the order the session thread prints them. Without a terminal (commands piped in), results and events
//! go to stdout as JSON lines and errors, notices and the trace to stderr, as before. `--log FILE` gets a copy
//! of everything, whatever the mode.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use rustyline::ExternalPrinter;

use crate::output::emit;

/// What kind of text: it decides the stream in piped mode and the log prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A result or an event (stdout).
    Output,
    /// An error, a notice or wire traffic (stderr when piped).
    Diagnostic,
}

/// The shell's single output.
pub struct Printer {
    terminal: Mutex<Option<Box<dyn ExternalPrinter + Send>>>,
    log: Mutex<Option<File>>,
}

impl std::fmt::Debug for Printer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer").finish_non_exhaustive()
    }
}

impl Printer {
    pub fn new(terminal: Option<Box<dyn ExternalPrinter + Send>>, log: Option<File>) -> Self {
        Printer { terminal: Mutex::new(terminal), log: Mutex::new(log) }
    }

    /// Prints one block of text (a line end is added).
    pub fn print(&self, kind: Kind, text: &str) {
        self.record(text);
        let mut terminal = self.terminal.lock().unwrap_or_else(|p| p.into_inner());
        match terminal.as_mut() {
            Some(printer) => {
                // Raw mode needs explicit carriage returns; rustyline passes the text through as it is.
                let _ = printer.print(format!("{}\n", text.replace('\n', "\r\n")).replace("\r\r\n", "\r\n"));
            }
            None if kind == Kind::Output => emit(text),
            None => eprintln!("{text}"),
        }
    }

    /// Records `text` in the log only (the line the user typed, which the terminal already shows).
    pub fn record(&self, text: &str) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = log.as_mut() {
            let _ = writeln!(file, "{text}").and_then(|()| file.flush());
        }
    }
}
