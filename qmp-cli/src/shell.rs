//! The interactive shell (qmp-shell's job): one command per line, results and events printed as they come.
//!
//! A line is `name key=value ...` (see [`crate::args`]), a JSON object with `execute` (or `exec-oob`) and
//! optional `arguments`, `help`, or empty. Events that arrived while a command ran, or while the user typed,
//! are printed before the next result. The prompt shows only when stdin is a terminal, so scripts can pipe
//! commands in.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use serde_json::Value;

use crate::args::{parse_arguments, split_words};
use crate::output::{print_event, print_value, Failure};
use crate::session::Session;

const HELP: &str = "commands: NAME [key=value ...] | NAME '{json}' | {\"execute\": NAME, \"arguments\": {...}} | help\n\
                    values are JSON when they parse (size=1024, on=true), strings otherwise; dotted keys nest (file.driver=file)\n\
                    Ctrl-D ends the shell";

pub fn run(session: &mut Session, compact: bool) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        println!("connected to {}; type help", session.describe());
    }
    let mut lines = stdin.lock().lines();
    loop {
        drain_events(session)?;
        if interactive {
            print!("(qmp) ");
            let _ = std::io::stdout().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| Failure::Usage(format!("reading stdin: {e}")))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "help" {
            println!("{HELP}");
            continue;
        }
        match parse_line(line) {
            Err(msg) => eprintln!("error: {msg}"),
            Ok((name, args, oob)) => match session.execute(&name, args.as_ref(), oob) {
                Ok(value) => print_value(&value, compact),
                Err(Failure::Server(e)) => eprintln!("error: {}: {}", e.class, e.desc),
                Err(Failure::Usage(msg) | Failure::Job(msg)) => eprintln!("error: {msg}"),
                Err(fatal @ Failure::Connection(_)) => {
                    drain_events(session).ok();
                    return Err(fatal);
                }
            },
        }
    }
    Ok(())
}

/// Prints the events that are already buffered, without waiting.
fn drain_events(session: &mut Session) -> Result<(), Failure> {
    if let Session::Qmp(_) = session {
        while let Some(event) = session.next_event(Some(Duration::ZERO))? {
            print_event(&event);
        }
    }
    Ok(())
}

/// One shell line as (command, arguments, out-of-band).
fn parse_line(line: &str) -> Result<(String, Option<Value>, bool), String> {
    if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
        let (name, oob) = match (v.get("execute"), v.get("exec-oob")) {
            (Some(Value::String(n)), None) => (n.clone(), false),
            (None, Some(Value::String(n))) => (n.clone(), true),
            _ => return Err("a JSON command needs a string \"execute\" (or \"exec-oob\")".into()),
        };
        return Ok((name, v.get("arguments").cloned(), oob));
    }
    let mut words = split_words(line)?;
    let name = words.remove(0);
    Ok((name, parse_arguments(&words)?, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines() {
        assert_eq!(parse_line("query-status").unwrap(), ("query-status".into(), None, false));
        assert_eq!(
            parse_line("blockdev-add driver=null-co node-name=n0").unwrap(),
            ("blockdev-add".into(), Some(json!({"driver": "null-co", "node-name": "n0"})), false)
        );
        assert_eq!(parse_line(r#"{"exec-oob": "query-yank"}"#).unwrap(), ("query-yank".into(), None, true));
        assert!(parse_line(r#"{"arguments": {}}"#).is_err());
    }
}
