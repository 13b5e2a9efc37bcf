//! The server's input side: QEMU's JSON lexer and streamer, byte for byte.
//!
//! The client's [`Framer`](crate::framer::Framer) frames whatever a server sends leniently; a server must
//! instead fail exactly where QEMU fails, because clients (and QEMU's own test suite) rely on its recovery
//! rules: `garbage{` is an "invalid keyword" error followed by an open object that swallows the next command;
//! an ASCII control character or 0xFF is a "stray" error that resets the parser; a bare `42` is answered only
//! when the next byte ends the number; nesting beyond 1024 is an error. So this is QEMU's lexer state table
//! (`qobject/json-lexer.c`) and token streamer (`qobject/json-streamer.c`), rewritten: it cuts input into
//! tokens, counts brackets, and hands each complete token list to the [`parser`](super::parser).
//!
//! Resumable (one byte at a time costs the same as a whole buffer) and bounded: one message's tokens take at
//! most the configured maximum message size (QEMU: 64 MiB), at most 2,097,152 tokens, nesting at most 1024.

use super::parser::parse;
use super::qobject::QObject;

/// QEMU's limit on tokens per message (`MAX_TOKEN_COUNT`).
pub(crate) const MAX_TOKEN_COUNT: usize = 2 << 20;
/// QEMU's limit on open brackets and braces (`MAX_NESTING`).
pub(crate) const MAX_NESTING: i64 = 1 << 10;

/// A token's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
}

/// Lexer states (QEMU's `IN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Recovery,
    DqString,
    DqEscape,
    SqString,
    SqEscape,
    Zero,
    ExpDigits,
    ExpSign,
    ExpE,
    Mantissa,
    MantissaDigits,
    Digits,
    Sign,
    Keyword,
}

/// What one byte does in one state.
enum Step {
    /// The byte belongs to the current token; go to the state.
    Go(State),
    /// The byte ends a token and belongs to it.
    Token(Kind),
    /// The byte ends the token before it and is looked at again from the start state.
    TokenBefore(Kind),
    /// Whitespace between tokens.
    Skip,
    /// The byte cannot go here: a "stray" error, then recovery.
    Error,
    /// Recovery skips the byte.
    Discard,
    /// Recovery ends before the byte, which is looked at again from the start state.
    Resync,
}

fn step(state: State, b: u8) -> Step {
    use State::*;
    match state {
        Start => match b {
            b'"' => Step::Go(DqString),
            b'\'' => Step::Go(SqString),
            b'0' => Step::Go(Zero),
            b'1'..=b'9' => Step::Go(Digits),
            b'-' => Step::Go(Sign),
            b'{' => Step::Token(Kind::LCurly),
            b'}' => Step::Token(Kind::RCurly),
            b'[' => Step::Token(Kind::LSquare),
            b']' => Step::Token(Kind::RSquare),
            b',' => Step::Token(Kind::Comma),
            b':' => Step::Token(Kind::Colon),
            b'a'..=b'z' => Step::Go(Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => Step::Skip,
            _ => Step::Error,
        },
        Recovery => match b {
            b'\t' => Step::Discard,
            0..=0x1F | 0xFE | 0xFF | b'[' | b']' | b'{' | b'}' | b':' | b',' => Step::Resync,
            _ => Step::Discard,
        },
        DqString => match b {
            b'\\' => Step::Go(DqEscape),
            b'"' => Step::Token(Kind::String),
            0x20..=0xFD => Step::Go(DqString),
            _ => Step::Error,
        },
        SqString => match b {
            b'\\' => Step::Go(SqEscape),
            b'\'' => Step::Token(Kind::String),
            0x20..=0xFD => Step::Go(SqString),
            _ => Step::Error,
        },
        DqEscape | SqEscape => match b {
            0x20..=0xFD => Step::Go(if state == DqEscape { DqString } else { SqString }),
            _ => Step::Error,
        },
        Zero => match b {
            b'0'..=b'9' => Step::Error,
            b'.' => Step::Go(Mantissa),
            _ => Step::TokenBefore(Kind::Integer),
        },
        ExpDigits => match b {
            b'0'..=b'9' => Step::Go(ExpDigits),
            _ => Step::TokenBefore(Kind::Float),
        },
        ExpSign => match b {
            b'0'..=b'9' => Step::Go(ExpDigits),
            _ => Step::Error,
        },
        ExpE => match b {
            b'-' | b'+' => Step::Go(ExpSign),
            b'0'..=b'9' => Step::Go(ExpDigits),
            _ => Step::Error,
        },
        MantissaDigits => match b {
            b'0'..=b'9' => Step::Go(MantissaDigits),
            b'e' | b'E' => Step::Go(ExpE),
            _ => Step::TokenBefore(Kind::Float),
        },
        Mantissa => match b {
            b'0'..=b'9' => Step::Go(MantissaDigits),
            _ => Step::Error,
        },
        Digits => match b {
            b'0'..=b'9' => Step::Go(Digits),
            b'e' | b'E' => Step::Go(ExpE),
            b'.' => Step::Go(Mantissa),
            _ => Step::TokenBefore(Kind::Integer),
        },
        Sign => match b {
            b'0' => Step::Go(Zero),
            b'1'..=b'9' => Step::Go(Digits),
            _ => Step::Error,
        },
        Keyword => match b {
            b'a'..=b'z' => Step::Go(Keyword),
            _ => Step::TokenBefore(Kind::Keyword),
        },
    }
}

/// One parsed input: a value, or the description of QEMU's id-less parse error.
pub(crate) type Parsed = Result<QObject, Vec<u8>>;

/// QEMU's lexer and streamer. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Lexer {
    state: State,
    /// Text of the token being lexed.
    token: Vec<u8>,
    /// Tokens of the message so far: kind and range in `text`.
    tokens: Vec<(Kind, usize, usize)>,
    text: Vec<u8>,
    braces: i64,
    brackets: i64,
    max_size: usize,
}

