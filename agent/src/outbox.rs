//! The agent's outbox of status updates: every update sent and not acknowledged yet, in the order
//! the executor produced them. Each is sent again while the session lasts if no acknowledgement
//! came within its retry interval, which doubles from [`FIRST_RETRY`] up to [`MAX_RETRY`] (a
//! lost acknowledgement, or an update the coordinator could not persist); after a reconnect all of
//! them are sent again at once. Acknowledgements name the update id; one for an update the outbox
//! no longer holds (a duplicate) changes nothing, and the coordinator acknowledges duplicates it
//! gets without applying them twice. The updates' durability is the [`crate::updates`] log's job.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use skiff_proto as pb;
use tokio::time::Instant;

/// Wait before the first resend of an unacknowledged update (acks normally take milliseconds).
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between resends.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Pending {
    status: pb::TaskStatus,
    /// When it is due to be sent again (`None`: not sent in this session yet).
    due: Option<Instant>,
    attempts: u32,
}

/// Unacknowledged status updates, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Pending>,
    /// Update ids of what `queue` holds (acknowledged entries are removed lazily from the queue).
    live: HashSet<String>,
}

/// How long to wait after the `attempts`-th send.
pub fn retry_after(attempts: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(MAX_RETRY)
}

impl Outbox {
    /// An update about to be sent for the first time (or loaded from the log after a restart).
    pub fn push(&mut self, status: pb::TaskStatus) {
        self.live.insert(status.update_id.clone());
        self.queue.push_back(Pending { status, due: None, attempts: 0 });
    }

    /// An update sent now for the first time.
    pub fn push_sent(&mut self, status: pb::TaskStatus, now: Instant) {
        self.live.insert(status.update_id.clone());
        self.queue.push_back(Pending { status, due: Some(now + retry_after(1)), attempts: 1 });
    }

    /// Records a send of everything not sent in this session yet; returns it, oldest first.
    pub fn unsent(&mut self, now: Instant) -> Vec<pb::TaskStatus> {
        let mut out = Vec::new();
        for p in self.queue.iter_mut().filter(|p| p.due.is_none() && self.live.contains(&p.status.update_id)) {
            p.attempts += 1;
            p.due = Some(now + retry_after(p.attempts));
            out.push(p.status.clone());
        }
        out
    }

    /// A new session: everything is to be sent again, with fresh retry intervals.
    pub fn reconnected(&mut self) {
        for p in &mut self.queue {
            p.due = None;
            p.attempts = 0;
        }
    }

    /// The updates whose retry interval has passed, oldest first, recorded as sent again.
    pub fn due(&mut self, now: Instant) -> Vec<pb::TaskStatus> {
        let mut out = Vec::new();
        for p in &mut self.queue {
            if p.due.is_some_and(|d| d <= now) && self.live.contains(&p.status.update_id) {
                p.attempts += 1;
                p.due = Some(now + retry_after(p.attempts));
                out.push(p.status.clone());
            }
        }
        out
    }

    /// When the next resend is due (acknowledged entries have none).
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.iter().filter_map(|p| p.due).min()
    }

    /// An acknowledgement: the update is forgotten. False when it was not held (a duplicate ack).
    pub fn ack(&mut self, update_id: &str) -> bool {
        if !self.live.remove(update_id) {
            return false;
        }
        // Never due again (entries are mostly acknowledged near the front: a short search).
        if let Some(p) = self.queue.iter_mut().find(|p| p.status.update_id == update_id) {
            p.due = None;
        }
        // Acknowledgements mostly come in order: drop acknowledged entries from the front.
        while self.queue.front().is_some_and(|p| !self.live.contains(&p.status.update_id)) {
            self.queue.pop_front();
        }
        if self.queue.len() > 2 * self.live.len() + 64 {
            self.queue.retain(|p| self.live.contains(&p.status.update_id));
        }
        true
    }

    /// Updates not acknowledged yet.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str) -> pb::TaskStatus {
        pb::TaskStatus { task_id: format!("t-{id}"), update_id: id.into(), ..Default::default() }
    }

    fn ids(statuses: &[pb::TaskStatus]) -> Vec<&str> {
        statuses.iter().map(|s| s.update_id.as_str()).collect()
    }

    #[test]
    fn retry_intervals_double_up_to_the_cap() {
        let secs: Vec<u64> = (1..=7).map(|a| retry_after(a).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn unacknowledged_updates_are_resent_in_order_with_backoff() {
        let t0 = Instant::now();
        let mut outbox = Outbox::default();
        for id in ["u1", "u2", "u3"] {
            outbox.push(update(id));
        }
        assert_eq!(ids(&outbox.unsent(t0)), ["u1", "u2", "u3"]);
        assert!(outbox.unsent(t0).is_empty(), "sent once");
        assert!(outbox.ack("u2"));
        assert!(!outbox.ack("u2"), "a duplicate ack changes nothing");
        assert!(outbox.due(t0 + Duration::from_millis(1999)).is_empty());
        assert_eq!(outbox.next_due(), Some(t0 + FIRST_RETRY));
        // First retry after 2 s, the next 4 s after that, then 8 s.
        assert_eq!(ids(&outbox.due(t0 + FIRST_RETRY)), ["u1", "u3"]);
        let t1 = t0 + FIRST_RETRY;
        assert!(outbox.due(t1 + Duration::from_millis(3999)).is_empty());
        assert_eq!(ids(&outbox.due(t1 + Duration::from_secs(4))), ["u1", "u3"]);
        assert_eq!(outbox.next_due(), Some(t1 + Duration::from_secs(4 + 8)));
        assert!(outbox.ack("u1"));
        assert!(outbox.ack("u3"));
        assert!(outbox.is_empty());
        assert_eq!(outbox.next_due(), None);
    }

    #[test]
    fn a_reconnect_sends_everything_again_and_resets_backoff() {
        let t0 = Instant::now();
        let mut outbox = Outbox::default();
        outbox.push_sent(update("u1"), t0);
        assert_eq!(outbox.next_due(), Some(t0 + FIRST_RETRY));
        outbox.due(t0 + Duration::from_secs(60));
        outbox.reconnected();
        outbox.push(update("u2"));
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(ids(&outbox.unsent(t1)), ["u1", "u2"]);
        assert_eq!(outbox.next_due(), Some(t1 + FIRST_RETRY));
        assert_eq!(outbox.len(), 2);
    }

    #[test]
    fn many_in_flight_stay_bounded_when_acked_out_of_order() {
        let t0 = Instant::now();
        let mut outbox = Outbox::default();
        for i in 0..10_000 {
            outbox.push(update(&format!("u{i}")));
        }
        outbox.unsent(t0);
        for i in (1..10_000).rev() {
            assert!(outbox.ack(&format!("u{i}")));
        }
        assert_eq!(outbox.len(), 1);
        assert!(outbox.queue.len() <= 2 + 64, "{}", outbox.queue.len());
        assert_eq!(ids(&outbox.due(t0 + FIRST_RETRY)), ["u0"]);
    }
}
