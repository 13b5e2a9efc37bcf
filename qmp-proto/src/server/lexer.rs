//! The server's input side: QEMU's JSON lexer and streamer, byte for byte.
//!
//! The client's [`Framer`](crate::framer::Framer) frames whatever a server sends leniently; a server must
//! instead fail exactly where QEMU fails, because clients (and QEMU's own test suite) rely on its recovery
//! rules: `garbage{` is an "invalid keyword" error followed by an open object that swallows the next command;
//! an ASCII control character or 0xFF is a "stray" error that resets the parser; a bare `42` is answered only
//! when the next byte ends the number; nesting beyond 1024 is an error. So this is QEMU's lexer state table
//! (`qobject/json-lexer.c`) and token streamer (`qobject/json-streamer.c`), rewritten: it cuts input into
//! tokens, counts brackets, and hands each complete token list on, for its caller to
//! [parse](super::parser) into what it needs.
//!
//! Resumable (one byte at a time costs the same as a whole buffer) and bounded: one message's tokens take at
//! most the configured maximum message size (QEMU: 64 MiB), at most 2,097,152 tokens, nesting at most 1024.

use super::parser::Token;

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

/// The bytes that stay inside a string in either quote style: what `step` sends from `DqString` or `SqString` back
/// to the same state, but the quote itself (the caller excludes its own) and the backslash.
const IN_STRING: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b <= 0xFD {
        table[b] = b != b'\\' as usize;
        b += 1;
    }
    table
};

/// One input lexed: the tokens of a message (ranges in its text), or the description of QEMU's id-less error.
#[derive(Debug)]
pub(crate) enum Lexed<'a> {
    Message { tokens: &'a [Token], text: &'a [u8] },
    Error(Vec<u8>),
}

