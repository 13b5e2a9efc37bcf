//! QAPI schema syntax: the JSON-like language of QEMU's `qapi/*.json` (single-quoted strings, `#` comments,
//! `true`/`false`, no numbers or null), read into `serde_json::Value`s, following `include` directives.
//! Comments (QEMU's documentation) are dropped: only interface facts reach the extract.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Reads one schema file and every file it includes (each once), returning its definitions in order.
/// `include` and `pragma` directives are consumed, not returned.
pub fn read_schema(root: &Path) -> Result<Vec<Value>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    read_file(root, &mut seen, &mut out)?;
    Ok(out)
}

fn read_file(path: &Path, seen: &mut HashSet<PathBuf>, out: &mut Vec<Value>) -> Result<(), String> {
    let canonical = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    if !seen.insert(canonical) {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let exprs = parse_exprs(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for expr in exprs {
        if let Some(Value::String(file)) = expr.get("include") {
            let next = path.parent().unwrap_or(Path::new(".")).join(file);
            read_file(&next, seen, out)?;
        } else if expr.get("pragma").is_none() {
            out.push(expr);
        }
    }
    Ok(())
}

/// Parses the top-level expressions of one file's text.
pub fn parse_exprs(text: &str) -> Result<Vec<Value>, String> {
    let mut parser = Parser { bytes: text.as_bytes(), pos: 0 };
    let mut out = Vec::new();
    loop {
        parser.skip_blank();
        if parser.pos >= parser.bytes.len() {
            return Ok(out);
        }
        out.push(parser.value()?);
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_blank(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'#' => {
                    while self.bytes.get(self.pos).is_some_and(|&b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn error(&self, what: &str) -> String {
        let line = self.bytes[..self.pos.min(self.bytes.len())].iter().filter(|&&b| b == b'\n').count() + 1;
        format!("line {line}: {what}")
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_blank();
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", byte as char)))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_blank();
        match self.bytes.get(self.pos) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'\'') => self.string().map(Value::String),
            Some(_) if self.bytes[self.pos..].starts_with(b"true") => {
                self.pos += 4;
                Ok(Value::Bool(true))
            }
            Some(_) if self.bytes[self.pos..].starts_with(b"false") => {
                self.pos += 5;
                Ok(Value::Bool(false))
            }
            _ => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self) -> Result<Value, String> {
        self.expect(b'{')?;
        let mut map = Map::new();
        self.skip_blank();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_blank();
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            if map.insert(key.clone(), value).is_some() {
                return Err(self.error(&format!("duplicate key '{key}'")));
            }
            self.skip_blank();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> Result<Value, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_blank();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_blank();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.bytes.get(self.pos) != Some(&b'\'') {
            return Err(self.error("expected a string"));
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.bytes.get(self.pos) else { return Err(self.error("unterminated string")) };
            self.pos += 1;
            match b {
                b'\'' => break,
                b'\\' => {
                    let Some(&esc) = self.bytes.get(self.pos) else { return Err(self.error("bad escape")) };
                    self.pos += 1;
                    out.push(match esc {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                }
                b'\n' => return Err(self.error("newline in string")),
                other => out.push(other),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_qapi_syntax() {
        let text = "# doc\n{ 'struct': 'A', # trailing\n  'data': { '*b': ['int'], 'c': { 'type': 'str', 'if': 'X' } },\n  'boxed': true, 'gen': false }\n{'enum':'E','data':['it\\'s']}";
        let exprs = parse_exprs(text).unwrap();
        assert_eq!(exprs.len(), 2);
        assert_eq!(exprs[0]["data"]["*b"][0], "int");
        assert_eq!(exprs[0]["data"]["c"]["if"], "X");
        assert_eq!(exprs[0]["boxed"], true);
        assert_eq!(exprs[1]["data"][0], "it's");
        assert!(parse_exprs("{ 'a': 1 }").is_err());
        assert!(parse_exprs("{ 'a': 'b' ").is_err());
        assert!(parse_exprs("{ 'a': 'b', 'a': 'c' }").is_err());
    }
}
