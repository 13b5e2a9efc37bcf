//! [`Transcript`]: a recorded conversation, in the format of qmp-rs's corpus of real QEMU sessions.
//!
//! `{"server": S, "how": H, "notes": N, "steps": [{"send": s} | {"recv": s}, ...]}`: each `send` is one write
//! by the client, each `recv` what the server sent after it; strings map bytes to characters one to one
//! (latin-1), so `"\u00ff"` is the byte 0xFF.

use std::path::Path;

use serde_json::{json, Map, Value};

/// One step of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes the client wrote.
    Send(Vec<u8>),
    /// Bytes the server sent.
    Recv(Vec<u8>),
}

/// A recorded conversation between a client and a QMP server.
///
/// ```
/// use qmp_test_kit::{Step, Transcript};
/// let text = r#"{"server": "qsd", "how": "", "notes": "", "steps": [{"recv": "{}\r\n"}, {"send": "\u00ff"}]}"#;
/// let transcript = Transcript::from_json(text)?;
/// assert_eq!(transcript.steps[1], Step::Send(vec![0xFF]));
/// assert_eq!(Transcript::from_json(&transcript.to_json())?, transcript);
/// # Ok::<(), qmp_test_kit::TranscriptError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    /// The server (`qemu-storage-daemon 10.0.2`).
    pub server: String,
    /// Its command line.
    pub how: String,
    /// What happens in it.
    pub notes: String,
    /// The conversation, in order.
    pub steps: Vec<Step>,
}

/// A transcript could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscriptError {
    /// Reading or writing the file failed.
    #[error("transcript file: {0}")]
    Io(#[from] std::io::Error),
    /// The text is not JSON.
    #[error("transcript is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not a transcript.
    #[error("not a transcript: {0}")]
    Shape(String),
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn from_latin1(text: &str) -> Result<Vec<u8>, TranscriptError> {
    text.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| TranscriptError::Shape(format!("character {c:?} is not latin-1")))
        })
        .collect()
}

impl Transcript {
    /// Reads a transcript from JSON text.
    pub fn from_json(text: &str) -> Result<Transcript, TranscriptError> {
        let value: Value = serde_json::from_str(text)?;
        let shape = |what: &str| TranscriptError::Shape(what.to_owned());
        let object = value.as_object().ok_or_else(|| shape("not an object"))?;
        let text_of = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let steps = object.get("steps").and_then(Value::as_array).ok_or_else(|| shape("no steps array"))?;
        let steps = steps
            .iter()
            .map(|step| match (step.get("send").and_then(Value::as_str), step.get("recv").and_then(Value::as_str)) {
                (Some(s), None) => Ok(Step::Send(from_latin1(s)?)),
                (None, Some(s)) => Ok(Step::Recv(from_latin1(s)?)),
                _ => Err(shape("a step is not {\"send\": text} or {\"recv\": text}")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Transcript { server: text_of("server"), how: text_of("how"), notes: text_of("notes"), steps })
    }

    /// Reads a transcript file.
    pub fn load(path: impl AsRef<Path>) -> Result<Transcript, TranscriptError> {
        Transcript::from_json(&std::fs::read_to_string(path)?)
    }

    /// The transcript as JSON text, one step per line.
    pub fn to_json(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|step| match step {
                Step::Send(b) => json!({"send": latin1(b)}).to_string(),
                Step::Recv(b) => json!({"recv": latin1(b)}).to_string(),
            })
            .collect();
        let mut head = Map::new();
        head.insert("server".into(), self.server.clone().into());
        head.insert("how".into(), self.how.clone().into());
        head.insert("notes".into(), self.notes.clone().into());
        let head = Value::Object(head).to_string();
        format!("{},\n \"steps\": [\n  {}\n]}}\n", &head[..head.len() - 1], steps.join(",\n  "))
    }

    /// Writes the transcript to a file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TranscriptError> {
        Ok(std::fs::write(path, self.to_json())?)
    }

    /// Appends bytes to the last step if it goes the same way, or as a new step.
    pub fn push(&mut self, step: Step) {
        match (self.steps.last_mut(), step) {
            (Some(Step::Send(last)), Step::Send(more)) | (Some(Step::Recv(last)), Step::Recv(more)) => {
                last.extend_from_slice(&more)
            }
            (_, step) => self.steps.push(step),
        }
    }
}