impl Lexer {
    /// A lexer whose messages (the text of their tokens) may take at most `max_size` bytes.
    pub(crate) fn new(max_size: usize) -> Self {
        Lexer {
            state: State::Start,
            token: Vec::new(),
            tokens: Vec::new(),
            text: Vec::new(),
            braces: 0,
            brackets: 0,
            max_size: max_size.max(1),
        }
    }

    /// Feeds one byte and hands on the messages it completes: none, one, or two (`1}` ends the number `1`,
    /// then `}` is a message of its own).
    pub(crate) fn feed(&mut self, b: u8, emit: &mut impl FnMut(Parsed)) {
        loop {
            match step(self.state, b) {
                Step::Go(next) => {
                    self.token.push(b);
                    self.state = next;
                    break;
                }
                Step::Token(kind) => {
                    self.token.push(b);
                    self.state = State::Start;
                    self.process(kind, emit);
                    break;
                }
                Step::TokenBefore(kind) => {
                    self.state = State::Start;
                    self.process(kind, emit);
                }
                Step::Skip => {
                    self.state = State::Start;
                    break;
                }
                Step::Error => {
                    self.token.push(b);
                    let mut desc = b"JSON parse error, stray '".to_vec();
                    // QEMU prints the token with `%s`: a NUL byte ends it.
                    let text = &self.token[..self.token.iter().position(|&c| c == 0).unwrap_or(self.token.len())];
                    desc.extend_from_slice(text);
                    desc.push(b'\'');
                    self.token.clear();
                    self.reset_message();
                    self.state = State::Recovery;
                    emit(Err(desc));
                    break;
                }
                Step::Discard => break,
                Step::Resync => self.state = State::Start,
            }
        }
        if self.token.len() > self.max_size {
            // QEMU hands an over-long token to the streamer, whose size check rejects it.
            self.token.clear();
            self.state = State::Start;
            self.reset_message();
            emit(Err(b"JSON token size limit exceeded".to_vec()));
        }
    }

    /// The streamer: queues a finished token (in `self.token`) and parses the message when its brackets close.
    fn process(&mut self, kind: Kind, emit: &mut impl FnMut(Parsed)) {
        match kind {
            Kind::LCurly => self.braces += 1,
            Kind::RCurly => self.braces -= 1,
            Kind::LSquare => self.brackets += 1,
            Kind::RSquare => self.brackets -= 1,
            _ => {}
        }
        let len = self.token.len();
        let limit = if self.text.len() + len + 1 > self.max_size {
            Some(&b"JSON token size limit exceeded"[..])
        } else if self.tokens.len() + 1 > MAX_TOKEN_COUNT {
            Some(&b"JSON token count limit exceeded"[..])
        } else if self.braces + self.brackets > MAX_NESTING {
            Some(&b"JSON nesting depth limit exceeded"[..])
        } else {
            None
        };
        if let Some(desc) = limit {
            self.token.clear();
            self.reset_message();
            emit(Err(desc.to_vec()));
            return;
        }
        let start = self.text.len();
        self.text.extend_from_slice(&self.token);
        self.token.clear();
        self.tokens.push((kind, start, self.text.len()));
        if (self.braces > 0 || self.brackets > 0) && self.braces >= 0 && self.brackets >= 0 {
            return;
        }
        let parsed = parse(&self.tokens, &self.text);
        self.reset_message();
        emit(parsed);
    }

    /// Forgets the message under way (not the lexer state).
    fn reset_message(&mut self) {
        self.braces = 0;
        self.brackets = 0;
        self.tokens.clear();
        if self.text.capacity() > 64 * 1024 {
            self.text = Vec::new();
            self.tokens = Vec::new();
        } else {
            self.text.clear();
        }
    }
}
