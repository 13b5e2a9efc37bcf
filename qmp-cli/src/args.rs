//! Command arguments from the command line: one JSON object, or qmp-shell style `key=value` words.
//!
//! `key=value` builds an object; the value is taken as JSON when it parses as JSON (`size=1048576`,
//! `read-only=true`, `file={"driver":"file","filename":"a.img"}`) and as a string otherwise (`driver=qcow2`);
//! dotted keys nest (`file.driver=file file.filename=a.img` gives `{"file": {"driver": ..., "filename": ...}}`).

use serde_json::{Map, Value};

/// Builds the `arguments` object from the words after the command name.
pub fn parse_arguments(words: &[String]) -> Result<Option<Value>, String> {
    match words {
        [] => Ok(None),
        [one] if one.trim_start().starts_with('{') => {
            let v: Value = serde_json::from_str(one).map_err(|e| format!("arguments are not valid JSON: {e}"))?;
            Ok(Some(v))
        }
        _ => {
            let mut object = Map::new();
            for word in words {
                let (key, raw) = word.split_once('=').ok_or_else(|| format!("expected key=value, got {word:?}"))?;
                if key.is_empty() {
                    return Err(format!("empty key in {word:?}"));
                }
                let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
                insert_dotted(&mut object, key, value)?;
            }
            Ok(Some(Value::Object(object)))
        }
    }
}

fn insert_dotted(object: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), String> {
    match key.split_once('.') {
        None => {
            if object.insert(key.to_owned(), value).is_some() {
                return Err(format!("key {key:?} given twice"));
            }
            Ok(())
        }
        Some((head, rest)) => {
            let inner = object.entry(head.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            match inner {
                Value::Object(inner) => insert_dotted(inner, rest, value),
                _ => Err(format!("key {head:?} is both a value and an object")),
            }
        }
    }
}

/// Splits a shell line into words, honouring single and double quotes (no escapes inside single quotes). A JSON
/// array or object that starts a word or a value (`ids=["a", "b"]`, `{"a": 1}`) is kept whole, quotes and
/// spaces included, up to its closing bracket.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '[' | '{' if word.is_empty() || word.ends_with('=') => {
                in_word = true;
                take_json(c, &mut chars, &mut word)?;
            }
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote".into()),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => word.push(chars.next().ok_or("dangling backslash")?),
                        Some(other) => word.push(other),
                    }
                }
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Copies a JSON array or object that starts with `open` into `word`, up to its matching close.
fn take_json(open: char, chars: &mut std::str::Chars<'_>, word: &mut String) -> Result<(), String> {
    word.push(open);
    let mut depth = 1;
    let mut in_string = false;
    while depth > 0 {
        let c = chars.next().ok_or("unterminated JSON value")?;
        word.push(c);
        match c {
            '\\' if in_string => word.push(chars.next().ok_or("dangling backslash")?),
            '"' => in_string = !in_string,
            '[' | '{' if !in_string => depth += 1,
            ']' | '}' if !in_string => depth -= 1,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn key_values_with_json_and_nesting() {
        let args = parse_arguments(&words(&["driver=qcow2", "size=1048576", "file.driver=file", "file.x=true"]));
        assert_eq!(
            args.unwrap(),
            Some(json!({"driver": "qcow2", "size": 1048576, "file": {"driver": "file", "x": true}}))
        );
    }

    #[test]
    fn one_json_object() {
        assert_eq!(parse_arguments(&words(&[r#"{"a": [1]}"#])).unwrap(), Some(json!({"a": [1]})));
        assert!(parse_arguments(&words(&["{bad"])).is_err());
        assert_eq!(parse_arguments(&[]).unwrap(), None);
    }

    #[test]
    fn errors() {
        assert!(parse_arguments(&words(&["novalue"])).is_err());
        assert!(parse_arguments(&words(&["a=1", "a=2"])).is_err());
        assert!(parse_arguments(&words(&["a=1", "a.b=2"])).is_err());
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            split_words(r#"blockdev-add driver=null-co  'node-name=a b' "x=\"q\"""#).unwrap(),
            words(&["blockdev-add", "driver=null-co", "node-name=a b", "x=\"q\""])
        );
        assert!(split_words("a 'b").is_err());
        assert_eq!(
            split_words(r#"x ids=["a b", "c\"]"] {"k": {"n": 1}} q="s""#).unwrap(),
            words(&["x", r#"ids=["a b", "c\"]"]"#, r#"{"k": {"n": 1}}"#, "q=s"])
        );
    }
}
