//! What a shell line means: qmp-shell's syntax and ours.
//!
//! - `NAME key=value ...` (values are JSON when they parse, so arrays and objects work: `ids=["a","b"]`,
//!   `file={"driver":"file","filename":"a.img"}`; dotted keys nest), or `NAME {json}`, or a whole
//!   `{"execute": ..., "arguments": ...}` (`exec-oob` runs out of band);
//! - transactions as in qmp-shell: `transaction(` on its own line, one `TYPE key=value ...` action per line,
//!   `)` to send; or all on one line, actions separated by commas: `transaction( abort, abort )`;
//! - `!info version`: one line for HMP (see [`super::hmp`]); with `-H`, every line is HMP;
//! - `help`, `help COMMAND`, `#` comments, empty lines.

use serde_json::{json, Value};

use crate::args::{parse_arguments, split_words};

/// What to do with a line.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Nothing to send (empty, comment, or a transaction line that continues).
    Nothing,
    /// `help` (None) or `help COMMAND`.
    Help(Option<String>),
    /// Run a QMP command.
    Qmp { name: String, args: Option<Value>, oob: bool },
    /// Run an HMP command line through `human-monitor-command`.
    Hmp(String),
}

/// Reads lines into actions; remembers whether a transaction is open.
#[derive(Debug, Default)]
pub struct Interpreter {
    pub hmp_mode: bool,
    transaction: Option<Vec<Value>>,
}

impl Interpreter {
    pub fn new(hmp_mode: bool) -> Self {
        Interpreter { hmp_mode, transaction: None }
    }

    /// The prompt for the next line.
    pub fn prompt(&self) -> &'static str {
        match (self.transaction.is_some(), self.hmp_mode) {
            (true, _) => "(transaction) ",
            (false, true) => "(HMP) ",
            (false, false) => "(qmp) ",
        }
    }

    pub fn interpret(&mut self, line: &str) -> Result<Action, String> {
        let line = line.trim();
        if let Some(actions) = &mut self.transaction {
            if line == ")" {
                let actions = self.transaction.take().unwrap_or_default();
                return Ok(transaction(actions));
            }
            if line.is_empty() {
                return Ok(Action::Nothing);
            }
            let (line, ends) = match line.strip_suffix(')') {
                Some(rest) => (rest.trim(), true),
                None => (line, false),
            };
            let result = action(line).map(|a| actions.push(a));
            if let Err(e) = result {
                self.transaction = None;
                return Err(format!("{e} (transaction abandoned)"));
            }
            return Ok(if ends { transaction(self.transaction.take().unwrap_or_default()) } else { Action::Nothing });
        }
        if line.is_empty() || line.starts_with('#') {
            return Ok(Action::Nothing);
        }
        if let Some(rest) = line.strip_prefix('!') {
            return Ok(Action::Hmp(rest.trim().to_owned()));
        }
        if self.hmp_mode {
            return Ok(Action::Hmp(line.to_owned()));
        }
        if line == "help" {
            return Ok(Action::Help(None));
        }
        if let Some(command) = line.strip_prefix("help ") {
            return Ok(Action::Help(Some(command.trim().to_owned())));
        }
        if let Some(rest) = line.strip_prefix("transaction(") {
            let rest = rest.trim();
            let (body, ends) = match rest.strip_suffix(')') {
                Some(body) => (body, true),
                None => (rest, false),
            };
            let mut actions = Vec::new();
            for part in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                actions.push(action(part)?);
            }
            if ends {
                return Ok(transaction(actions));
            }
            self.transaction = Some(actions);
            return Ok(Action::Nothing);
        }
        if line.starts_with('{') {
            let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
            let (name, oob) = match (v.get("execute"), v.get("exec-oob")) {
                (Some(Value::String(n)), None) => (n.clone(), false),
                (None, Some(Value::String(n))) => (n.clone(), true),
                _ => return Err("a JSON command needs a string \"execute\" (or \"exec-oob\")".into()),
            };
            return Ok(Action::Qmp { name, args: v.get("arguments").cloned(), oob });
        }
        let mut words = split_words(line)?;
        let name = words.remove(0);
        Ok(Action::Qmp { name, args: parse_arguments(&words)?, oob: false })
    }
}

/// One transaction action: `TYPE key=value ...`.
fn action(text: &str) -> Result<Value, String> {
    let mut words = split_words(text)?;
    if words.is_empty() {
        return Err("empty transaction action".into());
    }
    let kind = words.remove(0);
    let data = parse_arguments(&words)?.unwrap_or_else(|| json!({}));
    Ok(json!({"type": kind, "data": data}))
}

fn transaction(actions: Vec<Value>) -> Action {
    Action::Qmp { name: "transaction".into(), args: Some(json!({"actions": actions})), oob: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qmp(name: &str, args: Option<Value>) -> Action {
        Action::Qmp { name: name.into(), args, oob: false }
    }

    #[test]
    fn commands_json_values_and_help() {
        let mut i = Interpreter::new(false);
        assert_eq!(i.interpret("query-status").unwrap(), qmp("query-status", None));
        assert_eq!(
            i.interpret(r#"x ids=["a","b"] o={"k":1} s=text"#).unwrap(),
            qmp("x", Some(json!({"ids": ["a", "b"], "o": {"k": 1}, "s": "text"})))
        );
        assert_eq!(
            i.interpret(r#"{"exec-oob": "query-yank"}"#).unwrap(),
            Action::Qmp { name: "query-yank".into(), args: None, oob: true }
        );
        assert_eq!(i.interpret("help blockdev-add").unwrap(), Action::Help(Some("blockdev-add".into())));
        assert_eq!(i.interpret("!info version").unwrap(), Action::Hmp("info version".into()));
        assert_eq!(i.interpret("  # note").unwrap(), Action::Nothing);
        assert!(i.interpret(r#"{"arguments": {}}"#).is_err());
    }

    #[test]
    fn transactions_over_lines_and_on_one_line() {
        let mut i = Interpreter::new(false);
        assert_eq!(i.interpret("transaction(").unwrap(), Action::Nothing);
        assert_eq!(i.prompt(), "(transaction) ");
        assert_eq!(i.interpret("block-dirty-bitmap-add node=n0 name=b0").unwrap(), Action::Nothing);
        assert_eq!(i.interpret("abort").unwrap(), Action::Nothing);
        let expected = json!({"actions": [
            {"type": "block-dirty-bitmap-add", "data": {"node": "n0", "name": "b0"}},
            {"type": "abort", "data": {}},
        ]});
        assert_eq!(i.interpret(")").unwrap(), qmp("transaction", Some(expected.clone())));
        assert_eq!(
            i.interpret("transaction( block-dirty-bitmap-add node=n0 name=b0, abort )").unwrap(),
            qmp("transaction", Some(expected))
        );
        assert_eq!(i.prompt(), "(qmp) ");
    }

    #[test]
    fn hmp_mode_sends_every_line_to_hmp() {
        let mut i = Interpreter::new(true);
        assert_eq!(i.prompt(), "(HMP) ");
        assert_eq!(i.interpret("info version").unwrap(), Action::Hmp("info version".into()));
        assert_eq!(i.interpret("help").unwrap(), Action::Hmp("help".into()));
    }
}
