//! Framing: cutting a byte stream into JSON values, without parsing them.
//!
//! QMP servers end messages with `\r\n`, qemu-ga with `\n`, `pretty=on` monitors spread one object over many
//! lines, and `guest-sync-delimited` puts a raw 0xFF byte before its reply. Splitting on newlines gets all of
//! that wrong, so the [`Framer`] frames by JSON value: it skips whitespace between values, tracks strings,
//! escapes and nesting depth, and reports a value when its depth returns to zero.
//!
//! Properties the rest of the crate relies on:
//! - **Resumable, no rescans.** The scanner state survives between [`Framer::feed`] calls, so feeding N bytes
//!   one at a time costs O(N) in total, the same as feeding them at once, and yields the same frames.
//! - **Bounded.** A value longer than the configured maximum is not buffered: its bytes are dropped as they are
//!   scanned and one [`Frame::Oversized`] is reported when it ends. The framer never holds more than the
//!   maximum message size.
//! - **Small when idle.** The buffer for a value split across [`Framer::feed`] calls starts empty (no
//!   allocation) and grows on demand. A message that ends within one call is copied out without it, unless it
//!   is long: a value is moved into the buffer every 32 KiB as it is scanned, while those bytes are still in
//!   the cache (the buffer then reserves the rest of the input at once, never more than the maximum message
//!   size). Once a message that needed more than [`KEEP_CAPACITY`] of buffer is out, the buffer goes with it
//!   (the message owns it), so a 9 MiB reply does not pin 9 MiB for the life of the connection; smaller buffers
//!   are reused.
//! - **0xFF resynchronises.** 0xFF never occurs in QEMU's JSON output. Anywhere in the stream it yields
//!   [`Frame::Delimiter`]; an unfinished value before it is reported as [`Frame::Truncated`].
//! - **Garbage is framed too.** A top-level token that does not start an object, array or string (QEMU never
//!   sends one, a broken peer might) runs to the next whitespace, 0xFF, `{`, `[` or `"`, and is handed on as a
//!   message so that classification can report it as not JSON.
//!
//! Speed: inside objects and arrays the input is scanned 64 bytes at a time. One pass over a block (which
//! the compiler vectorizes) marks its quotes and brackets as bytes of two arrays, counts its opening and
//! closing brackets, and checks it for backslashes and 0xFF; one multiplication per 8 bytes gathers each array
//! into a word of bits. A prefix XOR of the quote bits tells which bytes are inside strings. In most blocks no
//! bracket is inside a string and there are fewer closing brackets than it would take for the depth to fall to
//! zero (or to one, for the [`Layout`]): the counts give the depth after the block, and that is all. In the
//! others the brackets outside strings are visited one by one (a trailing-zero count each; the byte tells
//! whether it opens) up to the one that ends the value; a block known beforehand to be one of those (the first
//! of every message) is not counted at all. A block holding a backslash or 0xFF (rare in QEMU's output) goes
//! through the bytewise scanner instead, as does everything between top-level values and the last few bytes
//! of an input. The last bytes of an input, when there are at least 16 of them but fewer than a block, are
//! scanned as the block that ends the input, the bytes of it already scanned masked off (in an input shorter
//! than a block: as a block padded with spaces); a short reply is one or two blocks. Everything is plain safe
//! Rust for any target: no `unsafe`, no target features (without `popcnt` a population count costs a dozen
//! instructions, so the code counts none).

use bytes::{Bytes, BytesMut};

/// One unit cut from the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete top-level JSON value (or top-level garbage token), exactly as received.
    Message(Bytes),
    /// A 0xFF byte outside any value: the `guest-sync-delimited` marker.
    Delimiter,
    /// A value longer than the maximum message size; its bytes were dropped. `len` counts them all.
    Oversized {
        /// Length of the whole value in bytes.
        len: u64,
        /// The integer id of a reply, when the value ends with an `"id": N` member (QEMU writes the id last in
        /// success replies), so that the command it answers can be ended instead of waiting for a timeout.
        id: Option<u64>,
    },
    /// A value cut short by a 0xFF byte; its bytes (possibly incomplete if it was also oversized) are dropped.
    Truncated {
        /// Bytes of the unfinished value that were dropped.
        len: u64,
    },
}

/// What the framer learned of a message's structure while cutting it out, for
/// [`classify_framed`](crate::message::classify_framed): where the first object or array nested in the
/// top-level value ends. Given with every frame by [`Framer::feed_framed`]; it describes that frame's message
/// and no other (the default describes nothing).
///
/// That end is where the depth first fell back to 1: the brackets between the start of that nested value and
/// it are balanced (brackets inside strings aside, whatever their kind), its strings are closed and it holds no
/// 0xFF byte. Nothing else is checked: not its tokens, not its UTF-8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offset in the message just past the bracket that closed its first nested object or array.
    first_nested_end: Option<usize>,
    /// For an oversized value: it began as a reply does.
    begins_as_reply: bool,
}

impl Layout {
    /// Offset in the message just past the bracket that closed the first object or array nested in the
    /// top-level value, when there is one.
    pub fn first_nested_end(&self) -> Option<usize> {
        self.first_nested_end
    }

    /// For a [`Frame::Oversized`]: whether the dropped value began as a reply does, with a `"return"` or
    /// `"error"` member first (whitespace aside), as QEMU writes replies; its events begin with `"timestamp"`.
    /// Lets a client that matches replies by order ([`Config::in_band_ids`](crate::Config::in_band_ids)) end
    /// the command an oversized reply without an id answers. False for every other frame, and with a maximum
    /// message size under 24 bytes.
    pub fn begins_as_reply(&self) -> bool {
        self.begins_as_reply
    }
}

