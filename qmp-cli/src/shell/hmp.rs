//! HMP through QMP: `human-monitor-command` runs one HMP command line and returns its output as one JSON
//! string with `\r\n` line ends. The shell prints that text as text, the way HMP itself shows it.

use serde_json::{json, Value};

/// The arguments of `human-monitor-command` for one HMP line.
pub fn arguments(command_line: &str) -> Value {
    json!({"command-line": command_line})
}

/// HMP's output as text: `\r\n` made `\n`, without the last line end (the printer adds one). `None` when the
/// command printed nothing.
pub fn text(result: &Value) -> Option<String> {
    let text = result.as_str()?.replace("\r\n", "\n");
    let text = text.trim_end_matches('\n');
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_as_text() {
        assert_eq!(text(&json!("7.2.0\r\n")).as_deref(), Some("7.2.0"));
        assert_eq!(text(&json!("a\r\nb\r\n")).as_deref(), Some("a\nb"));
        assert_eq!(text(&json!("")), None);
    }
}