/// QEMU's lexer and streamer. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Lexer {
    state: State,
    /// Text of the token being lexed.
    token: Vec<u8>,
    /// Tokens of the message so far: kind and range in `text`.
    tokens: Vec<Token>,
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

    /// Feeds bytes until one completes a message (or an error), and returns how many it used: the caller can
    /// stop reading between messages (as the server does when it is busy) without paying a check per byte.
    /// The same as [`feed`](Self::feed) byte by byte, with the runs that need no state change (the plain bytes
    /// of a string, whitespace between tokens) taken at once.
    pub(crate) fn feed_until_message(&mut self, input: &[u8], emit: &mut impl FnMut(Lexed<'_>)) -> usize {
        let mut emitted = false;
        let mut at = 0;
        while at < input.len() && !emitted {
            let run = self.plain_run(&input[at..]);
            if run > 0 {
                at += run;
                if self.token.len() > self.max_size {
                    self.token_too_long(&mut |p| {
                        emitted = true;
                        emit(p)
                    });
                }
                continue;
            }
            self.feed(input[at], &mut |p| {
                emitted = true;
                emit(p)
            });
            at += 1;
        }
        at
    }

    /// True between messages: nothing of a message lexed yet, not recovering from an error.
    pub(crate) fn at_message_start(&self) -> bool {
        self.state == State::Start && self.tokens.is_empty()
    }

    /// Takes the bytes at the start of `input` that only extend the current string or skip whitespace (no
    /// more than would bring the token over the size limit, which the caller then reports), and returns how
    /// many.
    fn plain_run(&mut self, input: &[u8]) -> usize {
        match self.state {
            State::DqString | State::SqString => {
                let quote = if self.state == State::DqString { b'"' } else { b'\'' };
                let room = self.max_size.saturating_add(1).saturating_sub(self.token.len());
                let limit = input.len().min(room);
                let run =
                    input[..limit].iter().position(|&b| !IN_STRING[usize::from(b)] || b == quote).unwrap_or(limit);
                self.token.extend_from_slice(&input[..run]);
                run
            }
            State::Start => {
                input.iter().position(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')).unwrap_or(input.len())
            }
            _ => 0,
        }
    }

    /// Feeds one byte and hands on the messages it completes: none, one, or two (`1}` ends the number `1`,
    /// then `}` is a message of its own).
    pub(crate) fn feed(&mut self, b: u8, emit: &mut impl FnMut(Lexed<'_>)) {
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
                    emit(Lexed::Error(desc));
                    break;
                }
                Step::Discard => break,
                Step::Resync => self.state = State::Start,
            }
        }
        if self.token.len() > self.max_size {
            self.token_too_long(emit);
        }
    }

    /// QEMU hands an over-long token to the streamer, whose size check rejects it.
    fn token_too_long(&mut self, emit: &mut impl FnMut(Lexed<'_>)) {
        self.token.clear();
        self.state = State::Start;
        self.reset_message();
        emit(Lexed::Error(b"JSON token size limit exceeded".to_vec()));
    }

    /// The streamer: queues a finished token (in `self.token`) and parses the message when its brackets close.
    fn process(&mut self, kind: Kind, emit: &mut impl FnMut(Lexed<'_>)) {
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
            emit(Lexed::Error(desc.to_vec()));
            return;
        }
        let start = self.text.len();
        self.text.extend_from_slice(&self.token);
        self.token.clear();
        self.tokens.push((kind, start, self.text.len()));
        if (self.braces > 0 || self.brackets > 0) && self.braces >= 0 && self.brackets >= 0 {
            return;
        }
        emit(Lexed::Message { tokens: &self.tokens, text: &self.text });
        self.reset_message();
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

#[cfg(test)]
mod tests {
    use super::super::parser::parse;
    use super::super::qobject::QObject;
    use super::*;
    use proptest::prelude::*;

    /// A message lexed and parsed into a value, or the error.
    type Parsed = Result<QObject, Vec<u8>>;

    fn parsed(lexed: Lexed<'_>) -> Parsed {
        match lexed {
            Lexed::Message { tokens, text } => parse(tokens, text),
            Lexed::Error(desc) => Err(desc),
        }
    }

    fn byte_by_byte(max: usize, input: &[u8]) -> Vec<Parsed> {
        let mut lexer = Lexer::new(max);
        let mut out = Vec::new();
        input.iter().for_each(|&b| lexer.feed(b, &mut |l| out.push(parsed(l))));
        out
    }

    /// `feed_until_message` over `input` cut at `cut`, stopping after every message as the server may.
    fn in_runs(max: usize, input: &[u8], cut: usize) -> Vec<Parsed> {
        let mut lexer = Lexer::new(max);
        let mut out = Vec::new();
        for piece in [&input[..cut.min(input.len())], &input[cut.min(input.len())..]] {
            let mut at = 0;
            while at < piece.len() {
                at += lexer.feed_until_message(&piece[at..], &mut |l| out.push(parsed(l)));
            }
        }
        out
    }

    fn pieces() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"\"plain string text\""[..]),
            Just(&b"'single \"quoted\"'"[..]),
            Just(&b"\"esc \\\" \\u00e9 '\""[..]),
            Just(&b"\"unterminated "[..]),
            Just(&b"   \t\r\n  "[..]),
            Just(&b"{\"execute\": \"x\", \"id\": 12}"[..]),
            Just(&b"[1, 2.5e3, true, null]"[..]),
            Just(&b"\x01\xff\xfe"[..]),
            Just(&b"\"\xc3\xa9\xfd\x7f\""[..]),
            // Common messages, and tokens near them.
            Just(&b"{\"execute\":\"query-status\",\"arguments\":{\"a\":[-1,0,true]},\"id\":7}"[..]),
            Just(&b"-12 0 -0 01 -01 0e1 7E2 1.5 -x 3"[..]),
            Just(&b"{\"k\": nul} {] ] [}} {\"a\":{\"b\":[[]]}}"[..]),
        ]
        .prop_map(<[u8]>::to_vec);
        prop::collection::vec(prop_oneof![piece, prop::collection::vec(any::<u8>(), 0..6)], 0..10)
            .prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Taking plain runs at once changes nothing, the token size limit included.
        #[test]
        fn runs_lex_as_bytes_do(max in prop_oneof![1usize..40, Just(usize::MAX)], input in pieces(), cut in 0usize..200) {
            prop_assert_eq!(in_runs(max, &input, cut), byte_by_byte(max, &input));
        }
    }
}