/// Where the scanner is, between bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between values: whitespace is skipped.
    Between,
    /// Inside an object or array, outside strings.
    Structure,
    /// Inside a string; `depth` tells whether it is a top-level string.
    String,
    /// Right after a backslash inside a string.
    Escape,
    /// Inside a top-level garbage token.
    Token,
}

/// Byte classes used outside strings.
const PLAIN: u8 = 0;
const OPEN: u8 = 1;
const CLOSE: u8 = 2;
const QUOTE: u8 = 3;
const DELIM: u8 = 4;
const SPACE: u8 = 5;

const CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    t[b'{' as usize] = OPEN;
    t[b'[' as usize] = OPEN;
    t[b'}' as usize] = CLOSE;
    t[b']' as usize] = CLOSE;
    t[b'"' as usize] = QUOTE;
    t[0xFF] = DELIM;
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t
};

/// Incremental JSON value framer with a size limit. See the [module docs](self).
#[derive(Debug)]
pub struct Framer {
    /// Bytes of the unfinished value that arrived in earlier `feed` calls (empty while discarding).
    partial: BytesMut,
    state: State,
    depth: u32,
    /// Length so far of the unfinished value, including bytes dropped while discarding.
    value_len: u64,
    /// The unfinished value is over the limit and its bytes are being dropped.
    discarding: bool,
    max_message_size: usize,
    /// The last bytes of a value being discarded, to find a trailing `"id": N` member.
    tail: Vec<u8>,
    /// Offset in the unfinished value just past the bracket that brought the depth from 2 back to 1 first.
    first_nested_end: Option<u64>,
    /// The value being discarded began as a reply does ([`Layout::begins_as_reply`]).
    discarding_reply: bool,
}

/// Bytes of an oversized value's end kept to find its id.
const TAIL: usize = 48;

/// Bytes of an oversized value's start read to tell a reply ([`Layout::begins_as_reply`]).
const HEAD: usize = 24;

/// The largest buffer the framer keeps for the next message once a message is out (64 KiB): a larger one
/// leaves with the message it held.
pub const KEEP_CAPACITY: usize = 64 * 1024;

impl Framer {
    /// A framer that reports values longer than `max_message_size` bytes as [`Frame::Oversized`].
    pub fn new(max_message_size: usize) -> Self {
        Framer {
            partial: BytesMut::new(),
            state: State::Between,
            depth: 0,
            value_len: 0,
            discarding: false,
            max_message_size: max_message_size.max(1),
            tail: Vec::new(),
            first_nested_end: None,
            discarding_reply: false,
        }
    }

    /// True when a value has started but not ended (for example, at EOF: the stream was cut mid-message).
    pub fn in_message(&self) -> bool {
        self.state != State::Between
    }

    /// Bytes currently buffered for an unfinished value. Never more than the maximum message size.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Bytes of buffer allocated for unfinished values (its capacity): 0 until a value is split across
    /// [`feed`](Self::feed) calls, and at most [`KEEP_CAPACITY`] between messages.
    pub fn capacity(&self) -> usize {
        self.partial.capacity()
    }

    /// Bytes of the unfinished value received so far, those dropped for being over the limit included.
    pub fn message_len(&self) -> u64 {
        if self.in_message() {
            self.value_len
        } else {
            0
        }
    }

    /// Scans `input` and calls `emit` for every frame that ends in it, in order. Whatever is left of an
    /// unfinished value is kept (or counted, when it is over the limit) for the next call.
    pub fn feed(&mut self, input: &[u8], mut emit: impl FnMut(Frame)) {
        self.feed_framed(input, |frame, _| emit(frame));
    }

    /// [`feed`](Self::feed), giving with each frame the [`Layout`] of its message, which lets
    /// [`classify_framed`](crate::message::classify_framed) skip what the framer already scanned. The frames
    /// are the same; the layout costs nothing measurable.
    pub fn feed_framed(&mut self, input: &[u8], mut emit: impl FnMut(Frame, Layout)) {
        let mut i = 0;
        // Start (in `input`) of the current value's bytes not yet copied into `partial`.
        let mut start = 0;
        let n = input.len();
        // Bytes before this offset are scanned bytewise (a block holding a backslash or 0xFF).
        let mut bytewise_until = 0;
        while i < n {
            match self.state {
                State::Structure | State::String if self.depth > 0 && i >= bytewise_until && n - i >= TAIL_BLOCK => {
                    if self.scan_blocks(input, &mut i, &mut start, &mut emit) {
                        bytewise_until = i + BLOCK;
                    }
                }
                State::Between => {
                    // Skip whitespace and delimiters between values.
                    let b = input[i];
                    match CLASS[b as usize] {
                        SPACE => {
                            i += 1;
                            continue;
                        }
                        DELIM => {
                            emit(Frame::Delimiter, Layout::default());
                            i += 1;
                            continue;
                        }
                        OPEN => {
                            self.state = State::Structure;
                            self.depth = 1;
                        }
                        QUOTE => {
                            self.state = State::String;
                            self.depth = 0;
                        }
                        _ => {
                            self.state = State::Token;
                            self.depth = 0;
                        }
                    }
                    start = i;
                    self.value_len = 0;
                    self.first_nested_end = None;
                    i += 1;
                }
                State::Structure => {
                    // Hot loop: skip plain bytes (numbers, literals, punctuation, whitespace).
                    let mut class = PLAIN;
                    while i < n {
                        class = CLASS[input[i] as usize];
                        if class != PLAIN && class != SPACE {
                            break;
                        }
                        i += 1;
                    }
                    if i == n {
                        break;
                    }
                    match class {
                        OPEN => {
                            self.depth += 1;
                            i += 1;
                        }
                        CLOSE => {
                            self.depth -= 1;
                            i += 1;
                            if self.depth == 1 && self.first_nested_end.is_none() {
                                self.first_nested_end = Some(self.value_len + (i - start) as u64);
                            }
                            if self.depth == 0 {
                                self.finish(input, start, i, &mut emit);
                            }
                        }
                        QUOTE => {
                            self.state = State::String;
                            i += 1;
                        }
                        _ => {
                            // DELIM: the value is cut short.
                            self.truncate(start, i, &mut emit);
                        }
                    }
                }
                State::String => match memchr::memchr3(b'"', b'\\', 0xFF, &input[i..]) {
                    None => i = n,
                    Some(k) => {
                        i += k;
                        match input[i] {
                            b'"' => {
                                i += 1;
                                if self.depth == 0 {
                                    self.finish(input, start, i, &mut emit);
                                } else {
                                    self.state = State::Structure;
                                }
                            }
                            b'\\' => {
                                self.state = State::Escape;
                                i += 1;
                            }
                            _ => self.truncate(start, i, &mut emit),
                        }
                    }
                },
                State::Escape => {
                    if input[i] == 0xFF {
                        self.truncate(start, i, &mut emit);
                    } else {
                        self.state = State::String;
                        i += 1;
                    }
                }
                State::Token => {
                    match input[i..].iter().position(|&b| matches!(CLASS[b as usize], SPACE | DELIM | OPEN | QUOTE)) {
                        None => i = n,
                        Some(k) => {
                            i += k;
                            // The terminator is not part of the token; `Between` handles it next.
                            self.finish(input, start, i, &mut emit);
                        }
                    }
                }
            }
            // Enforce the limit on the value scanned so far (its bytes in `input` run from `start` to `i`).
            if self.state != State::Between && !self.discarding {
                self.check_limit(input, &mut start, i);
            }
        }
        if self.state != State::Between {
            self.keep(input, start, n);
        }
    }

