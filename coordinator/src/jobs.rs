//! The built-in job framework: the framework inside the leader that places the CLI's tasks.
//!
//! It holds a FIFO queue of pending tasks and answers offers the way any framework does: each offer
//! is accepted with the queued tasks that fit in it (first fit, in queue order), or declined.
//! Pure: no I/O, the leader applies its decisions.

use std::collections::VecDeque;

use crate::offers::Offer;
use crate::resources::Resources;

/// The framework id of the built-in job framework.
pub const FRAMEWORK_ID: &str = "skiff-jobs";

/// The framework's answer to one offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept { offer_id: String, launches: Vec<String> },
    Decline { offer_id: String },
}

#[derive(Debug, Default)]
pub struct JobFramework {
    pending: VecDeque<(String, Resources)>,
}

impl JobFramework {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a task for placement.
    pub fn enqueue(&mut self, task_id: String, resources: Resources) {
        self.pending.push_back((task_id, resources));
    }

    /// Puts a task back at the head of the queue (its launch was refused).
    pub fn requeue_front(&mut self, task_id: String, resources: Resources) {
        self.pending.push_front((task_id, resources));
    }

    /// Drops a queued task (killed before placement); true if it was queued.
    pub fn remove(&mut self, task_id: &str) -> bool {
        let before = self.pending.len();
        self.pending.retain(|(id, _)| id != task_id);
        before != self.pending.len()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Answers a batch of offers. Tasks placed are removed from the queue.
    pub fn on_offers(&mut self, offers: &[Offer]) -> Vec<Decision> {
        offers
            .iter()
            .map(|offer| {
                let mut left = offer.resources;
                let mut launches = Vec::new();
                self.pending.retain(|(id, need)| match left.checked_sub(need) {
                    Some(rest) => {
                        left = rest;
                        launches.push(id.clone());
                        false
                    }
                    None => true,
                });
                if launches.is_empty() {
                    Decision::Decline { offer_id: offer.id.clone() }
                } else {
                    Decision::Accept { offer_id: offer.id.clone(), launches }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(millicpus: u64, mem_bytes: u64) -> Resources {
        Resources { millicpus, mem_bytes, disk_bytes: 0, wasm_slots: 0 }
    }

    fn offer(id: &str, resources: Resources) -> Offer {
        Offer {
            id: id.into(),
            agent_id: format!("agent-of-{id}"),
            framework_id: FRAMEWORK_ID.into(),
            resources,
            epoch: 1,
        }
    }

    #[test]
    fn first_fit_in_queue_order() {
        let mut fw = JobFramework::new();
        fw.enqueue("big".into(), r(1500, 10));
        fw.enqueue("small1".into(), r(500, 10));
        fw.enqueue("small2".into(), r(500, 10));
        fw.enqueue("huge".into(), r(4000, 10));

        let decisions = fw.on_offers(&[offer("o1", r(1000, 100)), offer("o2", r(2000, 100)), offer("o3", r(500, 5))]);
        assert_eq!(
            decisions,
            vec![
                // big does not fit o1, so the two small ones take it.
                Decision::Accept { offer_id: "o1".into(), launches: vec!["small1".into(), "small2".into()] },
                Decision::Accept { offer_id: "o2".into(), launches: vec!["big".into()] },
                Decision::Decline { offer_id: "o3".into() },
            ]
        );
        assert_eq!(fw.pending(), 1, "huge fits nowhere and stays queued");
        assert!(fw.remove("huge"));
        assert!(!fw.has_pending());
    }
}
