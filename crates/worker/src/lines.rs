//! Turns the engine's output chunks into lines: a chunk may hold several
//! lines or end mid-line, and a line may span chunks.

/// Longest line kept whole; longer output is cut into pieces of this size so
/// a program that never prints a newline cannot grow the buffer unbounded.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Bytes of one stream not yet ended by a newline.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Adds `chunk` and calls `emit` with each line it completes (without the
    /// newline; invalid UTF-8 replaced).
    pub(crate) fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(String)) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&rest[..i]);
            emit(self.take());
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
        while self.pending.len() >= MAX_LINE {
            let tail = self.pending.split_off(MAX_LINE);
            emit(self.take());
            self.pending = tail;
        }
    }

    /// Emits the unterminated last line, if any.
    pub(crate) fn flush(&mut self, mut emit: impl FnMut(String)) {
        if !self.pending.is_empty() {
            emit(self.take());
        }
    }

    fn take(&mut self) -> String {
        let bytes = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<String> {
        let mut buf = LineBuffer::default();
        let mut out = Vec::new();
        for c in chunks {
            buf.push(c, |l| out.push(l));
        }
        buf.flush(|l| out.push(l));
        out
    }

    #[test]
    fn splits_and_joins_chunks() {
        assert_eq!(run(&[b"a\nb", b"c\n", b"\n", b"d"]), ["a", "bc", "", "d"]);
        assert_eq!(run(&[b"x\n"]), ["x"]);
        assert!(run(&[b""]).is_empty());
    }

    #[test]
    fn keeps_multibyte_characters_across_chunks() {
        let s = "é\n".as_bytes();
        assert_eq!(run(&[&s[..1], &s[1..]]), ["é"]);
    }

    #[test]
    fn cuts_endless_lines() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let out = run(&[&long]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(out[2].len(), 5);
    }
}