    /// Scans `input` from `*i` a block at a time, inside a container (depth > 0, not after a backslash):
    /// emits the values that end there, and goes on into the objects and arrays that start right after them.
    ///
    /// The last bytes of the input, fewer than a block, are scanned as a block padded with spaces (which
    /// change no state: they are neither quotes nor brackets, and never end a value). Stops, with the state and
    /// depth updated to `*i`, at the end of the input; at a block holding a backslash or 0xFF (returns `true`:
    /// scan it bytewise); or between values, at the end of a block or at the start of a value that is not an
    /// object or array.
    fn scan_blocks(
        &mut self,
        input: &[u8],
        i: &mut usize,
        start: &mut usize,
        emit: &mut impl FnMut(Frame, Layout),
    ) -> bool {
        let mut in_string = self.state == State::String;
        let mut depth = self.depth;
        let mut special = false;
        // For an input shorter than a block only: its bytes, then spaces.
        let mut padded: [u8; BLOCK];
        while *i < input.len() {
            let rest = input.len() - *i;
            // `len` bytes from `*i` on are input; they start at byte `skip` of the block.
            let (block, len, skip) = match input[*i..].first_chunk::<BLOCK>() {
                Some(block) => (block, BLOCK, 0),
                // The last bytes of a longer input: the block that ends with them (its first bytes were scanned).
                None => match input.last_chunk::<BLOCK>() {
                    Some(block) => (block, rest, BLOCK - rest),
                    None => {
                        padded = [b' '; BLOCK];
                        padded[..rest].copy_from_slice(&input[*i..]);
                        (&padded, rest, 0)
                    }
                },
            };
            // The lowest level asked for: 0, or 1 while the first nested value has not ended.
            let fall = depth.saturating_sub(u32::from(self.first_nested_end.is_none()));
            // Whether the bracket counts may give the depth after this block: not for a block that ends the
            // input (its counts would include bytes already scanned), nor when any closing bracket may reach the
            // lowest level (its brackets are then walked, and nothing is counted).
            let counted = skip == 0 && fall > 0;
            let Some(m) = (if counted { block_masks::<true>(block) } else { block_masks::<false>(block) }) else {
                special = true;
                break;
            };
            // Bit k set: byte `*i + k` is inside a string (its opening quote included, its closing quote not).
            let inside = prefix_xor(m.quote >> skip) ^ if in_string { !0 } else { 0 };
            // The common block: no bracket inside a string, and fewer closing brackets than it takes to fall to
            // the lowest level: the counts give the depth after it.
            if counted && m.bracket & inside == 0 && m.closes < fall {
                depth = depth + m.opens - m.closes;
                in_string = inside >> 63 != 0;
                *i += len;
                if *i - *start >= FLUSH && !self.discarding {
                    self.flush(input, start, *i);
                }
                continue;
            }
            // Brackets outside strings (bit k: byte `*i + k`, which is `bytes[k]`).
            let mut brackets = (m.bracket >> skip) & !inside;
            let bytes = &block[skip..];
            loop {
                // The first fall back to depth 1 ends the first nested value.
                let (one, end) = depth_falls(brackets, bytes, depth, self.first_nested_end.is_none());
                if let Some(k) = one {
                    self.first_nested_end = Some(self.value_len + (*i + k + 1 - *start) as u64);
                }
                match end {
                    Err(after) => {
                        depth = after;
                        break;
                    }
                    Ok(k) => {
                        self.finish(input, *start, *i + k + 1, emit);
                        // Between values: skip whitespace; go on if an object or array starts in this block.
                        let mut q = k + 1;
                        while q < len && CLASS[input[*i + q] as usize] == SPACE {
                            q += 1;
                        }
                        if q == len || CLASS[input[*i + q] as usize] != OPEN {
                            *i += q;
                            return false;
                        }
                        // The quote parity is even here (whitespace after a value): `inside` holds for the rest.
                        *start = *i + q;
                        self.state = State::Structure;
                        self.value_len = 0;
                        self.first_nested_end = None;
                        depth = 1;
                        brackets &= (!0u64 << q) << 1;
                    }
                }
            }
            in_string = inside >> 63 != 0;
            *i += len;
            if *i - *start >= FLUSH && !self.discarding {
                self.flush(input, start, *i);
            }
        }
        self.depth = depth;
        self.state = if in_string { State::String } else { State::Structure };
        special
    }

