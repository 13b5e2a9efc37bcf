//! Shared by the qmp-qapi tests against real servers: decode-then-encode checks, command dispatch by name over
//! every generated command, and the markers that show a decoded value holds something the schema does not know.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// What became of one JSON value decoded into a generated type.
#[derive(Debug)]
pub enum Outcome {
    /// Decoded, and encoded back to the same JSON value; the decoded value's `Debug` text.
    Equal(String),
    /// Decoded, but encoding gave another JSON value.
    Differs { encoded: Value },
    /// Did not decode.
    Failed(String),
}

/// Decodes `raw` as `T` and encodes it again.
pub fn roundtrip<T: DeserializeOwned + Serialize + Debug>(raw: &Value) -> Outcome {
    match serde_json::from_value::<T>(raw.clone()) {
        Err(e) => Outcome::Failed(e.to_string()),
        Ok(typed) => match serde_json::to_value(&typed) {
            Ok(encoded) if &encoded == raw => Outcome::Equal(format!("{typed:?}")),
            Ok(encoded) => Outcome::Differs { encoded },
            Err(e) => Outcome::Failed(format!("encoding: {e}")),
        },
    }
}

/// The `Debug` fragments of a decoded value that mean "kept, but not known to the schema": extra members, an
/// enum's or union's or alternate's `Other`, an unknown event.
pub const UNKNOWN_MARKERS: [&str; 10] = [
    "extra_members: {\"",
    "Other(\"",
    "Other({\"",
    "Other(String(",
    "Other(Number(",
    "Other(Bool(",
    "Other(Null",
    "Other(Array(",
    "Other(Object(",
    "Other { name:",
];

/// The first unknown marker in a decoded value's `Debug` text, with some context.
pub fn unknown_in(debug: &str) -> Option<String> {
    UNKNOWN_MARKERS.iter().find_map(|m| {
        debug.find(m).map(|at| {
            let start = debug[..at].char_indices().rev().nth(80).map_or(0, |(i, _)| i);
            let end = debug[at..].char_indices().nth(120).map_or(debug.len(), |(i, _)| at + i);
            debug[start..end].to_owned()
        })
    })
}

/// Dispatch by wire name over every generated command of one protocol (see `qmp_qapi::qmp_commands!`).
macro_rules! dispatch {
    ($($name:literal => $ty:path,)*) => {
        /// Decodes and re-encodes a reply as the command's result type; `None`: not a command of the schema.
        pub fn result(name: &str, raw: &serde_json::Value) -> Option<super::Outcome> {
            match name {
                $( $name => Some(super::roundtrip::<<$ty as qmp_qapi::Command>::Ok>(raw)), )*
                _ => None,
            }
        }

        /// Decodes and re-encodes arguments as the command's struct.
        pub fn arguments(name: &str, raw: &serde_json::Value) -> Option<super::Outcome> {
            match name {
                $( $name => Some(super::roundtrip::<$ty>(raw)), )*
                _ => None,
            }
        }

        /// Whether the command can run without arguments (the merged schema requires none).
        pub fn takes_no_required_argument(name: &str) -> Option<bool> {
            match name {
                $( $name => Some(serde_json::from_value::<$ty>(serde_json::json!({})).is_ok()), )*
                _ => None,
            }
        }
    };
}

/// The QMP commands.
pub mod qmp_commands {
    qmp_qapi::qmp_commands!(dispatch);
}

/// The guest-agent commands (no walk over their arguments: qemu-ga has no introspection).
#[allow(dead_code)]
pub mod qga_commands {
    qmp_qapi::qga_commands!(dispatch);
}
