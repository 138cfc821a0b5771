use super::*;

fn call(call: Call) -> pb::SchedulerCall {
    pb::SchedulerCall { framework_id: "fw-0123456789abcdef".into(), epoch: 3, call: Some(call) }
}

fn launch(task_id: &str) -> pb::TaskSpec {
    pb::TaskSpec {
        task_id: task_id.into(),
        kind: Some(pb::task_spec::Kind::Native(pb::NativeTask { command: "true".into(), ..Default::default() })),
        resources: Some(pb::Resources { cpus: 0.1, mem_bytes: 1 << 20, ..Default::default() }),
        ..Default::default()
    }
}

fn accept(launches: Vec<pb::TaskSpec>, refuse_seconds: f64) -> Call {
    Call::Accept(pb::scheduler_call::Accept { offer_ids: vec!["o-1".into()], launches, refuse_seconds })
}

fn refused(c: pb::SchedulerCall) -> CallError {
    FrameworkCall::try_from(c.clone()).expect_err(&format!("{c:?} passed"))
}

#[test]
fn calls_become_checked_values() {
    let ok = FrameworkCall::try_from(call(accept(vec![launch("t-1"), launch("")], 5.0))).unwrap();
    assert_eq!(ok.epoch, 3);
    let CallKind::Accept { offer_ids, launches, refuse } = ok.kind else { panic!("not an accept") };
    assert_eq!((offer_ids.len(), launches.len(), refuse), (1, 2, Duration::from_secs(5)));
    let decline = Call::Decline(pb::scheduler_call::Decline { offer_ids: vec!["o-1".into()], refuse_seconds: None });
    assert!(matches!(FrameworkCall::try_from(call(decline)).unwrap().kind, CallKind::Decline { refuse: None, .. }));
    let reconcile = Call::Reconcile(pb::scheduler_call::Reconcile { task_ids: vec![] });
    assert!(matches!(FrameworkCall::try_from(call(reconcile)).unwrap().kind, CallKind::Reconcile { .. }));
}

#[test]
fn bad_calls_are_refused_naming_the_problem() {
    let cases: Vec<(pb::SchedulerCall, &str)> = vec![
        (pb::SchedulerCall { framework_id: String::new(), ..call(Call::Revive(Default::default())) }, "framework"),
        (pb::SchedulerCall { call: None, ..call(Call::Revive(Default::default())) }, "no call given"),
        (call(accept(vec![launch("a b")], 0.0)), "task a b: "),
        (call(accept(vec![launch("t-1")], f64::NAN)), "refuse_seconds NaN"),
        (call(accept(vec![launch("t-1")], -1.0)), "refuse_seconds -1"),
        (call(accept(vec![launch("t-1")], 1e9)), "more than the limit"),
        (
            call(Call::Decline(pb::scheduler_call::Decline { offer_ids: vec![String::new()], refuse_seconds: None })),
            "offer id",
        ),
        (call(Call::Kill(pb::scheduler_call::Kill { task_id: "../x".into() })), "task"),
        (
            call(Call::Acknowledge(pb::scheduler_call::Acknowledge {
                task_id: "t-1".into(),
                update_id: "u".repeat(65),
            })),
            "update_id",
        ),
        (call(Call::Reconcile(pb::scheduler_call::Reconcile { task_ids: vec!["t-1".into(), "".into()] })), "task"),
    ];
    for (c, why) in cases {
        let err = refused(c);
        assert!(matches!(err, CallError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains(why), "{err} does not say {why:?}");
    }
    let many = Call::Reconcile(pb::scheduler_call::Reconcile {
        task_ids: (0..=MAX_RECONCILE_TASKS).map(|i| format!("t-{i}")).collect(),
    });
    let err = refused(call(many));
    assert!(matches!(&err, CallError::Limit(m) if m.contains("more than the limit of 10000")), "{err:?}");
    let offers = Call::Decline(pb::scheduler_call::Decline {
        offer_ids: (0..=MAX_OFFERS_PER_CALL).map(|i| format!("o-{i}")).collect(),
        refuse_seconds: None,
    });
    assert!(matches!(refused(call(offers)), CallError::Limit(_)));
}

#[test]
fn subscriptions_follow_the_rules() {
    let info = |name: &str, framework_id: &str, failover_timeout_ms: u64| pb::FrameworkInfo {
        name: name.into(),
        framework_id: framework_id.into(),
        failover_timeout_ms,
        ..Default::default()
    };
    let ok = Subscription::try_from(info("dots", "", 1000)).unwrap();
    assert_eq!(ok.role, "default");
    assert!(Subscription::try_from(info("dots", "fw-0123456789abcdef", 0)).is_ok());
    for (i, why) in [
        (info("", "", 0), "name is empty"),
        (info(&"n".repeat(257), "", 0), "at most 256 bytes"),
        (info("dots", "fw/../x", 0), "framework"),
        (
            info("dots", "", MAX_FAILOVER_TIMEOUT_MS + 1),
            "failover_timeout_ms is 604800001, more than the limit of 604800000",
        ),
    ] {
        let err = Subscription::try_from(i).unwrap_err();
        assert!(err.to_string().contains(why), "{err} does not say {why:?}");
    }
}
