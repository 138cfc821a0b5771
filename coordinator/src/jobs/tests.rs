use super::*;

fn r(millicpus: u64, mem_bytes: u64) -> Resources {
    Resources { millicpus, mem_bytes, disk_bytes: 0, wasm_slots: 0 }
}

fn offer(id: &str, agent: &str, resources: Resources) -> Offer {
    Offer {
        id: id.into(),
        agent_id: agent.into(),
        framework_id: FRAMEWORK_ID.into(),
        resources,
        epoch: 1,
        made_at: Instant::now(),
    }
}

fn job(id: &str, instances: u32, retry: Option<pb::RetryPolicy>, constraints: Vec<pb::Constraint>) -> pb::JobSpec {
    pb::JobSpec {
        job_id: id.into(),
        name: id.into(),
        instances,
        task: Some(pb::TaskSpec { args: vec!["n={instance}".into()], ..Default::default() }),
        retry,
        constraints,
        ..Default::default()
    }
}

fn no_attrs(_: &str) -> Option<AgentView<'static>> {
    None
}

#[test]
fn first_fit_in_queue_order() {
    let mut s = JobScheduler::new();
    s.add_job(job("j", 4, None, vec![]), 0, false);
    for (i, (id, need)) in [("big", r(1500, 10)), ("small1", r(500, 10)), ("small2", r(500, 10)), ("huge", r(4000, 10))]
        .into_iter()
        .enumerate()
    {
        s.add_task(id, "j", i as u32, 0, TaskState::Pending, need);
    }
    let decisions = s.on_offers(
        &[offer("o1", "a1", r(1000, 100)), offer("o2", "a2", r(2000, 100)), offer("o3", "a3", r(500, 5))],
        no_attrs,
    );
    assert_eq!(
        decisions,
        vec![
            // big does not fit o1, so the two small ones take it.
            Decision::Accept { offer_id: "o1".into(), launches: vec!["small1".into(), "small2".into()] },
            Decision::Accept { offer_id: "o2".into(), launches: vec!["big".into()] },
            Decision::Decline { offer_id: "o3".into() },
        ]
    );
    assert_eq!(s.pending(), 1, "huge fits nowhere and stays queued");
    assert!(s.remove("huge"));
    assert!(!s.has_pending());
}

#[test]
fn constraints_pick_agents() {
    let zone_b = pb::Constraint {
        attribute: "zone".into(),
        operator: pb::constraint::Operator::Eq as i32,
        values: vec!["b".into()],
    };
    let mut s = JobScheduler::new();
    s.add_job(job("j", 1, None, vec![zone_b]), 0, false);
    s.add_task("t", "j", 0, 0, TaskState::Pending, r(100, 1));
    let a: HashMap<String, String> = [("zone".to_string(), "a".to_string())].into();
    let b: HashMap<String, String> = [("zone".to_string(), "b".to_string())].into();
    let cached = HashSet::new();
    let attrs = |agent: &str| {
        let attributes = match agent {
            "in-a" => &a,
            "in-b" => &b,
            _ => return None,
        };
        Some(AgentView { attributes, cached: &cached, total: r(1000, 100) })
    };
    let decisions = s.on_offers(&[offer("o1", "in-a", r(1000, 100)), offer("o2", "in-b", r(1000, 100))], attrs);
    assert_eq!(
        decisions,
        vec![
            Decision::Decline { offer_id: "o1".into() },
            Decision::Accept { offer_id: "o2".into(), launches: vec!["t".into()] },
        ]
    );
}

