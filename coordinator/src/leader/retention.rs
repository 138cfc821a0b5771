//! Garbage collection of finished work, so that the registry (and the leader's memory) is bounded
//! by live work plus a retention, not by history — as Nomad's `job_gc_threshold` and Mesos'
//! `--max_completed_tasks_per_framework` bound theirs.
//!
//! A job is collected once it is done and none of its tasks is live, `gc_after` after it ended,
//! or sooner when more than `max_finished_tasks` finished tasks are kept (oldest first); a
//! framework's task is collected on its own the same way. Collecting a job deletes its record and
//! puts a small [`pb::CollectedRecord`] in its place in one fenced transaction — the commit point —
//! then does the same for its tasks in bounded batches; a leader that takes over halfway finds
//! tasks whose job has no record and finishes the job (see [`super::recovery`]). What is left
//! (a tombstone, a few dozen bytes) answers `job status` and `logs` with "collected at ..." for as
//! long again, then goes too.

use std::collections::{HashMap, HashSet, VecDeque};

use prost::Message;
use skiff_proto as pb;
use skiff_proto::JobState;
use tracing::{info, warn};

use super::{Leader, now_ms};
use crate::error::{Error, Result, rfc3339};
use crate::jobs;
use crate::registry::{Txn, batches, keys};
use crate::task;

/// Tasks collected per leader-loop turn (the rest waits for the next tick), so that collecting a
/// large backlog does not stall placements and status updates.
const TASKS_PER_ROUND: usize = 20_000;

/// Finished work waiting for collection, and what is left of collected work.
#[derive(Debug, Default)]
pub(super) struct Retention {
    done: VecDeque<Done>,
    queued: HashSet<String>,
    /// Finished tasks held by the queued units.
    finished: usize,
    tombstones: HashMap<String, pb::CollectedRecord>,
    /// Tombstone ids, oldest collected first.
    tombstone_order: VecDeque<String>,
}

#[derive(Debug)]
struct Done {
    ended_ms: u64,
    unit: Unit,
    tasks: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Unit {
    Job(String),
    Task(String),
}

impl Retention {
    fn queue(&mut self, ended_ms: u64, unit: Unit, tasks: usize) {
        let id = match &unit {
            Unit::Job(id) | Unit::Task(id) => id.clone(),
        };
        if self.queued.insert(id) {
            self.finished += tasks;
            self.done.push_back(Done { ended_ms, unit, tasks });
        }
    }

    fn add_tombstone(&mut self, record: pb::CollectedRecord) {
        if self.tombstones.insert(record.id.clone(), record.clone()).is_none() {
            self.tombstone_order.push_back(record.id);
        }
    }

    /// Finished tasks waiting for collection.
    pub(super) fn finished(&self) -> usize {
        self.finished
    }

    /// The error for a job or task that is not known: collected (with when), or not found.
    pub(super) fn not_found(&self, err: Error) -> Error {
        let (Error::TaskNotFound(id) | Error::JobNotFound(id)) = &err else { return err };
        let Some(t) = self.tombstones.get(id) else { return err };
        let ended = match (t.state.as_str(), t.ended_ms) {
            ("", 0) => "it had ended".to_owned(),
            (state, 0) => format!("it had ended {state}"),
            ("", ms) => format!("it ended at {}", rfc3339(ms)),
            (state, ms) => format!("it ended {state} at {}", rfc3339(ms)),
        };
        Error::Collected(format!(
            "{} {} was collected at {} ({ended}; finished work is kept for a retention, then collected)",
            t.kind,
            t.id,
            rfc3339(t.collected_ms)
        ))
    }
}

impl Leader {
    /// A framework's task ended: it is collected after the retention.
    pub(super) fn task_ended(&mut self, task_id: &str, framework_id: &str, ended_ms: u64) {
        if framework_id != jobs::FRAMEWORK_ID {
            self.retention.queue(ended_ms, Unit::Task(task_id.to_owned()), 1);
        }
    }

    /// A tombstone read back from the registry.
    pub(super) fn recovered_tombstone(&mut self, record: pb::CollectedRecord) {
        self.retention.add_tombstone(record);
    }

    /// Queues the jobs that are done and have no live task, collects what is due, and forgets
    /// tombstones past their own retention.
    pub(super) async fn collect_finished(&mut self) {
        self.queue_done_jobs();
        let now = now_ms();
        let after = self.config.gc_after.as_millis() as u64;
        let mut budget = TASKS_PER_ROUND;
        while budget > 0
            && !self.stop.is_cancelled()
            && let Some(front) = self.retention.done.front()
        {
            let over = self.retention.finished > self.config.max_finished_tasks;
            if !over && front.ended_ms.saturating_add(after) > now {
                break;
            }
            let Done { ended_ms, unit, tasks } = self.retention.done.pop_front().expect("peeked");
            self.retention.finished -= tasks;
            budget = budget.saturating_sub(tasks.max(1));
            let collected = match &unit {
                Unit::Job(id) => self.collect_job(id, ended_ms).await,
                Unit::Task(id) => self.collect_tasks(vec![id.clone()]).await,
            };
            match unit {
                Unit::Job(id) | Unit::Task(id) => {
                    self.retention.queued.remove(&id);
                }
            }
            if let Err(err) = collected {
                warn!(%err, "could not collect finished work; trying again at the next collection");
                return;
            }
        }
        self.forget_tombstones(now, after).await;
    }

