//! A task's stdout or stderr: streamed to the coordinator chunk by chunk, bounded.
//!
//! Each write becomes one [`TaskEvent::Output`]. Once `capacity` bytes have been written the rest
//! is dropped: the chunk that crossed the bound carries `truncated = true` and later writes are
//! discarded silently (the guest still sees them succeed, so it is never crashed by its own output).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use skiff_proto as pb;
use tokio::sync::mpsc;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::task::TaskEvent;

#[derive(Debug)]
struct Inner {
    task_id: String,
    stream: pb::OutputStream,
    events: mpsc::UnboundedSender<TaskEvent>,
    capacity: u64,
    state: Mutex<(u64, bool)>,
}

/// One output stream of one task. Cheap to clone; clones share the bound.
#[derive(Debug, Clone)]
pub struct OutputSink {
    inner: Arc<Inner>,
}

impl OutputSink {
    pub fn new(
        task_id: &str,
        stream: pb::OutputStream,
        capacity: u64,
        events: mpsc::UnboundedSender<TaskEvent>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                task_id: task_id.to_owned(),
                stream,
                events,
                capacity,
                state: Mutex::new((0, false)),
            }),
        }
    }

    /// Sends what fits of `data`; returns how many bytes were kept.
    pub fn push(&self, data: &[u8]) -> usize {
        let inner = &self.inner;
        // Sent under the lock: clones of a sink share it, and chunks must leave in offset order
        // (the coordinator drops a chunk whose bytes it has seen).
        let mut state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let (written, already_truncated) = &mut *state;
        if *already_truncated {
            return 0;
        }
        let room = inner.capacity.saturating_sub(*written);
        let keep = (data.len() as u64).min(room) as usize;
        let offset = *written;
        *written += keep as u64;
        let truncated = keep < data.len();
        *already_truncated = truncated;
        if keep > 0 || truncated {
            let _ = inner.events.send(TaskEvent::Output(pb::TaskOutput {
                task_id: inner.task_id.clone(),
                stream: inner.stream as i32,
                data: data[..keep].to_vec(),
                truncated,
                offset: Some(offset),
            }));
        }
        keep
    }

    /// Whether output was dropped because the bound was reached.
    pub fn truncated(&self) -> bool {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

impl IsTerminal for OutputSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for OutputSink {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: what does not fit is dropped, not blocked on.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputSink {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for OutputSink {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_flagged() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = OutputSink::new("t-1", pb::OutputStream::Stdout, 10, tx);
        assert_eq!(sink.push(b"hello "), 6);
        assert_eq!(sink.push(b"world!"), 4);
        assert_eq!(sink.push(b"more"), 0);
        assert!(sink.truncated());
        let mut chunks = Vec::new();
        while let Ok(TaskEvent::Output(o)) = rx.try_recv() {
            chunks.push((o.offset, o.data, o.truncated));
        }
        assert_eq!(chunks, vec![(Some(0), b"hello ".to_vec(), false), (Some(6), b"worl".to_vec(), true)]);
    }
}