#[test]
fn retries_back_off_then_give_up() {
    let retry = pb::RetryPolicy { attempts: 2, backoff_ms: 100, max_backoff_ms: 150 };
    let t0 = Instant::now();
    let mut s = JobScheduler::new();
    s.add_job(job("j", 1, Some(retry), vec![]), 0, false);
    s.add_task("t0", "j", 0, 0, TaskState::Pending, r(1, 1));
    let status = |s: &JobScheduler| s.status("j", |_| None).unwrap();
    assert_eq!(status(&s).state(), JobState::Running);

    s.on_status("t0", TaskState::Failed, 0, t0, 0);
    assert_eq!(s.next_retry(), Some(t0 + Duration::from_millis(100)));
    assert!(s.due_retries(t0 + Duration::from_millis(99)).is_empty());
    assert_eq!(
        s.due_retries(t0 + Duration::from_millis(100)),
        vec![Attempt { job_id: "j".into(), instance: 0, attempt: 1 }]
    );
    assert_eq!(status(&s).instances[0].retry_at_ms, 0);
    s.add_task("t1", "j", 0, 1, TaskState::Pending, r(1, 1));

    s.on_status("t1", TaskState::Lost, 0, t0, 0);
    assert_eq!(s.next_retry(), Some(t0 + Duration::from_millis(150)), "200 ms capped at 150");
    assert_eq!(s.due_retries(t0 + Duration::from_secs(1)).len(), 1);
    s.add_task("t2", "j", 0, 2, TaskState::Pending, r(1, 1));
    assert_eq!(status(&s).state(), JobState::Running);

    s.on_status("t2", TaskState::Failed, 0, t0, 0);
    assert_eq!(s.next_retry(), None, "three attempts used");
    let st = status(&s);
    assert_eq!((st.state(), st.instances[0].attempts, st.instances[0].task_id.as_str()), (JobState::Failed, 3, "t2"));
}

#[test]
fn job_states_and_kill() {
    let mut s = JobScheduler::new();
    s.add_job(job("j", 2, None, vec![]), 0, false);
    s.add_task("a", "j", 0, 0, TaskState::Pending, r(1, 1));
    s.add_task("b", "j", 1, 0, TaskState::Pending, r(1, 1));
    s.on_status("a", TaskState::Finished, 0, Instant::now(), 0);
    assert_eq!(s.status("j", |_| None).unwrap().state(), JobState::Running);
    assert_eq!(s.kill("j"), Some(vec!["b".to_string()]));
    assert!(!s.has_pending(), "a killed job's queued tasks leave the queue");
    assert_eq!(s.status("j", |_| None).unwrap().state(), JobState::Killed);
    assert_eq!(s.kill("nope"), None);

    s.add_job(job("k", 2, None, vec![]), 1, false);
    s.add_task("c", "k", 0, 0, TaskState::Running, r(1, 1));
    assert_eq!(s.missing_instances("k"), vec![1]);
    s.add_task("d", "k", 1, 0, TaskState::Pending, r(1, 1));
    s.on_status("c", TaskState::Finished, 0, Instant::now(), 0);
    s.on_status("d", TaskState::Finished, 0, Instant::now(), 0);
    assert_eq!(s.status("k", |_| None).unwrap().state(), JobState::Finished);
    assert_eq!(s.job_ids(), vec!["j".to_string(), "k".to_string()]);
}