    /// Moves the scanned part `input[*start..i]` of a long unfinished value into the buffer while those bytes
    /// are still in the cache, or starts discarding the value when it has grown past the limit. The first move
    /// reserves the rest of the input at once (at most up to the limit), so that a long value in one input is
    /// copied once, not once per doubling of the buffer.
    fn flush(&mut self, input: &[u8], start: &mut usize, i: usize) {
        let len = self.value_len + (i - *start) as u64;
        if len > self.max_message_size as u64 {
            self.begin_discard(&input[*start..i]);
        } else {
            if self.partial.is_empty() {
                let room = self.max_message_size - self.value_len as usize;
                self.partial.reserve((input.len() - *start).min(room));
            }
            self.partial.extend_from_slice(&input[*start..i]);
        }
        self.value_len = len;
        *start = i;
    }

    /// Called at the end of a value: `input[start..end]` is its last part.
    fn finish(&mut self, input: &[u8], start: usize, end: usize, emit: &mut impl FnMut(Frame, Layout)) {
        self.state = State::Between;
        self.depth = 0;
        let first_nested_end = self.first_nested_end.take();
        let len = self.value_len + (end - start) as u64;
        let too_long = self.discarding || len > self.max_message_size as u64;
        if too_long && !self.discarding {
            self.begin_discard(&input[start..end]);
        } else if too_long {
            push_tail(&mut self.tail, &input[start..end]);
        }
        self.value_len = 0;
        self.discarding = false;
        if too_long {
            let layout = Layout { first_nested_end: None, begins_as_reply: self.discarding_reply };
            emit(Frame::Oversized { len, id: trailing_id(&self.tail) }, layout);
            self.tail.clear();
            return;
        }
        let frame = if self.partial.is_empty() {
            copy(&input[start..end])
        } else {
            self.partial.extend_from_slice(&input[start..end]);
            if self.partial.capacity() > KEEP_CAPACITY && self.partial.capacity() / 2 > self.partial.len() {
                // Reserved for more input than the message took (see `flush`): a copy of the right size
                // leaves, and the buffer is freed.
                let message = Bytes::copy_from_slice(&self.partial);
                self.drop_partial();
                message
            } else if self.partial.capacity() > KEEP_CAPACITY {
                // A big buffer leaves with its message: the framer starts again from nothing.
                std::mem::take(&mut self.partial).freeze()
            } else {
                // The rest of a small buffer is reused for the next message.
                self.partial.split().freeze()
            }
        };
        let first_nested_end = first_nested_end.and_then(|end| usize::try_from(end).ok());
        emit(Frame::Message(frame), Layout { first_nested_end, begins_as_reply: false });
    }

    /// Called when a 0xFF byte at `input[at]` cuts the current value short. Leaves the 0xFF to `Between`.
    fn truncate(&mut self, start: usize, at: usize, emit: &mut impl FnMut(Frame, Layout)) {
        let len = self.value_len + (at - start) as u64;
        self.state = State::Between;
        self.depth = 0;
        self.value_len = 0;
        self.discarding = false;
        self.drop_partial();
        self.tail.clear();
        emit(Frame::Truncated { len }, Layout::default());
    }

    /// Switches to discarding when the unfinished value has grown past the limit.
    fn check_limit(&mut self, input: &[u8], start: &mut usize, i: usize) {
        let len = self.value_len + (i - *start) as u64;
        if len > self.max_message_size as u64 {
            self.begin_discard(&input[*start..i]);
            self.value_len = len;
            *start = i;
        }
    }

    /// Drops the buffered part of the value (`partial` followed by `recent`), keeping only its last bytes.
    fn begin_discard(&mut self, recent: &[u8]) {
        self.discarding = true;
        // The value starts at `partial` (or at `recent` when nothing of it came in an earlier call), and more
        // than the limit has come: with a limit of at least HEAD bytes, all of the head is there whatever the
        // chunking. (Below that no QMP session gets past its greeting anyway.)
        let mut head = [0u8; HEAD];
        let from_partial = self.partial.len().min(head.len());
        head[..from_partial].copy_from_slice(&self.partial[..from_partial]);
        let from_recent = recent.len().min(head.len() - from_partial);
        head[from_partial..from_partial + from_recent].copy_from_slice(&recent[..from_recent]);
        self.discarding_reply = self.max_message_size >= HEAD && begins_as_reply(&head[..from_partial + from_recent]);
        self.tail.clear();
        push_tail(&mut self.tail, &self.partial);
        push_tail(&mut self.tail, recent);
        self.drop_partial();
    }

    /// Empties the buffer of an unfinished value that will not be a message, freeing it if it is big.
    fn drop_partial(&mut self) {
        if self.partial.capacity() > KEEP_CAPACITY {
            self.partial = BytesMut::new();
        } else {
            self.partial.clear();
        }
    }

    /// Keeps the unfinished tail `input[start..end]` for the next call (or only counts it, when discarding).
    fn keep(&mut self, input: &[u8], start: usize, end: usize) {
        self.value_len += (end - start) as u64;
        if self.discarding {
            push_tail(&mut self.tail, &input[start..end]);
        } else if self.value_len > self.max_message_size as u64 {
            self.begin_discard(&input[start..end]);
        } else {
            self.partial.extend_from_slice(&input[start..end]);
        }
    }
}

/// Whether a value starts with `{` and a `"return"` or `"error"` key (whitespace aside).
fn begins_as_reply(head: &[u8]) -> bool {
    let skip = |s: &[u8]| -> usize { s.iter().position(|b| !b" \t\r\n".contains(b)).unwrap_or(s.len()) };
    let Some(rest) = head[skip(head)..].strip_prefix(b"{") else {
        return false;
    };
    let rest = &rest[skip(rest)..];
    rest.starts_with(b"\"return\"") || rest.starts_with(b"\"error\"")
}

