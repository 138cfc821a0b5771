//! Two-level scheduling through real processes: frameworks subscribe over the scheduler API and get
//! offers from a coordinator with real agents.

mod fleet;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use fleet::Cluster;
use fleet::framework::{TestFramework, fits, sleep_task};
use skiff_proto as pb;
use skiff_proto::TaskState;
use skiff_proto::scheduler_event::Event;

const TASK_CPUS: f64 = 0.1;

/// Takes one 0.1-CPU task from every offer it gets (returning the rest) until told to stop; answers
/// how many of its tasks are live.
async fn greedy(mut fw: TestFramework, stop: tokio_util::sync::CancellationToken) -> usize {
    let mut live: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return live.len(),
            e = fw.next(Duration::from_millis(200)) => e,
        };
        match event {
            Some(Event::Offers(offers)) => {
                for offer in offers.offers {
                    if fits(&offer, TASK_CPUS, 64 << 20) {
                        let ids = fw.accept(&offer.offer_id, vec![sleep_task(120, TASK_CPUS)]).await.expect("accept");
                        live.extend(ids);
                    } else {
                        fw.decline(&offer.offer_id, 1.0).await;
                    }
                }
            }
            Some(Event::Update(status)) => {
                fw.acknowledge(&status).await;
                if matches!(
                    status.state(),
                    TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost
                ) {
                    live.remove(&status.task_id);
                }
            }
            _ => {}
        }
    }
}

