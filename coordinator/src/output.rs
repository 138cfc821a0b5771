//! Task output as agents send it: which part of a chunk is new.
//!
//! Chunks carry their byte offset in the stream. An agent's executor process sends again what its
//! agent had not acknowledged when that agent restarted, so a chunk may arrive twice, or overlap
//! what was published; only the bytes past what was published go on. A chunk starting past it
//! means bytes were lost (an agent that crashed holding chunks it had acknowledged): what arrived
//! goes on, and the gap is reported (by the leader that launched the task, or one that published
//! part of the stream: a leader that took over midway has not seen its start). Chunks without an
//! offset (older agents) go on as they come.

use skiff_proto as pb;

/// How much of each of a task's streams was published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    stdout: Stream,
    stderr: Stream,
    /// This leader launched the task: it has seen each stream from its start.
    from_start: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Stream {
    /// Bytes published (the offset the next new byte has).
    end: u64,
    /// The truncation mark was published: nothing follows it.
    truncated: bool,
}

/// What to do with a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Fresh {
    /// Publish it (perhaps trimmed to its new part).
    New(pb::TaskOutput),
    /// Publish it; `missing` bytes before it never arrived.
    AfterGap { chunk: pb::TaskOutput, missing: u64 },
    /// Seen already: drop it.
    Duplicate,
    /// Its offset and length pass the largest offset there is: drop it.
    Invalid(pb::TaskOutput),
}

impl Published {
    /// Of a task this leader launched (default: one it took over, its output begun elsewhere).
    pub fn from_start() -> Self {
        Self { from_start: true, ..Self::default() }
    }

    /// Decides on `chunk` and counts it as published unless it is a duplicate.
    pub fn fresh(&mut self, mut chunk: pb::TaskOutput) -> Fresh {
        let from_start = self.from_start;
        let stream = match chunk.stream() {
            pb::OutputStream::Stderr => &mut self.stderr,
            _ => &mut self.stdout,
        };
        let Some(offset) = chunk.offset else {
            return Fresh::New(chunk);
        };
        if stream.truncated {
            return Fresh::Duplicate;
        }
        let Some(end) = offset.checked_add(chunk.data.len() as u64) else {
            return Fresh::Invalid(chunk);
        };
        // New bytes, or the truncation mark (not published yet: checked above).
        if end <= stream.end && !(chunk.truncated && end == stream.end) {
            return Fresh::Duplicate;
        }
        // A leader that took over midway has not seen the start: nothing is missing before its first chunk.
        let missing = if from_start || stream.end > 0 { offset.saturating_sub(stream.end) } else { 0 };
        if offset < stream.end {
            let seen = (stream.end - offset) as usize;
            chunk.data.drain(..seen.min(chunk.data.len()));
            chunk.offset = Some(stream.end);
        }
        stream.end = stream.end.max(end);
        stream.truncated = chunk.truncated;
        if missing > 0 { Fresh::AfterGap { chunk, missing } } else { Fresh::New(chunk) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: pb::OutputStream, offset: Option<u64>, data: &str, truncated: bool) -> pb::TaskOutput {
        pb::TaskOutput { task_id: "t".into(), stream: stream as i32, data: data.as_bytes().to_vec(), truncated, offset }
    }

    fn out(offset: u64, data: &str) -> pb::TaskOutput {
        chunk(pb::OutputStream::Stdout, Some(offset), data, false)
    }

    #[test]
    fn only_new_bytes_go_on() {
        use pb::OutputStream::{Stderr, Stdout};
        // (chunks in arrival order, what is published of each: None = dropped, Some((offset, data, missing)))
        type Want = Option<(u64, &'static str, u64)>;
        let cases: Vec<(&str, Vec<pb::TaskOutput>, Vec<Want>)> = vec![
            ("in order", vec![out(0, "ab"), out(2, "cd")], vec![Some((0, "ab", 0)), Some((2, "cd", 0))]),
            (
                "replayed whole",
                vec![out(0, "ab"), out(2, "cd"), out(2, "cd")],
                vec![Some((0, "ab", 0)), Some((2, "cd", 0)), None],
            ),
            (
                "replayed from the start",
                vec![out(0, "ab"), out(2, "cd"), out(0, "ab"), out(2, "cd"), out(4, "e")],
                vec![Some((0, "ab", 0)), Some((2, "cd", 0)), None, None, Some((4, "e", 0))],
            ),
            ("overlapping", vec![out(0, "abc"), out(2, "cde")], vec![Some((0, "abc", 0)), Some((3, "de", 0))]),
            ("a gap", vec![out(0, "ab"), out(5, "fg")], vec![Some((0, "ab", 0)), Some((5, "fg", 3))]),
            ("taken over midway", vec![out(4, "ef"), out(6, "g")], vec![Some((4, "ef", 0)), Some((6, "g", 0))]),
            (
                "streams apart",
                vec![out(0, "ab"), chunk(Stderr, Some(0), "ab", false)],
                vec![Some((0, "ab", 0)), Some((0, "ab", 0))],
            ),
            (
                "an older agent's chunks",
                vec![chunk(Stdout, None, "ab", false), chunk(Stdout, None, "ab", false)],
                vec![Some((0, "ab", 0)), Some((0, "ab", 0))],
            ),
        ];
        for (name, chunks, want) in cases {
            let mut published = Published::default();
            let got: Vec<Want> = chunks
                .into_iter()
                .map(|c| match published.fresh(c) {
                    Fresh::New(c) => {
                        Some((c.offset.unwrap_or(0), String::from_utf8(c.data).unwrap().leak() as &str, 0))
                    }
                    Fresh::AfterGap { chunk: c, missing } => {
                        Some((c.offset.unwrap_or(0), String::from_utf8(c.data).unwrap().leak() as &str, missing))
                    }
                    Fresh::Duplicate | Fresh::Invalid(_) => None,
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn the_launching_leader_sees_a_gap_at_the_start() {
        let mut published = Published::from_start();
        assert!(matches!(published.fresh(out(3, "d")), Fresh::AfterGap { missing: 3, .. }));
        let mut taken_over = Published::default();
        assert!(matches!(taken_over.fresh(out(3, "d")), Fresh::New(_)));
    }

    #[test]
    fn an_offset_past_the_end_of_numbers_is_dropped() {
        let mut published = Published::default();
        assert!(matches!(published.fresh(out(u64::MAX, "ab")), Fresh::Invalid(_)));
        assert!(matches!(published.fresh(out(0, "ab")), Fresh::New(_)));
    }

    #[test]
    fn the_truncation_mark_goes_on_once() {
        let mut published = Published::default();
        assert!(matches!(published.fresh(out(0, "ab")), Fresh::New(_)));
        let mark = chunk(pb::OutputStream::Stdout, Some(2), "", true);
        assert!(matches!(published.fresh(mark.clone()), Fresh::New(c) if c.truncated));
        assert_eq!(published.fresh(mark), Fresh::Duplicate);
        assert_eq!(published.fresh(out(0, "ab")), Fresh::Duplicate);
    }
}
