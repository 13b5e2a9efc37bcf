//! [`ShortBytes`]: a byte string kept inline when it is short, so that the short texts the server keeps per
//! member or per command (QMP's keys: `execute`, `arguments`, `node-name`; names; ids such as `7`, kept again
//! until the reply echoes them) cost no allocation.

use super::response::Id;

/// Bytes kept inline.
const INLINE: usize = 22;

/// A byte string: up to 22 bytes inline, longer ones on the heap.
#[derive(Clone)]
pub(crate) enum ShortBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl ShortBytes {
    pub(crate) fn new(text: &[u8]) -> ShortBytes {
        if text.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..text.len()].copy_from_slice(text);
            ShortBytes::Inline { len: text.len() as u8, bytes }
        } else {
            ShortBytes::Heap(text.into())
        }
    }

    /// `text[start..end]`, copied as a fixed-size block when `text` has [`INLINE`] bytes from `start` (no
    /// call to copy a variable length; the bytes past `end` kept with it are never read).
    pub(crate) fn from_range(text: &[u8], start: usize, end: usize) -> ShortBytes {
        let len = end - start;
        match text.get(start..start + INLINE) {
            Some(window) if len <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes.copy_from_slice(window);
                ShortBytes::Inline { len: len as u8, bytes }
            }
            _ => ShortBytes::new(&text[start..end]),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            ShortBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            ShortBytes::Heap(bytes) => bytes,
        }
    }
}

impl Id for &ShortBytes {
    fn append_to(&self, out: &mut Vec<u8>) {
        match self {
            ShortBytes::Inline { len, bytes } => {
                // The whole block, then the bytes past the text cut: a copy of a fixed size (no call to copy a
                // run-time length).
                let end = out.len() + usize::from(*len);
                out.extend_from_slice(bytes);
                out.truncate(end);
            }
            ShortBytes::Heap(bytes) => out.extend_from_slice(bytes),
        }
    }
}

impl PartialEq for ShortBytes {
    fn eq(&self, other: &ShortBytes) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl std::fmt::Debug for ShortBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_texts_read_back() {
        for len in [0, 1, INLINE, INLINE + 1, 1000] {
            let text: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let kept = ShortBytes::new(&text);
            assert_eq!(kept.as_bytes(), &text[..]);
            assert_eq!(matches!(kept, ShortBytes::Inline { .. }), len <= INLINE);
            let padded = [b"x".as_slice(), &text, &[7; 40]].concat();
            let from_range = ShortBytes::from_range(&padded, 1, 1 + len);
            assert_eq!(from_range.as_bytes(), &text[..]);
            assert_eq!(from_range, kept);
            assert_eq!(ShortBytes::from_range(&text, 0, len), kept, "without bytes to spare");
            let mut written = b"{".to_vec();
            (&from_range).append_to(&mut written);
            assert_eq!(written, [b"{".as_slice(), &text].concat(), "written back whole, nothing past it");
        }
    }
}