#[test]
fn instance_specs_and_backoff() {
    let spec = instance_spec(&job("j", 3, None, vec![]), 2);
    assert_eq!(spec.args, vec!["n=2".to_string()]);
    assert_eq!(spec.env["SKIFF_INSTANCE"], "2");
    assert_eq!(spec.env["SKIFF_INSTANCES"], "3");
    assert_eq!(spec.name, "j[2]");

    let retry = pb::RetryPolicy { attempts: 5, backoff_ms: 1000, max_backoff_ms: 0 };
    let waits: Vec<u64> = (1..=8).map(|a| backoff(&retry, a).as_millis() as u64).collect();
    assert_eq!(waits, vec![1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
}

fn scheduler(order: QueueOrder, placement: Placement) -> JobScheduler {
    JobScheduler::with_policy(Policy { order, placement, aging: Duration::from_secs(60) })
}

fn timed_job(id: &str, instances: u32, priority: i32, expected_ms: u64) -> pb::JobSpec {
    pb::JobSpec { priority, expected_duration_ms: expected_ms, ..job(id, instances, None, vec![]) }
}

/// Which job's task the one-task offer goes to, under each order.
#[test]
fn queue_orders_pick_under_contention() {
    // Submitted in this order: "long" (priority 0, 1 s), "short" (priority 0, 100 ms),
    // "urgent" (priority 10, 5 s, 3 instances), "unknown" (no expected duration).
    let cases = [
        (QueueOrder::Fifo, "long"),
        (QueueOrder::Priority, "urgent"),
        (QueueOrder::Sjf, "short"),
        // Remaining task-seconds: long 1 s, short 0.1 s, urgent 15 s.
        (QueueOrder::Srtf, "short"),
    ];
    for (order, want) in cases {
        let mut s = scheduler(order, Placement::Greedy);
        for (id, n, prio, ms) in
            [("long", 1, 0, 1000), ("short", 1, 0, 100), ("urgent", 3, 10, 5000), ("unknown", 1, 0, 0)]
        {
            s.add_job(timed_job(id, n, prio, ms), 0, false);
            for i in 0..n {
                s.add_task(&format!("{id}-{i}"), id, i, 0, TaskState::Pending, r(1000, 1));
            }
        }
        let decisions = s.on_offers(&[offer("o", "a", r(1000, 100))], no_attrs);
        let Decision::Accept { launches, .. } = &decisions[0] else { panic!("{order:?}: nothing placed") };
        assert_eq!(launches.len(), 1);
        assert!(launches[0].starts_with(want), "{order:?}: placed {launches:?}, want {want}");
        assert_eq!(s.status(want, |_| None).unwrap().scheduler, Policy { order, ..Policy::default() }.to_string());
    }
}

#[test]
fn sjf_learns_durations_from_finished_tasks() {
    let mut s = scheduler(QueueOrder::Sjf, Placement::Greedy);
    s.add_job(timed_job("declared", 2, 0, 1000), 0, false);
    s.add_job(timed_job("observed", 3, 0, 0), 0, false);
    s.add_task("d0", "declared", 0, 0, TaskState::Pending, r(1000, 1));
    s.add_task("o0", "observed", 0, 0, TaskState::Running, r(1000, 1));
    s.add_task("o1", "observed", 1, 0, TaskState::Pending, r(1000, 1));
    let place = |s: &mut JobScheduler| match &s.on_offers(&[offer("o", "a", r(1000, 100))], no_attrs)[0] {
        Decision::Accept { launches, .. } => launches[0].clone(),
        d => panic!("{d:?}"),
    };
    // Unknown durations go last.
    assert_eq!(place(&mut s), "d0");
    s.add_task("d1", "declared", 1, 0, TaskState::Pending, r(1000, 1));
    // "observed" finished a task in 50 ms: now it is the shorter job.
    s.on_status("o0", TaskState::Finished, 50_000, Instant::now(), 0);
    assert_eq!(place(&mut s), "o1");
}

#[test]
fn mcf_uses_compiled_modules_more_than_greedy_and_respects_offers() {
    let wasm = |sha: &str| pb::TaskSpec {
        kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask { module_sha256: sha.into(), ..Default::default() })),
        ..Default::default()
    };
    let attrs = HashMap::new();
    // Agents 0..10; the odd ones have the module compiled. Each offer holds 4 tasks.
    let cached: Vec<HashSet<String>> =
        (0..10).map(|i| if i % 2 == 1 { HashSet::from(["m".to_string()]) } else { HashSet::new() }).collect();
    let offers: Vec<Offer> = (0..10).map(|i| offer(&format!("o{i}"), &format!("a{i}"), r(4000, 1000))).collect();
    let mut hits = Vec::new();
    for placement in [Placement::Greedy, Placement::Mcf] {
        let mut s = scheduler(QueueOrder::Fifo, placement);
        s.add_job(pb::JobSpec { task: Some(wasm("m")), ..job("j", 12, None, vec![]) }, 0, false);
        for i in 0..12 {
            s.add_task(&format!("t{i}"), "j", i, 0, TaskState::Pending, r(1000, 10));
        }
        let view = |agent: &str| {
            let i: usize = agent[1..].parse().ok()?;
            Some(AgentView { attributes: &attrs, cached: &cached[i], total: r(4000, 1000) })
        };
        let decisions = s.on_offers(&offers, view);
        let mut placed = 0;
        let mut on_cached = 0;
        for (i, d) in decisions.iter().enumerate() {
            if let Decision::Accept { launches, .. } = d {
                assert!(launches.len() <= 4, "{placement:?}: offer {i} overfilled: {launches:?}");
                placed += launches.len();
                if i % 2 == 1 {
                    on_cached += launches.len();
                }
            }
        }
        assert_eq!(placed, 12, "{placement:?}: everything fits somewhere");
        hits.push(on_cached);
    }
    assert!(hits[1] > hits[0], "mcf placed {} of 12 on agents with the module, greedy {}", hits[1], hits[0]);
}
