//! The sweep as a state machine without I/O: which parameters go on an offer, what a task's status
//! means for its parameter (done, retry, give up), and when to suppress or revive offers.

use std::collections::HashMap;

use skiff_proto as pb;

/// What each task reserves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub cpus: f64,
    pub mem_bytes: u64,
}

/// A parameter whose task finished and printed its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub limit: u64,
    pub primes: u64,
    pub task_id: String,
    pub agent_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// Waiting for an offer.
    Pending,
    /// In an Accept whose answer (the task id) has not come back yet.
    Launching,
    /// Launched; the task id is the key of `Sweep::tasks`.
    Running,
    Done(Done),
    Failed(String),
}

#[derive(Debug)]
struct Param {
    limit: u64,
    /// Tasks launched for it so far.
    attempts: u32,
    slot: Slot,
}

/// A task to launch for parameter `index`.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub index: usize,
    pub spec: pb::TaskSpec,
}

/// What a status update meant for the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Not one of our live tasks (a duplicate, or a task already dealt with).
    Ignored,
    /// A non-terminal state.
    Progress { limit: u64, state: pb::TaskState },
    /// The task exited 0: read its output and [`Sweep::record`] it.
    Finished { index: usize, limit: u64 },
    /// The task ended without a result; the parameter is pending again.
    Retrying { limit: u64, attempt: u32, why: String },
    /// The task ended without a result and no retry is left.
    GaveUp { limit: u64, why: String },
}

/// A change of whether the framework wants offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Suppress,
    Revive,
}

/// Every parameter of the sweep and where it stands.
#[derive(Debug)]
pub struct Sweep {
    params: Vec<Param>,
    retries: u32,
    shape: Shape,
    module: pb::WasmTask,
    /// Live tasks: task id -> parameter index.
    tasks: HashMap<String, usize>,
    suppressed: bool,
}

/// Thousandths of a core, as the coordinator counts CPUs (sums without floating-point drift).
fn millicpus(cpus: f64) -> u64 {
    if cpus.is_finite() && cpus > 0.0 { (cpus * 1000.0).round() as u64 } else { 0 }
}

impl Sweep {
    pub fn new(limits: &[u64], retries: u32, shape: Shape, module: pb::WasmTask) -> Self {
        let params = limits.iter().map(|&limit| Param { limit, attempts: 0, slot: Slot::Pending }).collect();
        Sweep { params, retries, shape, module, tasks: HashMap::new(), suppressed: false }
    }

    /// Takes as many pending parameters as fit in `offered`. When the offer counts Wasm slots, each
    /// task reserves one; an agent that offers none does not count them.
    pub fn fill(&mut self, offered: &pb::Resources) -> Vec<Launch> {
        let (need_cpu, need_mem) = (millicpus(self.shape.cpus), self.shape.mem_bytes);
        let (mut cpu, mut mem, mut slots) = (millicpus(offered.cpus), offered.mem_bytes, offered.wasm_slots);
        let slot = u32::from(offered.wasm_slots > 0);
        let mut launches = Vec::new();
        for (index, p) in self.params.iter_mut().enumerate().filter(|(_, p)| p.slot == Slot::Pending) {
            if cpu < need_cpu || mem < need_mem || slots < slot {
                break;
            }
            (cpu, mem, slots) = (cpu - need_cpu, mem - need_mem, slots - slot);
            p.slot = Slot::Launching;
            p.attempts += 1;
            let spec = pb::TaskSpec {
                name: format!("primes-{}", p.limit),
                resources: Some(pb::Resources {
                    cpus: self.shape.cpus,
                    mem_bytes: need_mem,
                    disk_bytes: 0,
                    wasm_slots: slot,
                }),
                args: vec![p.limit.to_string()],
                kind: Some(pb::task_spec::Kind::Wasm(self.module.clone())),
                ..Default::default()
            };
            launches.push(Launch { index, spec });
        }
        launches
    }

    /// The coordinator took the launch of parameter `index` as task `task_id`.
    pub fn launched(&mut self, index: usize, task_id: &str) {
        self.params[index].slot = Slot::Running;
        self.tasks.insert(task_id.to_owned(), index);
    }

    /// The Accept carrying parameter `index` was refused: it is pending again, no attempt used.
    pub fn launch_failed(&mut self, index: usize) {
        let p = &mut self.params[index];
        p.slot = Slot::Pending;
        p.attempts = p.attempts.saturating_sub(1);
    }

