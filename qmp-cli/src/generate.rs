//! `qmp completions SHELL` and `qmp man`: the completion scripts (clap_complete) and the manual page
//! (clap_mangen), both made from the same clap definitions as `--help`, so they cannot drift from it.

use crate::output::{emit, Failure};

/// Prints the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::command(), "qmp", &mut script);
    emit(String::from_utf8_lossy(&script).trim_end());
    Ok(())
}

/// Prints the manual page (roff) to stdout, with the examples and exit statuses of `--help`.
pub fn man() -> Result<(), Failure> {
    let mut page = Vec::new();
    clap_mangen::Man::new(crate::command())
        .render(&mut page)
        .map_err(|e| Failure::Usage(format!("rendering the manual page: {e}")))?;
    emit(String::from_utf8_lossy(&page).trim_end());
    Ok(())
}