/// Appends `bytes` to `tail`, keeping only the last [`TAIL`] bytes.
fn push_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[bytes.len().saturating_sub(TAIL)..];
    let excess = (tail.len() + bytes.len()).saturating_sub(TAIL);
    tail.drain(..excess.min(tail.len()));
    tail.extend_from_slice(bytes);
}

/// The id of a value that ends with `, "id": N }` (or `{ "id": N }`), N a non-negative integer.
///
/// The last byte is the top-level `}` and the byte before it (spaces aside) is a digit, which cannot end a
/// string or a nested value: so N is a member of the top-level object, and so is the key `"id"` before it.
fn trailing_id(tail: &[u8]) -> Option<u64> {
    fn trim_end(s: &[u8]) -> &[u8] {
        let n = s.iter().rposition(|b| !b" \t\r\n".contains(b)).map_or(0, |p| p + 1);
        &s[..n]
    }
    let s = trim_end(tail).strip_suffix(b"}")?;
    let s = trim_end(s);
    let digits = s.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (s, number) = s.split_at(s.len() - digits);
    let s = trim_end(trim_end(s).strip_suffix(b":")?).strip_suffix(b"\"id\"")?;
    if !matches!(trim_end(s).last(), Some(b',' | b'{')) {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// A copy of a message as `Bytes`. One up to 1 KiB (a reply such as `query-version`'s, most events) is
/// stored inline in the allocation that also holds the reference count, in the smallest of a few sizes that
/// fits: one allocation instead of two (the copy, then the count, allocated when classification takes the
/// first slice of it). Longer ones are copied into a buffer of their own.
fn copy(message: &[u8]) -> Bytes {
    match message.len() {
        0..=62 => inline::<62>(message),
        63..=126 => inline::<126>(message),
        127..=254 => inline::<254>(message),
        255..=510 => inline::<510>(message),
        511..=1022 => inline::<1022>(message),
        _ => Bytes::copy_from_slice(message),
    }
}

/// `message` (at most `N` bytes) copied into an [`Inline`] that owns its `Bytes`.
fn inline<const N: usize>(message: &[u8]) -> Bytes {
    let mut bytes = [0; N];
    bytes[..message.len()].copy_from_slice(message);
    let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
    Bytes::from_owner(Inline { len, bytes })
}

/// A short message, owner of its `Bytes` (`N` + 2 bytes: 64 to 1 KiB).
struct Inline<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(N)]
    }
}

/// Bytes scanned at once by the block scanner.
const BLOCK: usize = 64;

/// The fewest bytes left in an input that the block scanner takes (as a block padded with spaces) rather than
/// the bytewise one.
const TAIL_BLOCK: usize = 16;

/// A long value is moved into the buffer every this many bytes scanned (see [`Framer::flush`]): small enough
/// for them to be still in the cache (L1 or L2). Unit tests and fuzzing (whose inputs are at most 1 KiB) use
/// a small value, so that the moves happen in the inputs they try (`cargo fuzz` sets `--cfg fuzzing`).
#[allow(unexpected_cfgs)]
const FLUSH: usize = if cfg!(any(test, fuzzing)) { 256 } else { 32 * 1024 };

/// What the block scanner needs of most blocks: where their quotes and brackets are (bit k stands for byte k),
/// and how many of the brackets open and how many close.
struct Masks {
    quote: u64,
    bracket: u64,
    opens: u32,
    closes: u32,
}

/// The masks of `block` (BLOCK bytes), or `None` when it holds a backslash or 0xFF. With `COUNT` false the
/// brackets are not counted (0): for a block whose brackets are walked.
#[inline]
fn block_masks<const COUNT: bool>(block: &[u8; BLOCK]) -> Option<Masks> {
    // One byte (0 or 1) per input byte and class, byte counts, and one test of the whole block for the bytes
    // that need the bytewise scanner: a loop the compiler turns into vector comparisons and sums. Which
    // brackets open is not gathered: where it matters (`depth_falls`), the byte of each bracket tells.
    let mut quote = [0u8; BLOCK];
    let mut bracket = [0u8; BLOCK];
    let (mut opens, mut closes) = (0u8, 0u8);
    let mut special = 0u8;
    for (k, &b) in block.iter().enumerate() {
        let folded = b | 0x20; // '[' -> '{', ']' -> '}'
        let (open, close) = (u8::from(folded == b'{'), u8::from(folded == b'}'));
        quote[k] = u8::from(b == b'"');
        bracket[k] = open | close;
        if COUNT {
            opens += open;
            closes += close;
        }
        // A `u8` and `|`: a `bool` and `||` here kept the loop from being vectorized (4x slower).
        special |= u8::from(b == b'\\') | u8::from(b == 0xFF);
    }
    if special != 0 {
        return None;
    }
    Some(Masks { quote: gather(&quote), bracket: gather(&bracket), opens: opens.into(), closes: closes.into() })
}

/// The bits of `flags` (bytes 0 or 1): bit k is `flags[k]`. One multiplication per 8 bytes moves their low
/// bits to the top byte of the product, in order (the products of the other bits stay below it).
#[inline]
fn gather(flags: &[u8; BLOCK]) -> u64 {
    let mut bits = 0u64;
    for word in flags.chunks_exact(8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let top = u64::from_le_bytes(bytes).wrapping_mul(0x0102_0408_1020_4080) & 0xFF00_0000_0000_0000;
        bits = (bits >> 8) | top;
    }
    bits
}

