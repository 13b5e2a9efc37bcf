//! The line editor: rustyline with Emacs keys, persistent history and Tab completion from [`super::complete`].
//!
//! History lives in `$QMP_HISTORY` when set (tests use it), else `$XDG_STATE_HOME/qmp/history`, else
//! `~/.local/state/qmp/history`; each line is appended as soon as it is entered, so a crash or a lost terminal
//! keeps it. At most [`HISTORY_SIZE`] lines are kept; a line identical to the previous one is not stored twice.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustyline::completion::Completer;
use rustyline::config::Configurer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Context, Editor, Helper};

use super::complete::{complete, Knowledge};

/// Lines of history kept.
pub const HISTORY_SIZE: usize = 10_000;

/// The shell's editor.
pub type LineEditor = Editor<ShellHelper, FileHistory>;

/// Completion over what the session thread learnt about the server (replaced on every reconnect).
#[derive(Debug, Clone, Default)]
pub struct ShellHelper {
    pub knowledge: Arc<RwLock<Knowledge>>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        let known = self.knowledge.read().unwrap_or_else(|p| p.into_inner());
        Ok(complete(&line[..pos], &known))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// Where history is kept (see the module docs).
pub fn history_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("QMP_HISTORY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))?;
    Some(state.join("qmp").join("history"))
}

/// A new editor with the history loaded (a missing file is an empty history).
pub fn new_editor(helper: ShellHelper) -> rustyline::Result<LineEditor> {
    let mut editor = LineEditor::new()?;
    editor.set_max_history_size(HISTORY_SIZE)?;
    editor.set_history_ignore_dups(true)?;
    editor.set_completion_type(CompletionType::List);
    editor.set_auto_add_history(false);
    editor.set_helper(Some(helper));
    if let Some(path) = history_path() {
        let _ = editor.load_history(&path);
    }
    Ok(editor)
}

/// Adds `line` to the history and appends it to the file at once.
pub fn remember(editor: &mut LineEditor, line: &str) {
    if line.trim().is_empty() || editor.add_history_entry(line).is_err() {
        return;
    }
    if let Some(path) = history_path() {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.append_history(&path);
    }
}
