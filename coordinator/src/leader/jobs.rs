//! The built-in job scheduler's jobs as the leader keeps them: submitted and recorded, their
//! instances' tasks created (and created again for retries), killed, and reported.

use prost::Message;
use skiff_proto as pb;
use skiff_proto::TaskState;
use tracing::{info, warn};

use super::placement::LAUNCHES_PER_TXN;
use super::{Leader, TaskEntry, new_id, now_ms, std_now};
use crate::error::{Error, Result};
use crate::jobs::{self, Attempt};
use crate::registry::{Txn, keys};

impl Leader {
    /// `skiff run`: a job of one instance without retries; answers (task id, job id).
    pub(super) async fn submit(&mut self, spec: pb::TaskSpec, submitted_by: String) -> Result<(String, String)> {
        let job =
            pb::JobSpec { name: spec.name.clone(), instances: 1, task: Some(spec), submitted_by, ..Default::default() };
        let submitted = self.submit_job(job).await?;
        let task_id = submitted.task_ids.first().cloned().ok_or(Error::ShuttingDown)?;
        Ok((task_id, submitted.job_id))
    }

    pub(super) async fn submit_job(&mut self, mut spec: pb::JobSpec) -> Result<pb::SubmitJobResponse> {
        jobs::validate(&spec).map_err(Error::InvalidArgument)?;
        let mut template = spec.task.take().unwrap_or_default();
        self.check_artifacts(&mut template)?;
        template.task_id.clear();
        spec.task = Some(template);
        spec.job_id = new_id("j");
        let job_id = spec.job_id.clone();
        let submitted_ms = now_ms();
        let record =
            pb::JobRecord { spec: Some(spec.clone()), submitted_ms, killed: false, leader_epoch: self.config.epoch };
        let key = keys::job(&job_id);
        self.commit(Txn::new().if_mod_revision(&key, 0).put(key, record.encode_to_vec())).await?;
        let attempts: Vec<Attempt> =
            (0..spec.instances).map(|instance| Attempt { job_id: job_id.clone(), instance, attempt: 0 }).collect();
        self.jobs.add_job(spec, submitted_ms, false);
        let task_ids = self.create_attempts(&attempts).await?;
        info!(%job_id, instances = task_ids.len(), "job submitted");
        Ok(pb::SubmitJobResponse { job_id, task_ids })
    }

    /// Creates the PENDING tasks of instance attempts and queues them.
    pub(super) async fn create_attempts(&mut self, attempts: &[Attempt]) -> Result<Vec<String>> {
        let mut created = Vec::with_capacity(attempts.len());
        for chunk in attempts.chunks(LAUNCHES_PER_TXN) {
            let mut txn = Txn::new();
            let mut records = Vec::with_capacity(chunk.len());
            for a in chunk {
                let Some(job) = self.jobs.spec(&a.job_id) else { continue };
                let mut spec = jobs::instance_spec(job, a.instance);
                spec.task_id = new_id("t");
                let status = pb::TaskStatus {
                    task_id: spec.task_id.clone(),
                    state: TaskState::Pending as i32,
                    timestamp_ms: now_ms(),
                    update_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                };
                let record = pb::TaskRecord {
                    spec: Some(spec),
                    status: Some(status),
                    framework_id: jobs::FRAMEWORK_ID.into(),
                    leader_epoch: self.config.epoch,
                    job_id: a.job_id.clone(),
                    instance: a.instance,
                    attempt: a.attempt,
                    submitted_by: job.submitted_by.clone(),
                };
                let key = keys::task(&record.status.as_ref().map(|s| s.task_id.clone()).unwrap_or_default());
                txn = txn.if_mod_revision(&key, 0).put(key, record.encode_to_vec());
                records.push(record);
            }
            let revision = self.commit(txn).await?;
            for record in records {
                let task_id = record.status.as_ref().map(|s| s.task_id.clone()).unwrap_or_default();
                let (job_id, instance, attempt) = (record.job_id.clone(), record.instance, record.attempt);
                let entry = TaskEntry::created(record, revision);
                let resources = entry.resources;
                self.tasks.insert(task_id.clone(), entry);
                self.jobs.add_task(&task_id, &job_id, instance, attempt, TaskState::Pending, resources);
                created.push(task_id);
            }
        }
        // New work: offers the job scheduler declined may fit it.
        self.allocator.revive(jobs::FRAMEWORK_ID);
        Ok(created)
    }

    /// Starts the retries whose backoff is over.
    pub(super) async fn start_due_retries(&mut self) {
        let due = self.jobs.due_retries(std_now());
        if due.is_empty() {
            return;
        }
        for a in &due {
            info!(job_id = %a.job_id, instance = a.instance, attempt = a.attempt, "retrying a job instance");
        }
        if let Err(err) = self.create_attempts(&due).await {
            warn!(%err, "could not create retry attempts; trying again after their backoff");
            for a in &due {
                if !self.tasks.values().any(|t| {
                    t.record.job_id == a.job_id && t.record.instance == a.instance && t.record.attempt == a.attempt
                }) {
                    self.jobs.schedule_retry(&a.job_id, a.instance, std_now(), now_ms());
                }
            }
        }
    }

    pub(super) async fn kill_job(&mut self, job_id: &str) -> Result<()> {
        let spec = self.jobs.spec(job_id).cloned().ok_or_else(|| Error::JobNotFound(job_id.to_owned()))?;
        if self.jobs.is_done(job_id) {
            return Err(Error::FailedPrecondition(format!("job {job_id} is already done; nothing to kill")));
        }
        let submitted_ms = self.job_status(job_id).map_or(0, |j| j.submitted_ms);
        let record = pb::JobRecord { spec: Some(spec), submitted_ms, killed: true, leader_epoch: self.config.epoch };
        self.commit(Txn::new().put(keys::job(job_id), record.encode_to_vec())).await?;
        let live = self.jobs.kill(job_id).unwrap_or_default();
        info!(job_id, live = live.len(), "job killed");
        for task_id in live {
            if let Err(err) = self.kill(&task_id).await {
                warn!(%task_id, %err, "could not kill a task of a killed job");
            }
        }
        Ok(())
    }

    pub(super) fn job_status(&self, job_id: &str) -> Option<pb::JobStatus> {
        self.jobs.status(job_id, |task_id| self.tasks.get(task_id).and_then(|t| t.record.status.as_ref()))
    }
}
