use super::*;

fn status(task_id: &str, state: pb::TaskState) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: task_id.into(),
        state: state as i32,
        update_id: "4f1c2b6e-8d6f-4a55-9f0e-0d8b5f7c1a2b".into(),
        ..Default::default()
    }
}

fn register() -> pb::Register {
    pb::Register {
        agent_id: "agent-1".into(),
        hostname: "host.example".into(),
        resources: Some(pb::Resources { cpus: 2.0, mem_bytes: 1 << 30, ..Default::default() }),
        attributes: [("zone".to_owned(), "a".to_owned())].into(),
        tasks: vec![status("t-1", pb::TaskState::Running)],
        cached_modules: vec!["a".repeat(64)],
        ..Default::default()
    }
}

#[test]
fn statuses_follow_the_rules() {
    assert!(StatusReport::try_from(status("t-1", pb::TaskState::Running)).is_ok());
    assert!(StatusReport::try_from(status("t-1", pb::TaskState::Finished)).is_ok());
    let bad: Vec<(pb::TaskStatus, &str)> = vec![
        (status("", pb::TaskState::Running), "task id"),
        (status("../etc", pb::TaskState::Running), "task id"),
        (status("t-1", pb::TaskState::Pending), "never reports TASK_STATE_PENDING"),
        (status("t-1", pb::TaskState::Unspecified), "never reports"),
        (pb::TaskStatus { state: 99, ..status("t-1", pb::TaskState::Running) }, "state 99 is not a task state"),
        (pb::TaskStatus { reason: 1000, ..status("t-1", pb::TaskState::Failed) }, "reason 1000"),
        (pb::TaskStatus { update_id: String::new(), ..status("t-1", pb::TaskState::Running) }, "update_id"),
        (pb::TaskStatus { update_id: "u".repeat(65), ..status("t-1", pb::TaskState::Running) }, "update_id"),
        (
            pb::TaskStatus {
                outputs: vec![pb::OutputFile { path: "/out".into(), sha256: "xyz".into(), ..Default::default() }],
                ..status("t-1", pb::TaskState::Finished)
            },
            "sha256",
        ),
        (
            pb::TaskStatus {
                outputs: vec![pb::OutputFile::default(); MAX_OUTPUT_FILES + 1],
                ..status("t-1", pb::TaskState::Finished)
            },
            "output files",
        ),
    ];
    for (s, why) in bad {
        let err = StatusReport::try_from(s.clone()).expect_err(&format!("{s:?} passed"));
        assert!(err.to_string().contains(why), "{err} does not say {why:?}");
    }
}

#[test]
fn long_status_messages_are_cut_on_a_character_boundary() {
    let message = "é".repeat(MAX_STATUS_MESSAGE_BYTES);
    let report = StatusReport::try_from(pb::TaskStatus { message, ..status("t-1", pb::TaskState::Failed) }).unwrap();
    assert!(report.message.len() <= MAX_STATUS_MESSAGE_BYTES);
    assert!(report.message.ends_with(CUT));
    let short = StatusReport::try_from(pb::TaskStatus { message: "ok".into(), ..status("t-1", pb::TaskState::Failed) });
    assert_eq!(short.unwrap().message, "ok");
}

#[test]
fn output_chunks_follow_the_rules() {
    let chunk = |stream: i32, len: usize, offset: Option<u64>| pb::TaskOutput {
        task_id: "t-1".into(),
        stream,
        data: vec![b'x'; len],
        offset,
        ..Default::default()
    };
    assert!(OutputChunk::try_from(chunk(1, MAX_OUTPUT_CHUNK_BYTES, Some(0))).is_ok());
    assert!(OutputChunk::try_from(chunk(2, 10, None)).is_ok());
    for (c, why) in [
        (chunk(0, 1, None), "neither stdout nor stderr"),
        (chunk(7, 1, None), "neither stdout nor stderr"),
        (chunk(1, MAX_OUTPUT_CHUNK_BYTES + 1, None), "more than"),
        (chunk(1, 2, Some(u64::MAX)), "overflows"),
        (pb::TaskOutput { task_id: "a b".into(), ..chunk(1, 1, None) }, "task id"),
    ] {
        let err = OutputChunk::try_from(c).unwrap_err();
        assert!(err.to_string().contains(why), "{err} does not say {why:?}");
    }
}

#[test]
fn registrations_follow_the_rules() {
    let mut ok = Registration::try_from(register()).unwrap();
    assert_eq!(ok.take_tasks().len(), 1);
    let bad: Vec<(pb::Register, &str)> = vec![
        (pb::Register { agent_id: String::new(), ..register() }, "agent"),
        (pb::Register { agent_id: "-x".into(), ..register() }, "agent"),
        (pb::Register { hostname: "h".repeat(254), ..register() }, "hostname"),
        (
            pb::Register { attributes: (0..65).map(|i| (i.to_string(), String::new())).collect(), ..register() },
            "attributes",
        ),
        (pb::Register { attributes: [(String::new(), "v".to_owned())].into(), ..register() }, "attribute"),
        (pb::Register { attributes: [("k".to_owned(), "v".repeat(257))].into(), ..register() }, "attribute"),
        (
            pb::Register { resources: Some(pb::Resources { cpus: f64::NAN, ..Default::default() }), ..register() },
            "cpus",
        ),
        (pb::Register { resources: Some(pb::Resources { cpus: -1.0, ..Default::default() }), ..register() }, "cpus"),
        (
            pb::Register { tasks: vec![status("t-1", pb::TaskState::Running); MAX_RECONCILE_TASKS + 1], ..register() },
            "tasks",
        ),
        (pb::Register { tasks: vec![status("t-1", pb::TaskState::Pending)], ..register() }, "never reports"),
        (pb::Register { cached_modules: vec!["nope".into()], ..register() }, "cached module"),
    ];
    for (r, why) in bad {
        let err = Registration::try_from(r).unwrap_err();
        assert!(err.to_string().contains(why), "{err} does not say {why:?}");
    }
}

#[test]
fn session_messages_are_checked_by_kind() {
    use pb::agent_message::Msg;
    assert_eq!(AgentReport::try_from(Msg::Heartbeat(pb::Heartbeat::default())).unwrap(), AgentReport::Heartbeat);
    assert!(matches!(AgentReport::try_from(Msg::Register(register())).unwrap(), AgentReport::Register));
    assert!(AgentReport::try_from(Msg::Status(status("t-1", pb::TaskState::Pending))).is_err());
    assert!(AgentReport::try_from(Msg::Usage(pb::TaskUsage { task_id: "".into(), usage: None })).is_err());
    assert!(matches!(
        AgentReport::try_from(Msg::Usage(pb::TaskUsage { task_id: "t-1".into(), usage: None })).unwrap(),
        AgentReport::Usage(_)
    ));
}