    pub fn on_status(&mut self, status: &pb::TaskStatus) -> Update {
        let Some(&index) = self.tasks.get(&status.task_id) else { return Update::Ignored };
        let state = status.state();
        let p = &mut self.params[index];
        let limit = p.limit;
        let why = match state {
            pb::TaskState::Finished => {
                self.tasks.remove(&status.task_id);
                return Update::Finished { index, limit };
            }
            pb::TaskState::Failed | pb::TaskState::Lost | pb::TaskState::Killed => {
                let reason = status.reason().as_str_name().trim_start_matches("REASON_").to_ascii_lowercase();
                let state = state.as_str_name().trim_start_matches("TASK_STATE_");
                if status.message.is_empty() {
                    format!("{state} ({reason})")
                } else {
                    format!("{state}: {}", status.message)
                }
            }
            _ => return Update::Progress { limit, state },
        };
        self.tasks.remove(&status.task_id);
        if p.attempts <= self.retries {
            p.slot = Slot::Pending;
            Update::Retrying { limit, attempt: p.attempts + 1, why }
        } else {
            p.slot = Slot::Failed(format!("{why} (attempts: {})", p.attempts));
            Update::GaveUp { limit, why }
        }
    }

    /// Records the stdout of parameter `index`'s finished task (or why it could not be read).
    pub fn record(
        &mut self,
        index: usize,
        task_id: &str,
        agent_id: &str,
        stdout: Result<String, String>,
    ) -> Result<Done, String> {
        let p = &mut self.params[index];
        let limit = p.limit;
        let done = stdout.and_then(|out| parse_primes(&out, limit)).map(|primes| Done {
            limit,
            primes,
            task_id: task_id.to_owned(),
            agent_id: agent_id.to_owned(),
        });
        p.slot = match &done {
            Ok(d) => Slot::Done(d.clone()),
            Err(why) => Slot::Failed(why.clone()),
        };
        done
    }

    /// Suppress once nothing is pending, revive when something is again.
    pub fn interest(&mut self) -> Option<Interest> {
        let wants = self.params.iter().any(|p| p.slot == Slot::Pending);
        if wants != self.suppressed {
            return None;
        }
        self.suppressed = !wants;
        Some(if wants { Interest::Revive } else { Interest::Suppress })
    }

    pub fn is_done(&self) -> bool {
        self.params.iter().all(|p| matches!(p.slot, Slot::Done(_) | Slot::Failed(_)))
    }

    /// The results in parameter order, and the failures as (limit, why).
    pub fn outcome(&self) -> (Vec<&Done>, Vec<(u64, &str)>) {
        let done = self.params.iter().filter_map(|p| if let Slot::Done(d) = &p.slot { Some(d) } else { None });
        let failed = self.params.iter().filter_map(|p| match &p.slot {
            Slot::Failed(why) => Some((p.limit, why.as_str())),
            _ => None,
        });
        (done.collect(), failed.collect())
    }
}