fn live_tasks(addr: &str) -> f64 {
    fleet::connected_agents(addr).iter().map(|a| a.used.unwrap_or_default().cpus).sum::<f64>() / TASK_CPUS
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_roles_converge_to_their_dominant_share_ratio() {
    let agent: &[&str] = &["--cpus", "2", "--mem-mib", "8192"];
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(&["--role-weight", "light=1", "--role-weight", "heavy=3"], &[agent, agent, agent])
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let light = tokio::spawn(greedy(TestFramework::subscribe(&cluster.addr, "light", "light").await, stop.clone()));
    let heavy = tokio::spawn(greedy(TestFramework::subscribe(&cluster.addr, "heavy", "heavy").await, stop.clone()));
    // 3 agents of 2 CPUs hold 60 tasks of 0.1 CPU (CPU is the dominant resource).
    let addr = cluster.addr.clone();
    tokio::task::block_in_place(|| {
        fleet::eventually(Duration::from_secs(60), "the cluster full of tasks", || {
            (live_tasks(&addr).round() as usize == 60).then_some(())
        });
    });
    stop.cancel();
    let (light, heavy) = (light.await.unwrap(), heavy.await.unwrap());
    eprintln!("light (weight 1): {light} tasks, heavy (weight 3): {heavy} tasks");
    assert_eq!(light + heavy, 60);
    // Equal weighted dominant shares: 15 and 45, give or take a task at the boundary.
    assert!((14..=16).contains(&light), "light got {light}, heavy {heavy}; want 15:45");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_agent_is_not_offered_again_for_refuse_seconds() {
    let agent: &[&str] = &["--cpus", "1", "--mem-mib", "1024"];
    let cluster = tokio::task::block_in_place(|| Cluster::start(&[], &[agent]));
    let mut fw = TestFramework::subscribe(&cluster.addr, "decliner", "default").await;
    let Some(Event::Offers(first)) = fw.next(Duration::from_secs(5)).await else { panic!("no first offer") };
    let agent_id = first.offers[0].agent_id.clone();
    let declined = Instant::now();
    fw.decline(&first.offers[0].offer_id, 2.0).await;
    let again = loop {
        match fw.next(Duration::from_secs(5)).await {
            Some(Event::Offers(o)) if o.offers.iter().any(|o| o.agent_id == agent_id) => break declined.elapsed(),
            Some(_) => continue,
            None => panic!("the agent was not offered again within 5 s of a 2 s filter"),
        }
    };
    eprintln!("offered again after {again:?}");
    assert!(again >= Duration::from_secs(2), "offered again after {again:?}, inside the 2 s filter");
    assert!(again < Duration::from_secs(3), "the filter expired long before the offer came: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_has_its_offers_rescinded_and_its_tasks_reported_unreachable() {
    let agent: &[&str] = &["--cpus", "1", "--mem-mib", "1024"];
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(&["--agent-timeout", "1s"], &[agent, agent]));
    let mut fw = TestFramework::subscribe(&cluster.addr, "holder", "default").await;
    // Launch one task on the first offer, then hold every offer (never answer).
    let mut held: HashMap<String, String> = HashMap::new(); // offer id -> agent idx
    let mut task: Option<(String, String)> = None; // (task id, agent idx)
    let mut running = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(running && held.values().any(|idx| Some(idx) == task.as_ref().map(|t| &t.1))) {
        assert!(Instant::now() < deadline, "no running task with a held offer on its agent");
        match fw.next(Duration::from_secs(5)).await {
            Some(Event::Offers(offers)) => {
                for offer in offers.offers {
                    let idx = offer.attributes["idx"].clone();
                    if task.is_none() {
                        let ids = fw.accept(&offer.offer_id, vec![sleep_task(120, 0.5)]).await.expect("accept");
                        task = Some((ids[0].clone(), idx));
                    } else {
                        held.insert(offer.offer_id, idx);
                    }
                }
            }
            Some(Event::Update(status)) => {
                fw.acknowledge(&status).await;
                running |= status.state() == TaskState::Running;
            }
            _ => {}
        }
    }
    let (task_id, idx) = task.unwrap();
    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.kill_agent(idx.parse().unwrap()));
    let mut rescinded = HashSet::new();
    let mut unreachable = None;
    while unreachable.is_none() || !held.iter().filter(|(_, i)| **i == idx).all(|(o, _)| rescinded.contains(o)) {
        match fw.next(Duration::from_secs(10)).await {
            Some(Event::Rescind(r)) => {
                rescinded.insert(r.offer_id);
            }
            Some(Event::Update(status)) => {
                fw.acknowledge(&status).await;
                if status.task_id == task_id && status.state() == TaskState::Unreachable {
                    assert_eq!(status.reason(), pb::Reason::AgentUnreachable);
                    unreachable = Some(killed.elapsed());
                }
            }
            Some(_) => {}
            None => panic!("within 10 s of the kill: rescinded {rescinded:?}, unreachable {unreachable:?}"),
        }
    }
    eprintln!("agent killed: offers rescinded, task UNREACHABLE after {unreachable:?}");
    assert!(unreachable.unwrap() < Duration::from_secs(3));
}

async fn task_state(addr: &str, task_id: &str) -> TaskState {
    let mut client = pb::operator_service_client::OperatorServiceClient::new(fleet::pki::channel(addr).await.unwrap());
    let got = client.get_task(pb::GetTaskRequest { task_id: task_id.into() }).await.unwrap().into_inner();
    got.status.unwrap().state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_keeps_its_tasks_for_its_failover_timeout_and_gets_unacknowledged_updates_again() {
    let agent: &[&str] = &["--cpus", "1", "--mem-mib", "1024"];
    let cluster = tokio::task::block_in_place(|| Cluster::start(&[], &[agent]));
    let info = pb::FrameworkInfo { name: "failover".into(), failover_timeout_ms: 2000, ..Default::default() };
    let mut fw = TestFramework::subscribe_with(&cluster.addr, info.clone()).await;
    let Some(Event::Offers(offers)) = fw.next(Duration::from_secs(5)).await else { panic!("no offer") };
    let offer = &offers.offers[0];
    // A launch that does not fit the offer is refused, naming why; the offer stays usable.
    let err = fw.accept(&offer.offer_id, vec![sleep_task(1, 4.0)]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("does not fit"), "{}", err.message());
    let task_id = fw.accept(&offer.offer_id, vec![sleep_task(120, 0.5)]).await.expect("accept")[0].clone();
    // RUNNING arrives; it is not acknowledged before the framework goes away.
    loop {
        match fw.next(Duration::from_secs(10)).await {
            Some(Event::Update(s)) if s.task_id == task_id && s.state() == TaskState::Running => break,
            Some(_) => {}
            None => panic!("no RUNNING update"),
        }
    }
    let id = fw.id.clone();
    drop(fw);
    tokio::time::sleep(Duration::from_millis(500)).await; // well inside the 2 s failover timeout
    assert_eq!(task_state(&cluster.addr, &task_id).await, TaskState::Running);
    let mut fw =
        TestFramework::subscribe_with(&cluster.addr, pb::FrameworkInfo { framework_id: id.clone(), ..info }).await;
    assert_eq!(fw.id, id, "re-subscribed as itself");
    let update = loop {
        match fw.next(Duration::from_secs(5)).await {
            Some(Event::Update(s)) => break s,
            Some(_) => {}
            None => panic!("the unacknowledged update was not sent again"),
        }
    };
    assert_eq!((update.task_id.as_str(), update.state()), (task_id.as_str(), TaskState::Running));
    assert!(!update.update_id.is_empty());
    fw.acknowledge(&update).await;
    // Explicit reconciliation answers with the latest state, needing no acknowledgement.
    let reconcile = pb::scheduler_call::Reconcile { task_ids: vec![task_id.clone(), "t-unknown".into()] };
    fw.call(skiff_proto::scheduler_call::Call::Reconcile(reconcile)).await.unwrap();
    let mut answers = HashMap::new();
    while answers.len() < 2 {
        if let Some(Event::Update(s)) = fw.next(Duration::from_secs(5)).await {
            assert!(s.update_id.is_empty(), "reconciliation updates carry no update id");
            answers.insert(s.task_id.clone(), s.state());
        }
    }
    assert_eq!(answers[&task_id], TaskState::Running);
    assert_eq!(answers["t-unknown"], TaskState::Lost);
    // Gone for good: after the failover timeout its task is killed.
    drop(fw);
    let gone = Instant::now();
    loop {
        let state = task_state(&cluster.addr, &task_id).await;
        if state == TaskState::Killed {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(6),
            "task still {state:?} {:?} after the framework left",
            gone.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = gone.elapsed();
    eprintln!("task killed {after:?} after its framework disconnected (failover timeout 2 s)");
    assert!(after >= Duration::from_secs(2), "killed before the failover timeout: {after:?}");
    // The removed framework no longer takes offers: the job scheduler (same role) places at once.
    let out = tokio::task::block_in_place(|| cluster.skiff(&["run", "-q", "--native", "--", "/bin/echo", "placed"]));
    assert_eq!(out.status.code(), Some(0), "{}", fleet::text(&out.stderr));
    assert_eq!(fleet::text(&out.stdout).trim(), "placed");
}

/// A framework that loses 30% of its acknowledgements (never sent the first time) still gets every
/// update: the leader forwards unacknowledged ones again (after 2 s, then with doubling intervals)
/// until acknowledged, and the framework's handler, which deduplicates by update id, handles each
/// exactly once. Once all are acknowledged nothing more is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_whose_acks_are_lost_are_forwarded_again_and_handled_once() {
    const TASKS: usize = 20;
    let agent: &[&str] = &["--cpus", "2", "--mem-mib", "4096"];
    let cluster = tokio::task::block_in_place(|| Cluster::start(&[], &[agent]));
    let mut fw = TestFramework::subscribe(&cluster.addr, "lossy", "default").await;
    let mut launched: Vec<String> = Vec::new();
    // Deliveries of each update, and what the handler did with each distinct one.
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    let mut handled: Vec<pb::TaskStatus> = Vec::new();
    let mut ack_dropped = 0;
    let mut terminal: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since: Option<Instant> = None;
    loop {
        assert!(Instant::now() < deadline, "not done: {} of {TASKS} tasks ended as handled", terminal.len());
        let all_acked = terminal.len() == TASKS && handled.iter().all(|s| deliveries[&s.update_id] > 0);
        // Done when every task ended and nothing came for 5 s (more than two resend intervals).
        if all_acked && quiet_since.is_some_and(|q| q.elapsed() >= Duration::from_secs(5)) {
            break;
        }
        match fw.next(Duration::from_millis(500)).await {
            Some(Event::Offers(offers)) => {
                for offer in offers.offers {
                    if launched.len() < TASKS && fits(&offer, TASK_CPUS, 64 << 20) {
                        launched
                            .extend(fw.accept(&offer.offer_id, vec![sleep_task(0, TASK_CPUS)]).await.expect("accept"));
                    } else {
                        fw.decline(&offer.offer_id, 600.0).await;
                    }
                }
            }
            Some(Event::Update(status)) if !status.update_id.is_empty() => {
                quiet_since = None;
                let n = deliveries.entry(status.update_id.clone()).or_default();
                *n += 1;
                if *n == 1 {
                    // The handler: each distinct update once.
                    handled.push(status.clone());
                    if TaskState::try_from(status.state).is_ok_and(|s| s == TaskState::Finished) {
                        assert!(terminal.insert(status.task_id.clone()), "two terminal updates of one task");
                    }
                    // Lose every acknowledgement whose turn is 0, 3 or 6 of each 10.
                    if [0, 3, 6].contains(&(handled.len() % 10)) {
                        ack_dropped += 1;
                        continue;
                    }
                }
                fw.acknowledge(&status).await;
            }
            Some(_) => {}
            None => {
                quiet_since.get_or_insert_with(Instant::now);
            }
        }
    }
    let redelivered = deliveries.values().filter(|&&n| n > 1).count();
    eprintln!(
        "{} distinct updates handled, {ack_dropped} acks lost, {redelivered} forwarded again, deliveries {}",
        handled.len(),
        deliveries.values().sum::<usize>()
    );
    assert_eq!(terminal.len(), TASKS, "every task's end handled once");
    assert!(ack_dropped >= handled.len() * 3 / 10 - 1, "{ack_dropped} of {} acks lost", handled.len());
    // Every lost ack of a task's last update was made good by a second delivery (an earlier update
    // of a task is superseded by its later one, which is what is kept and forwarded again).
    let last: HashMap<&str, &str> = handled.iter().map(|s| (s.task_id.as_str(), s.update_id.as_str())).collect();
    for (i, status) in handled.iter().enumerate() {
        if [0, 3, 6].contains(&((i + 1) % 10)) && last[status.task_id.as_str()] == status.update_id {
            assert!(deliveries[&status.update_id] >= 2, "update {status:?} was not forwarded again");
        }
    }
}

/// Native tasks are opt-in: an agent started without `--native-tasks` says so in its offers
/// (`skiff.native=false`) and refuses a native task launched on it anyway, naming why; one started
/// with it offers `skiff.native=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_native_tasks_only_when_started_to() {
    let off: &[&str] = &["--cpus", "1", "--mem-mib", "1024", fleet::NATIVE_OFF];
    let on: &[&str] = &["--cpus", "1", "--mem-mib", "1024"];
    let cluster = tokio::task::block_in_place(|| Cluster::start(&[], &[off, on]));
    let mut fw = TestFramework::subscribe(&cluster.addr, "native-check", "").await;
    let (mut seen, mut refused) = (HashMap::new(), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while (seen.len() < 2 || refused.is_none()) && Instant::now() < deadline {
        match fw.next(Duration::from_secs(1)).await {
            Some(Event::Offers(offers)) => {
                for offer in offers.offers {
                    let native = offer.attributes.get(pb::NATIVE_ATTRIBUTE).cloned().unwrap_or_default();
                    let idx = offer.attributes.get("idx").cloned().unwrap_or_default();
                    seen.insert(idx.clone(), native.clone());
                    if native == "false" && refused.is_none() {
                        fw.accept(&offer.offer_id, vec![sleep_task(30, 0.1)]).await.expect("accept");
                    } else {
                        fw.decline(&offer.offer_id, 0.5).await;
                    }
                }
            }
            Some(Event::Update(status)) => {
                fw.acknowledge(&status).await;
                if status.state() == TaskState::Failed {
                    refused = Some(status);
                }
            }
            _ => {}
        }
    }
    assert_eq!(seen.get("0").map(String::as_str), Some("false"), "{seen:?}");
    assert_eq!(seen.get("1").map(String::as_str), Some("true"), "{seen:?}");
    let refused = refused.expect("the native task on the agent without --native-tasks failed");
    assert!(
        refused.message.contains("native tasks are off on this agent (start it with --native-tasks)"),
        "{refused:?}"
    );
}
