//! The built-in job scheduler's jobs as the leader keeps them: submitted and recorded, their
//! instances' tasks created (and created again for retries), killed, and reported.

use prost::Message;
use skiff_proto as pb;
use skiff_proto::TaskState;
use tracing::{info, warn};

use skiff_core::{JobSpec, TaskSpec, limits};

use super::{Leader, TaskEntry, new_id, now_ms, std_now};
use crate::error::{Error, Result};
use crate::jobs::{self, Attempt};
use crate::registry::{Txn, batches, keys};

fn record_task_id(record: &pb::TaskRecord) -> &str {
    record.status.as_ref().map_or("", |s| s.task_id.as_str())
}

impl Leader {
    /// `skiff run`: a job of one instance without retries; answers (task id, job id).
    pub(super) async fn submit(&mut self, spec: TaskSpec, submitted_by: String) -> Result<(String, String)> {
        let submitted = self.submit_job(JobSpec::single(spec, submitted_by)).await?;
        let task_id = submitted.task_ids.first().cloned().ok_or(Error::ShuttingDown)?;
        Ok((task_id, submitted.job_id))
    }

    /// Submits a job. Its tasks are written first, in bounded batches, and its record last: the
    /// job record is the submit's commit point. Until it is written the job is nowhere in memory;
    /// if any write fails, the tasks written so far are deleted again (and if that fails too, the
    /// next leader deletes tasks whose job has no record when it takes over).
    pub(super) async fn submit_job(&mut self, spec: JobSpec) -> Result<pb::SubmitJobResponse> {
        let live = self.jobs.live_jobs_of(&spec.submitted_by);
        let most = self.config.max_live_jobs_per_submitter;
        if live >= most {
            let err =
                limits::LimitError::count("the number of live jobs of this submitter", live as u64 + 1, most as u64);
            return Err(Error::LimitExceeded(format!("{err}: wait for some to finish, or kill some")));
        }
        let (mut spec, mut template) = spec.into_parts();
        self.check_artifacts(&mut template)?;
        let mut template = template.into_inner();
        template.task_id.clear();
        spec.task = Some(template);
        spec.job_id = new_id("j");
        let job_id = spec.job_id.clone();
        let submitted_ms = now_ms();
        let attempts: Vec<Attempt> =
            (0..spec.instances).map(|instance| Attempt { job_id: job_id.clone(), instance, attempt: 0 }).collect();
        let records = self.attempt_records(&spec, &attempts);
        let revisions = match self.write_created(&records).await {
            Ok(revisions) => revisions,
            Err((err, written)) => {
                self.unwrite(&records[..written.len()]).await;
                return Err(err);
            }
        };
        let record =
            pb::JobRecord { spec: Some(spec.clone()), submitted_ms, killed: false, leader_epoch: self.config.epoch };
        let key = keys::job(&job_id);
        if let Err(err) = self.commit(Txn::new().if_mod_revision(&key, 0).put(key, record.encode_to_vec())).await {
            self.unwrite(&records).await;
            return Err(err);
        }
        self.jobs.add_job(spec, submitted_ms, false);
        let task_ids = self.insert_created(records, revisions);
        info!(%job_id, instances = task_ids.len(), "job submitted");
        Ok(pb::SubmitJobResponse { job_id, task_ids })
    }

    /// Creates the PENDING tasks of new attempts of instances of jobs the leader holds (retries,
    /// instances a takeover found without a task) and queues them.
    pub(super) async fn create_attempts(&mut self, attempts: &[Attempt]) -> Result<Vec<String>> {
        let mut records = Vec::with_capacity(attempts.len());
        for a in attempts {
            let Some(job) = self.jobs.spec(&a.job_id) else { continue };
            records.extend(self.attempt_records(job, std::slice::from_ref(a)));
        }
        match self.write_created(&records).await {
            Ok(revisions) => Ok(self.insert_created(records, revisions)),
            Err((err, written)) => {
                // What was written is kept: those attempts exist.
                records.truncate(written.len());
                self.insert_created(records, written);
                Err(err)
            }
        }
    }

    /// The PENDING task records of `attempts` of `job`.
    fn attempt_records(&self, job: &pb::JobSpec, attempts: &[Attempt]) -> Vec<pb::TaskRecord> {
        attempts
            .iter()
            .map(|a| {
                let mut spec = jobs::instance_spec(job, a.instance);
                spec.task_id = new_id("t");
                let status = pb::TaskStatus {
                    task_id: spec.task_id.clone(),
                    state: TaskState::Pending as i32,
                    timestamp_ms: now_ms(),
                    update_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                };
                pb::TaskRecord {
                    spec: Some(spec),
                    status: Some(status),
                    framework_id: jobs::FRAMEWORK_ID.into(),
                    leader_epoch: self.config.epoch,
                    job_id: a.job_id.clone(),
                    instance: a.instance,
                    attempt: a.attempt,
                    submitted_by: job.submitted_by.clone(),
                }
            })
            .collect()
    }

    /// Writes new task records in bounded batches; answers each one's revision, or the error and
    /// the revisions of the records written before it.
    async fn write_created(&mut self, records: &[pb::TaskRecord]) -> std::result::Result<Vec<i64>, (Error, Vec<i64>)> {
        let mut revisions = Vec::with_capacity(records.len());
        for run in batches(records, 1, |r| r.encoded_len() + 64) {
            let mut txn = Txn::new();
            for record in &records[run.clone()] {
                let key = keys::task(record_task_id(record));
                txn = txn.if_mod_revision(&key, 0).put(key, record.encode_to_vec());
            }
            let revision = match self.commit(txn).await {
                Ok(revision) => revision,
                Err(err) => return Err((err, revisions)),
            };
            revisions.extend(std::iter::repeat_n(revision, run.len()));
        }
        Ok(revisions)
    }

    /// Deletes task records written by a submit that did not complete (best effort).
    async fn unwrite(&mut self, records: &[pb::TaskRecord]) {
        for run in batches(records, 1, |_| 64) {
            let txn = records[run].iter().fold(Txn::new(), |txn, r| txn.delete(keys::task(record_task_id(r))));
            if let Err(err) = self.commit(txn).await {
                warn!(%err, "could not delete the tasks of a submit that failed; the next leader will");
                return;
            }
        }
    }

    /// Takes written task records into memory and the job scheduler's queue.
    fn insert_created(&mut self, records: Vec<pb::TaskRecord>, revisions: Vec<i64>) -> Vec<String> {
        let mut created = Vec::with_capacity(records.len());
        for (record, revision) in records.into_iter().zip(revisions) {
            let task_id = record_task_id(&record).to_owned();
            let (job_id, instance, attempt) = (record.job_id.clone(), record.instance, record.attempt);
            let entry = TaskEntry::created(record, revision);
            let resources = entry.resources;
            self.tasks.insert(task_id.clone(), Box::new(entry));
            self.jobs.add_task(&task_id, &job_id, instance, attempt, TaskState::Pending, resources);
            created.push(task_id);
        }
        // New work: offers the job scheduler declined may fit it.
        self.allocator.revive(jobs::FRAMEWORK_ID);
        created
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