/// The count from the primes guest's stdout line `<count> primes below <limit>`.
pub fn parse_primes(stdout: &str, limit: u64) -> Result<u64, String> {
    stdout
        .lines()
        .find_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [count, "primes", "below", n] if n.parse() == Ok(limit) => count.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| format!("no \"<count> primes below {limit}\" line in its stdout {stdout:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(limits: &[u64], retries: u32) -> Sweep {
        let module = pb::WasmTask { module_sha256: "ab".repeat(32), module_size: 7, ..Default::default() };
        Sweep::new(limits, retries, Shape { cpus: 0.25, mem_bytes: 32 << 20 }, module)
    }

    fn offer(cpus: f64, mem_mib: u64, wasm_slots: u32) -> pb::Resources {
        pb::Resources { cpus, mem_bytes: mem_mib << 20, disk_bytes: 0, wasm_slots }
    }

    fn status(task_id: &str, state: pb::TaskState) -> pb::TaskStatus {
        pb::TaskStatus { task_id: task_id.into(), state: state as i32, agent_id: "a1".into(), ..Default::default() }
    }

    /// Launches everything that fits and names each task `t<limit>`.
    fn launch_all(s: &mut Sweep, offered: &pb::Resources) -> Vec<u64> {
        let launches = s.fill(offered);
        for l in &launches {
            s.launched(l.index, &format!("t{}", l.spec.args[0]));
        }
        launches.iter().map(|l| l.spec.args[0].parse().unwrap()).collect()
    }

    #[test]
    fn an_offer_takes_what_fits_of_every_resource() {
        // (offer, limits launched): cpus, memory and (when offered) Wasm slots each bound the fill.
        let cases = [
            (offer(1.0, 1024, 0), vec![1, 2, 3, 4]),
            (offer(0.75, 1024, 0), vec![1, 2, 3]),
            (offer(0.7, 1024, 0), vec![1, 2]),
            (offer(4.0, 64, 0), vec![1, 2]),
            (offer(4.0, 1024, 1), vec![1]),
            (offer(0.2, 1024, 9), vec![]),
        ];
        for (offered, want) in cases {
            let mut s = sweep(&[1, 2, 3, 4, 5], 0);
            assert_eq!(launch_all(&mut s, &offered), want, "{offered:?}");
        }
    }

    #[test]
    fn the_spec_names_the_module_and_the_parameter() {
        let mut s = sweep(&[10000], 0);
        let spec = &s.fill(&offer(1.0, 64, 4))[0].spec;
        assert_eq!(spec.name, "primes-10000");
        assert_eq!(spec.args, ["10000"]);
        assert_eq!(
            spec.resources,
            Some(pb::Resources { cpus: 0.25, mem_bytes: 32 << 20, disk_bytes: 0, wasm_slots: 1 })
        );
        let Some(pb::task_spec::Kind::Wasm(wasm)) = &spec.kind else { panic!("not a Wasm task: {spec:?}") };
        assert_eq!((wasm.module_size, wasm.module.is_empty()), (7, true));
    }

    #[test]
    fn suppress_when_all_is_placed_revive_on_a_retry_then_give_up() {
        let mut s = sweep(&[10, 20], 1);
        assert_eq!(s.interest(), None);
        assert_eq!(launch_all(&mut s, &offer(1.0, 1024, 0)), [10, 20]);
        assert_eq!(s.interest(), Some(Interest::Suppress));
        assert_eq!(s.fill(&offer(1.0, 1024, 0)), []);

        let lost = status("t10", pb::TaskState::Lost);
        assert!(matches!(s.on_status(&lost), Update::Retrying { limit: 10, attempt: 2, .. }));
        assert_eq!(s.on_status(&lost), Update::Ignored, "a redelivered update is not counted twice");
        assert_eq!(s.interest(), Some(Interest::Revive));
        assert_eq!(s.interest(), None);
        assert_eq!(launch_all(&mut s, &offer(1.0, 1024, 0)), [10]);
        assert!(matches!(s.on_status(&status("t10", pb::TaskState::Failed)), Update::GaveUp { limit: 10, .. }));
        assert!(!s.is_done());

        let running = status("t20", pb::TaskState::Running);
        assert_eq!(s.on_status(&running), Update::Progress { limit: 20, state: pb::TaskState::Running });
        assert_eq!(s.on_status(&status("t20", pb::TaskState::Finished)), Update::Finished { index: 1, limit: 20 });
        assert_eq!(s.record(1, "t20", "a1", Ok("8 primes below 20\n".into())).map(|d| d.primes), Ok(8));
        assert!(s.is_done());
        let (done, failed) = s.outcome();
        assert_eq!(done.iter().map(|d| (d.limit, d.primes)).collect::<Vec<_>>(), [(20, 8)]);
        assert_eq!(failed.iter().map(|f| f.0).collect::<Vec<_>>(), [10]);
    }

    #[test]
    fn a_refused_accept_uses_no_attempt() {
        let mut s = sweep(&[10], 0);
        let l = s.fill(&offer(1.0, 1024, 0));
        s.launch_failed(l[0].index);
        assert_eq!(launch_all(&mut s, &offer(1.0, 1024, 0)), [10]);
        assert!(matches!(s.on_status(&status("t10", pb::TaskState::Killed)), Update::GaveUp { .. }));
    }

    #[test]
    fn the_count_is_read_from_the_line_for_this_limit() {
        assert_eq!(parse_primes("1229 primes below 10000\n", 10000), Ok(1229));
        assert_eq!(parse_primes("noise\n  25 primes below 100  \n", 100), Ok(25));
        assert!(parse_primes("25 primes below 100\n", 1000).is_err());
        assert!(parse_primes("", 100).is_err());
        assert!(parse_primes("many primes below 100", 100).is_err());
    }
}