/// Bit k of the result is the parity of bits 0..=k of `x`.
#[inline]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Given the brackets of a block outside strings (bit k: `bytes[k]`, an opening or closing bracket) and the
/// depth before the block: `Ok(k)` when the closing bracket at byte k brings the depth to 0 (the first one that
/// does), else `Err(depth after the block)`; and, when `to_one` asks for it, the first closing bracket before
/// that which brings the depth to 1.
///
/// The brackets are visited one by one, lowest bit first (a trailing-zero count each, one instruction on every
/// x86_64), and each one's byte tells whether it opens: this block is here because the depth may fall far
/// enough, and blocks that reach here hold few brackets, while a mask of the opening ones would cost a gather
/// and counting bits without `popcnt` costs a dozen instructions a count.
#[inline]
fn depth_falls(brackets: u64, bytes: &[u8], mut depth: u32, to_one: bool) -> (Option<usize>, Result<usize, u32>) {
    let mut one = None;
    let mut rest = brackets;
    while rest != 0 {
        let k = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        // '{' and '[' (0x7B, 0x5B) open, '}' and ']' (0x7D, 0x5D) close: bit 1 tells them apart.
        if bytes.get(k).is_some_and(|&b| b & 2 != 0) {
            depth += 1;
            continue;
        }
        depth -= 1;
        if depth == 0 {
            return (one, Ok(k));
        }
        if depth == 1 && to_one && one.is_none() {
            one = Some(k);
        }
    }
    (one, Err(depth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |fr| out.push(fr));
        }
        out
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn crlf_lf_and_pretty() {
        let input = b"{\"a\": 1}\r\n{\"b\": \"}\"}\n{\r\n    \"return\": {\r\n    }\r\n}\r\n";
        assert_eq!(
            frames(1024, &[input]),
            vec![msg("{\"a\": 1}"), msg("{\"b\": \"}\"}"), msg("{\r\n    \"return\": {\r\n    }\r\n}")]
        );
    }

    #[test]
    fn escapes_and_nested_brackets_in_strings() {
        let input = br#"{"a": "x\"}{[\\", "b": [1, {"c": "]"}]}"#;
        assert_eq!(frames(1024, &[input]), vec![msg(std::str::from_utf8(input).unwrap())]);
    }

    #[test]
    fn delimiter_and_truncation() {
        let out = frames(1024, &[b"\xff{\"return\": 1}\n{\"x\": \xff{}"]);
        assert_eq!(
            out,
            vec![Frame::Delimiter, msg("{\"return\": 1}"), Frame::Truncated { len: 6 }, Frame::Delimiter, msg("{}")]
        );
    }

    #[test]
    fn garbage_tokens_are_framed() {
        let out = frames(1024, &[b"garbage{} 12 \"s\" }"]);
        assert_eq!(out, vec![msg("garbage"), msg("{}"), msg("12"), msg("\"s\"")]);
        // The trailing "}" token has no terminator yet: it waits, like QEMU's lexer.
    }

    #[test]
    fn oversized_is_skipped_and_the_next_message_survives() {
        let big = format!("{{\"return\": \"{}\"}}", "x".repeat(100));
        let input = format!("{big}\r\n{{\"return\": 2}}\r\n");
        for chunk in [1usize, 3, 7, 1000] {
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(chunk).collect();
            let mut f = Framer::new(50);
            let mut out = Vec::new();
            for c in chunks {
                f.feed(c, |fr| out.push(fr));
                assert!(f.buffered() <= 50);
            }
            assert_eq!(out, vec![Frame::Oversized { len: big.len() as u64, id: None }, msg("{\"return\": 2}")]);
        }
    }

    #[test]
    fn oversized_reply_keeps_its_trailing_id() {
        let big = format!("{{\"return\": \"{}\", \"id\": 42}}", "x".repeat(200));
        let tricky = format!("{{\"return\": {{\"id\": 7}}, \"x\": \"{}\"}}", "y".repeat(200));
        let input = format!("{big}\r\n{tricky}\r\n");
        for chunk in [1usize, 5, 64, 10_000] {
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(chunk).collect();
            assert_eq!(
                frames(100, &chunks),
                vec![
                    Frame::Oversized { len: big.len() as u64, id: Some(42) },
                    Frame::Oversized { len: tricky.len() as u64, id: None }
                ],
                "chunk {chunk}"
            );
        }
        assert_eq!(trailing_id(b"{\"id\": 3}"), Some(3));
        assert!(begins_as_reply(b"{\"return\": 1"));
        assert!(begins_as_reply(b" {\r\n    \"error\": {"));
        assert!(!begins_as_reply(b"{\"timestamp\": {"));
        assert!(!begins_as_reply(b"{\"retu"));
        assert_eq!(trailing_id(b"x\\\"id\": 3}"), None);
        assert_eq!(trailing_id(b"[1, {\"id\": 3}}"), None);
        assert_eq!(trailing_id(b", \"id\": \"3\"}"), None);
    }

    #[test]
    fn oversized_frames_tell_replies_from_events() {
        let reply = format!("{{\"return\": \"{}\"}}", "x".repeat(200));
        let event = format!("{{\"timestamp\": {{}}, \"event\": \"X\", \"data\": \"{}\"}}", "y".repeat(200));
        let small = "{\"return\": {}}";
        let input = format!("{reply}\r\n{event}\r\n{small}\r\n");
        for chunk in [1usize, 5, 64, 10_000] {
            let mut f = Framer::new(100);
            let mut seen = Vec::new();
            for c in input.as_bytes().chunks(chunk) {
                f.feed_framed(c, |frame, layout| {
                    seen.push((matches!(frame, Frame::Oversized { .. }), layout.begins_as_reply()))
                });
            }
            assert_eq!(seen, vec![(true, true), (true, false), (false, false)], "chunk {chunk}");
        }
    }

    /// The block scanner (inputs of 64 bytes and more) frames exactly as the bytewise one (inputs fed a byte at
    /// a time), layouts included, whatever the split, limit and content: brackets in strings, escapes, 0xFF,
    /// garbage, nesting.
    #[test]
    fn blocks_match_bytewise() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let pieces: [&[u8]; 16] = [
            b"{", b"}", b"[", b"]", b"\"", b"\\", b" ", b"\r\n", b",", b": ", b"abc", b"12", b"\xff",
            b"{\"return\": {}, \"id\": 12}\r\n",
            b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\", \"data\": {\"a\": [1, \"]}\"]}}\n",
            b"{\"return\": [{\"name\": \"x\", \"members\": [{\"name\": \"}]\", \"type\": \"str\"}]}], \"id\": 3}",
        ];
        for round in 0..400 {
            let mut input = Vec::new();
            while input.len() < next(900) {
                let piece = pieces[next(pieces.len())];
                // Most rounds without backslashes and 0xFF, so that whole blocks are scanned.
                if round % 3 != 0 && (piece == b"\\" || piece == b"\xff") {
                    continue;
                }
                input.extend_from_slice(piece);
            }
            for max in [2000, 100, 40] {
                let bytewise: Vec<&[u8]> = input.chunks(1).collect();
                let run = |chunks: &[&[u8]]| {
                    let mut f = Framer::new(max);
                    let mut out = Vec::new();
                    for c in chunks {
                        f.feed_framed(c, |fr, layout| out.push((fr, layout)));
                    }
                    (out, f.in_message(), f.buffered(), f.message_len())
                };
                let want = run(&bytewise);
                // Whole, one block, and sizes that leave 1, 33, 16, 63 and 8 bytes after their last whole block
                // (an input's last 16 to 63 bytes are scanned as the block that ends it).
                let size = [input.len().max(1), 64, 65, 97, 80, 127, 200][round % 7];
                let chunks: Vec<&[u8]> = input.chunks(size).collect();
                assert_eq!(run(&chunks), want, "round {round}, max {max}, chunks of {size}");
            }
        }
    }

    /// The buffer starts unallocated, grows for a big message split across calls, and leaves with it; after
    /// a truncated or oversized one it is given back too.
    #[test]
    fn buffer_starts_empty_and_a_big_one_leaves_with_its_message() {
        let mut f = Framer::new(16 << 20);
        assert_eq!(f.capacity(), 0);
        f.feed(b"{\"return\": 1}\r\n", |_| {});
        assert_eq!(f.capacity(), 0, "a message within one call needs no buffer");
        let big = format!("{{\"return\": \"{}\", \"id\": 1}}\r\n{{\"retu", "x".repeat(9 << 20));
        let mut out = Vec::new();
        let mut peak = 0;
        for chunk in big.as_bytes().chunks(65_536) {
            f.feed(chunk, |fr| out.push(fr));
            peak = peak.max(f.capacity());
        }
        assert!(peak >= 9 << 20, "{peak}");
        assert!(matches!(&out[..], [Frame::Message(m)] if m.len() == big.len() - 8), "{}", out.len());
        assert!(f.capacity() < KEEP_CAPACITY, "{} kept after the big message", f.capacity());
        assert_eq!(f.buffered(), 6, "the next message's start");
        f.feed(b"rn\": 2}", |fr| out.push(fr));
        assert_eq!(out.last(), Some(&msg("{\"return\": 2}")));
        // Small messages split across calls reuse a small buffer.
        for _ in 0..100 {
            f.feed(b"{\"return\":", |_| {});
            f.feed(b" 3}", |_| {});
            assert!(f.capacity() <= KEEP_CAPACITY);
        }
        // A big value cut short by 0xFF, or over the limit, gives its buffer back too.
        let mut f = Framer::new(1 << 20);
        let half = format!("{{\"return\": \"{}", "y".repeat(200_000));
        for chunk in half.as_bytes().chunks(4096) {
            f.feed(chunk, |_| {});
        }
        assert!(f.capacity() > KEEP_CAPACITY);
        f.feed(b"\xff", |_| {});
        assert!(f.capacity() <= KEEP_CAPACITY, "{} after truncation", f.capacity());
        let mut f = Framer::new(100_000);
        for chunk in half.as_bytes().chunks(4096) {
            f.feed(chunk, |_| {});
        }
        assert!(f.capacity() <= KEEP_CAPACITY, "{} while discarding", f.capacity());
    }

    /// Values longer than [`FLUSH`], moved into the buffer as they are scanned, frame exactly as fed a byte
    /// at a time, with every limit around their lengths and the flush points (the limit crossed inside a
    /// flush, at one, at the end): the same messages, the exact lengths of oversized ones with their trailing
    /// ids, never more than the limit buffered.
    #[test]
    fn long_values_match_bytewise() {
        let entry = |k: usize| format!("{{\"name\": \"n{k}\", \"s\": \"]}}[{{\", \"v\": [1, {k}, {{}}]}}");
        let long = |n: usize, id: usize| {
            let entries: Vec<String> = (0..n).map(entry).collect();
            format!("{{\"return\": [{}], \"id\": {id}}}", entries.join(", "))
        };
        let (a, b) = (long(60, 7), long(25, 8));
        assert!(a.len() > 4 * FLUSH && b.len() > 2 * FLUSH, "{} {}", a.len(), b.len());
        // A backslash in the middle of the second sends a block bytewise, between flushes.
        let b = b.replacen("n12", "n\\\"12", 1);
        let input = format!("{a}\r\n{{\"return\": {{}}, \"id\": 1}}\r\n{b}\r\n {{\"event\": \"E\"}}");
        let input = input.as_bytes();
        let run = |max: usize, chunks: &[&[u8]]| {
            let mut f = Framer::new(max);
            let mut out = Vec::new();
            for c in chunks {
                f.feed(c, |fr| out.push(fr));
                assert!(f.buffered() <= max, "{} buffered, limit {max}", f.buffered());
                // At most one doubling past the limit: what `flush` reserves is bounded by it.
                assert!(f.capacity() <= 2 * max.max(KEEP_CAPACITY), "{} of buffer, limit {max}", f.capacity());
            }
            (out, f.in_message())
        };
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        for max in [input.len(), a.len(), a.len() - 1, b.len(), FLUSH, FLUSH + 64, 2 * FLUSH + 1, 100] {
            let want = run(max, &bytewise);
            let oversized = want.0.iter().filter(|f| matches!(f, Frame::Oversized { .. })).count();
            assert_eq!(oversized, usize::from(a.len() > max) + usize::from(b.len() > max), "limit {max}");
            if a.len() > max {
                assert_eq!(want.0[0], Frame::Oversized { len: a.len() as u64, id: Some(7) });
            }
            for size in [input.len(), 1024, 700, 97] {
                let chunks: Vec<&[u8]> = input.chunks(size).collect();
                assert_eq!(run(max, &chunks), want, "limit {max}, chunks of {size}");
            }
        }
    }

    /// A long message moved into the buffer while later input follows it in the same call: the buffer
    /// reserved for the rest of the input does not stay with the message, nor with the framer.
    #[test]
    fn a_long_message_does_not_keep_what_was_reserved_for_the_rest() {
        let long = format!("{{\"return\": \"{}\"}}", "x".repeat(3 * FLUSH));
        let small = "{\"return\": {}, \"id\": 1}\r\n".repeat(3000);
        let input = format!("{long}\r\n{small}");
        let mut f = Framer::new(16 << 20);
        let mut out = Vec::new();
        f.feed(input.as_bytes(), |fr| out.push(fr));
        assert_eq!(out.len(), 3001);
        assert_eq!(out[0], msg(&long));
        let Frame::Message(first) = out.swap_remove(0) else { unreachable!() };
        let capacity = first.try_into_mut().expect("the only reference to the message").capacity();
        assert!(capacity < 2 * long.len(), "the message holds {capacity} bytes for {}", long.len());
        assert_eq!(f.capacity(), 0);
    }

    /// Brackets inside strings, deep in a value, in blocks the scanner takes whole: they do not count, however
    /// many there are (the fast path counts the brackets of a block only when none is inside a string).
    #[test]
    fn brackets_in_strings_deep_in_long_values_do_not_count() {
        for filler in ["}", "]", "{", "[", "}]{[", " "] {
            let s = filler.repeat(200);
            let deep = format!("{{\"return\": [[[[{{\"a\": \"{s}\", \"b\": [\"{s}\", {{}}]}}]]]], \"id\": 9}}");
            let input = format!("{deep}\r\n{deep}\n{{\"return\": {{}}}}");
            let bytewise: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
            let want = frames(1 << 20, &bytewise);
            assert_eq!(want, vec![msg(&deep), msg(&deep), msg("{\"return\": {}}")], "{filler}");
            for size in [input.len(), 64, 100] {
                let chunks: Vec<&[u8]> = input.as_bytes().chunks(size).collect();
                assert_eq!(frames(1 << 20, &chunks), want, "{filler}, chunks of {size}");
            }
        }
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let input: &[u8] = b" {\"a\":[1,2,{\"b\":\"\\\\\"}]}\r\n\xff{\"c\":\"\\u00e9\"}\ninf {\"d\":inf}";
        let whole = frames(1024, &[input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(1024, &bytes), whole);
    }

    /// Every message's layout is the first nested value's end, whatever the chunking: through the block
    /// scanner (long runs), the bytewise one (blocks with backslashes, the last bytes), messages that start in
    /// the block where the previous one ended, and values split across calls.
    #[test]
    fn layout_is_the_first_nested_end_whatever_the_chunking() {
        let pad = "x".repeat(150);
        let input = format!(
            "{{\"return\": [{{\"a\": \"{pad}\"}}, [1, [2]], {{}}], \"id\": 3}}\r\n\
             {{\"id\": 1, \"return\": {{}}}}\r\n{{\"return\": \"]}}{pad}\", \"id\": 4}}\r\n\
             {{\"timestamp\": {{\"seconds\": 1, \"microseconds\": 2}}, \"event\": \"E\", \"data\": {{\"s\": \"\\\"}}\"}}}}\r\n\
             {{\"return\": [\"\\\\\", {{\"b\": [{pad:?}]}}], \"id\": 5}}{{\"return\": [[]]}}[[1], 2]\"{pad}\" {{}}"
        );
        let input = input.as_bytes();
        let collect = |chunk: usize| {
            let mut f = Framer::new(1 << 20);
            let mut out = Vec::new();
            for piece in input.chunks(chunk) {
                f.feed_framed(piece, |frame, layout| out.push((frame, layout.first_nested_end())));
            }
            out
        };
        let whole = collect(input.len());
        // Counted by hand (the fuzz target framer_vs_serde checks every message against a bytewise scan).
        let want = [Some(186), Some(22), None, Some(47), Some(180), Some(15), Some(4), None, None];
        assert_eq!(whole.iter().map(|(_, end)| *end).collect::<Vec<_>>(), want, "{whole:?}");
        // What follows each end, from its closing bracket on.
        let rest = ["], \"id\": 3}", "}}", "", "}, \"event\"", "], \"id\": 5}", "]}", "], 2]"];
        for ((frame, end), rest) in whole.iter().zip(rest) {
            let Frame::Message(m) = frame else { panic!("{frame:?}") };
            if let Some(end) = end {
                assert!(m[end - 1..].starts_with(rest.as_bytes()), "{}", String::from_utf8_lossy(m));
            }
        }
        for chunk in [1, 2, 7, 63, 64, 65, 100] {
            assert_eq!(collect(chunk), whole, "chunks of {chunk}");
        }
    }
}
