//! How much of a task's stdout and stderr was printed, by offset: a chunk seen again (the same
//! output from a new leader after a failover, or an agent's replay) prints only what is new, so
//! every byte is printed once.

use skiff_proto as pb;

#[derive(Debug, Default)]
pub struct Printed {
    /// Bytes printed of stdout and of stderr.
    end: [u64; 2],
}

impl Printed {
    /// The part of `chunk` not printed yet (all of it when it carries no offset).
    pub fn fresh<'a>(&mut self, chunk: &'a pb::TaskOutput) -> &'a [u8] {
        let i = usize::from(chunk.stream == pb::OutputStream::Stderr as i32);
        let Some(offset) = chunk.offset else {
            self.end[i] += chunk.data.len() as u64;
            return &chunk.data;
        };
        let end = offset + chunk.data.len() as u64;
        if end <= self.end[i] {
            return &[];
        }
        let skip = self.end[i].saturating_sub(offset) as usize;
        self.end[i] = end;
        &chunk.data[skip..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, data: &[u8]) -> pb::TaskOutput {
        pb::TaskOutput { data: data.to_vec(), offset: Some(offset), ..Default::default() }
    }

    #[test]
    fn every_byte_once() {
        let mut printed = Printed::default();
        assert_eq!(printed.fresh(&chunk(0, b"abc")), b"abc");
        assert_eq!(printed.fresh(&chunk(0, b"abc")), b"", "seen again");
        assert_eq!(printed.fresh(&chunk(2, b"cdef")), b"def", "overlapping");
        let err = pb::TaskOutput { stream: pb::OutputStream::Stderr as i32, ..chunk(0, b"x") };
        assert_eq!(printed.fresh(&err), b"x", "streams are apart");
        assert_eq!(printed.fresh(&chunk(10, b"k")), b"k", "after a gap: what there is");
    }
}
