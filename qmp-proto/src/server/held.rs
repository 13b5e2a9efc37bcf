//! Input kept while the server does not read (QEMU stops reading a busy monitor): a byte buffer read from the
//! front. Appending copies once; reading from the front moves nothing until what was read is at least half
//! of the buffer, so every byte is moved a bounded number of times whatever the pieces.

/// Kept input. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Held {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already read.
    start: usize,
}

/// A buffer larger than this is freed once empty, not kept for the session's life.
const KEEP_CAPACITY: usize = 64 * 1024;

impl Held {
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes not read yet.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Marks `n` bytes at the front as read.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.buf.len() {
            self.clear();
        } else if self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    pub(crate) fn clear(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_from_the_front_in_order() {
        let mut held = Held::default();
        held.extend(b"abcdef");
        held.consume(2);
        assert_eq!(held.as_slice(), b"cdef");
        held.extend(b"gh");
        held.consume(3);
        assert_eq!(held.as_slice(), b"fgh");
        assert_eq!(held.len(), 3);
        held.consume(10);
        assert!(held.is_empty());
        held.extend(b"x");
        assert_eq!(held.as_slice(), b"x");
    }
}