    /// Jobs that are done and whose tasks all ended, not yet queued (ended: their last task's end).
    fn queue_done_jobs(&mut self) {
        let mut found = Vec::new();
        for job_id in self.jobs.job_ids() {
            if self.retention.queued.contains(&job_id) || self.jobs.state(&job_id) == Some(JobState::Running) {
                continue;
            }
            let mut ended_ms = 0;
            let mut live = false;
            let task_ids = self.jobs.task_ids(&job_id);
            for task_id in task_ids {
                // Tasks no longer in memory were retired: they ended.
                if let Some(t) = self.tasks.get(task_id) {
                    live |= !task::is_terminal(t.state());
                    ended_ms = ended_ms.max(t.record.status.as_ref().map_or(0, |s| s.timestamp_ms));
                }
            }
            if !live {
                let ended_ms = if ended_ms == 0 { now_ms() } else { ended_ms };
                found.push((ended_ms, job_id, task_ids.len()));
            }
        }
        found.sort();
        for (ended_ms, job_id, tasks) in found {
            self.retention.queue(ended_ms, Unit::Job(job_id), tasks);
        }
    }

    /// Collects a done job: its record gives way to a tombstone (the commit point), then its tasks.
    async fn collect_job(&mut self, job_id: &str, ended_ms: u64) -> Result<()> {
        let state = self.jobs.state(job_id).map_or(JobState::Unspecified, |s| s);
        let tombstone = pb::CollectedRecord {
            id: job_id.to_owned(),
            kind: "job".into(),
            state: state.as_str_name().trim_start_matches("JOB_STATE_").to_owned(),
            ended_ms,
            collected_ms: now_ms(),
            job_id: String::new(),
        };
        let txn = Txn::new().delete(keys::job(job_id)).put(keys::collected(job_id), tombstone.encode_to_vec());
        self.commit(txn).await?;
        self.retention.add_tombstone(tombstone);
        let task_ids = self.jobs.remove_job(job_id);
        info!(job_id, tasks = task_ids.len(), "finished job collected");
        self.collect_tasks(task_ids).await
    }

    /// Deletes the records of ended tasks, a tombstone in the place of each, in bounded batches.
    pub(super) async fn collect_tasks(&mut self, task_ids: Vec<String>) -> Result<()> {
        let collected_ms = now_ms();
        for run in batches(&task_ids, 2, |_| 256) {
            let mut txn = Txn::new();
            let mut tombstones = Vec::with_capacity(run.len());
            for task_id in &task_ids[run] {
                let entry = self.tasks.get(task_id);
                if entry.is_some_and(|t| !task::is_terminal(t.state())) {
                    continue;
                }
                let status = entry.and_then(|t| t.record.status.as_ref());
                let tombstone = pb::CollectedRecord {
                    id: task_id.clone(),
                    kind: "task".into(),
                    state: status.map_or(String::new(), |s| {
                        s.state().as_str_name().trim_start_matches("TASK_STATE_").to_owned()
                    }),
                    ended_ms: status.map_or(0, |s| s.timestamp_ms),
                    collected_ms,
                    job_id: entry.map_or(String::new(), |t| t.record.job_id.clone()),
                };
                txn = txn.delete(keys::task(task_id)).put(keys::collected(task_id), tombstone.encode_to_vec());
                tombstones.push(tombstone);
            }
            if tombstones.is_empty() {
                continue;
            }
            self.commit(txn).await?;
            for tombstone in tombstones {
                self.tasks.remove(&tombstone.id);
                self.retention.add_tombstone(tombstone);
            }
        }
        Ok(())
    }

    /// Deletes tombstones kept for the retention already (or past twice the finished-task cap).
    async fn forget_tombstones(&mut self, now: u64, after: u64) {
        let cap = self.config.max_finished_tasks.saturating_mul(2);
        let mut expired = Vec::new();
        let order = &self.retention.tombstone_order;
        for (i, id) in order.iter().enumerate() {
            let old = self.retention.tombstones.get(id).is_none_or(|t| t.collected_ms.saturating_add(after) <= now);
            if !(old || order.len() - i > cap) || expired.len() >= TASKS_PER_ROUND {
                break;
            }
            expired.push(id.clone());
        }
        for run in batches(&expired, 1, |_| 128) {
            let txn = expired[run.clone()].iter().fold(Txn::new(), |txn, id| txn.delete(keys::collected(id)));
            if let Err(err) = self.commit(txn).await {
                warn!(%err, "could not forget old tombstones; trying again at the next collection");
                return;
            }
            for id in &expired[run] {
                self.retention.tombstone_order.pop_front();
                self.retention.tombstones.remove(id);
            }
        }
    }
}
