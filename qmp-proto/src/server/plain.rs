//! [`PlainCommand`]: the command clients send nearly always, taken straight from the input.
//!
//! When the [fast path](super::fast) finds a command whose members need no check and no decoding (an
//! `execute` string of printable ASCII, `arguments` an object as standard JSON without whitespace or none, an
//! id QEMU writes back as it came or none, nothing else, and not a command the server answers itself), dispatch
//! takes its name, id and arguments from the input as they are, into the command handed to the caller: no
//! [`CommandObject`](super::request::CommandObject) is built in between. Every other command goes through
//! the `CommandObject`, and both reach the caller the same way ([`ReadCommand`]; the property test of the
//! fast path checks that they agree).

use std::ops::Range;

use super::arguments::Arguments;
use super::pending::Echo;
use super::qobject::QDict;
use super::request::{Members, ReadCommand, Shape, BUILTIN};
use super::short::ShortBytes;

/// A plain command found in a message's text: its name and id copied, and where its `arguments` are, left in
/// the input for the caller to take without a copy ([`with_arguments`](Self::with_arguments)).
pub(crate) struct Plain {
    name: ShortBytes,
    id: Option<ShortBytes>,
    /// The id again, as the server keeps it: read from the text, not copied from `id` just written.
    echo: Echo,
    /// Where the `arguments` object's text is in the message, if it has one.
    pub(crate) arguments: Option<Range<usize>>,
}

impl Plain {
    /// The command, given its `arguments` text (`None` without any).
    pub(crate) fn with_arguments(self, arguments: Option<Arguments>) -> PlainCommand {
        PlainCommand { name: self.name, arguments: arguments.unwrap_or_default(), id: self.id, echo: self.echo }
    }
}

/// A plain command, ready for dispatch. See the [module docs](self).
pub(crate) struct PlainCommand {
    /// Printable ASCII.
    name: ShortBytes,
    arguments: Arguments,
    /// Written back as it came.
    id: Option<ShortBytes>,
    echo: Echo,
}

impl Members {
    /// The plain command these members (found by the fast path in `text`) make, if they make one. `text` may
    /// go on past the message: the bytes after it let the short texts be copied in fixed-size blocks.
    pub(crate) fn plain(&self, text: &[u8]) -> Option<Plain> {
        let execute = self.execute.filter(|found| found.shape == Shape::String && found.plain)?;
        if self.exec_oob.is_some() || self.unexpected.is_some() {
            return None;
        }
        let arguments = match self.arguments {
            None => None,
            Some(found) if found.shape == Shape::Object && found.json && found.compact => Some(found.start..found.end),
            Some(_) => return None,
        };
        let (id, echo) = match self.id {
            None => (None, Echo::None),
            // One token: compact.
            Some(found) if found.plain => (
                Some(ShortBytes::from_range(text, found.start, found.end)),
                Echo::from_range(text, found.start, found.end),
            ),
            Some(_) => return None,
        };
        let (start, end) = (execute.start + 1, execute.end - 1);
        if BUILTIN.iter().any(|builtin| builtin.as_bytes() == &text[start..end]) {
            return None;
        }
        Some(Plain { name: ShortBytes::from_range(text, start, end), id, echo, arguments })
    }
}

impl ReadCommand for PlainCommand {
    fn check(&self, _allow_oob: bool) -> Result<bool, String> {
        // One `execute`, a string; `arguments` an object; nothing else: in band, and nothing to report.
        Ok(false)
    }

    fn name(&self) -> &[u8] {
        self.name.as_bytes()
    }

    fn echo(&self) -> Option<&[u8]> {
        self.id.as_ref().map(ShortBytes::as_bytes)
    }

    fn echo_owned(&self) -> Echo {
        self.echo.clone()
    }

    fn builtin_arguments(&self) -> Option<&QDict> {
        None
    }

    fn into_parts(self) -> (ShortBytes, Arguments, Option<ShortBytes>) {
        (self.name, self.arguments, self.id)
    }
}
