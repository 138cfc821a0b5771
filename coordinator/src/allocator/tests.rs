use super::*;

const GIB: u64 = 1 << 30;

fn res(millicpus: u64, mem_gib: u64) -> Resources {
    Resources { millicpus, mem_bytes: mem_gib * GIB, ..Default::default() }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Who got which agents in one cycle, as (agent, framework) pairs.
fn pairs(allocations: &[Allocation]) -> Vec<(&str, &str)> {
    allocations.iter().map(|a| (a.agent_id.as_str(), a.framework_id.as_str())).collect()
}

/// Sums agree at every level and match the per-agent records.
fn check_invariants(al: &Allocator) {
    let mut by_fw: HashMap<usize, Resources> = HashMap::new();
    let mut active = Resources::default();
    for (a, agent) in al.agents.iter().enumerate() {
        let Some(agent) = agent else { continue };
        if agent.active {
            active = active.saturating_add(&agent.total);
        }
        let mut sum = Resources::default();
        for (&f, r) in &agent.allocations {
            assert!(!is_zero(r), "empty allocation record");
            sum = sum.saturating_add(r);
            let e = by_fw.entry(f).or_default();
            *e = e.saturating_add(r);
            assert!(al.frameworks[f].as_ref().unwrap().agents.contains(&a));
        }
        assert_eq!(sum, agent.allocated, "agent {}", agent.id);
    }
    assert_eq!(active, al.active_total);
    let mut by_role = vec![Resources::default(); al.roles.len()];
    for (f, fw) in al.frameworks.iter().enumerate() {
        let Some(fw) = fw else { continue };
        assert_eq!(by_fw.get(&f).copied().unwrap_or_default(), fw.allocated, "framework {}", fw.id);
        assert_eq!(fw.agents.len(), al.agents.iter().flatten().filter(|a| a.allocations.contains_key(&f)).count());
        by_role[fw.role] = by_role[fw.role].saturating_add(&fw.allocated);
    }
    for (role, sum) in al.roles.iter().zip(by_role) {
        assert_eq!(role.allocated, sum, "role {}", role.name);
    }
}

/// Frameworks launch one task per offer while it fits (recovering the rest) and decline with a
/// long filter when it does not, until nothing is offered; returns the task count per framework.
fn run_one_task_per_offer(al: &mut Allocator, demands: &[(&str, Resources)], now: Instant) -> Vec<usize> {
    let mut tasks = vec![0; demands.len()];
    for _ in 0..1000 {
        let allocations = al.allocate(now);
        if allocations.is_empty() {
            return tasks;
        }
        for alloc in allocations {
            let i = demands.iter().position(|(id, _)| *id == alloc.framework_id).unwrap();
            match alloc.resources.checked_sub(&demands[i].1) {
                Some(rest) => {
                    tasks[i] += 1;
                    al.recover(&alloc.framework_id, &alloc.agent_id, rest, None, now);
                }
                None => {
                    al.recover(&alloc.framework_id, &alloc.agent_id, alloc.resources, Some(secs(3600.0)), now);
                }
            }
        }
        check_invariants(al);
    }
    panic!("allocation did not settle");
}

#[test]
fn drf_paper_example() {
    // DRF paper: 9 CPUs, 18 GB; A's tasks <1 CPU, 4 GB> (memory-dominant), B's <3 CPU, 1 GB>.
    // Progressive filling: A, B, A, B, A -> A 3 tasks (12/18 = 2/3 of memory), B 2 tasks (6/9 of CPU).
    let a = ("A", res(1000, 4));
    let b = ("B", res(3000, 1));
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str, Resources)], &'a [usize]);
    let cases: [Case; 4] = [
        ("same role", &[("A", "r", a.1), ("B", "r", b.1)], &[3, 2]),
        ("one role each", &[("A", "ra", a.1), ("B", "rb", b.1)], &[3, 2]),
        ("A alone: memory bound", &[("A", "r", a.1)], &[4]),
        ("B alone: cpu bound", &[("B", "r", b.1)], &[3]),
    ];
    for (name, frameworks, want) in cases {
        let mut al = Allocator::new();
        al.add_agent("s1", res(9000, 18));
        for (id, role, _) in frameworks {
            al.add_framework(id, role);
        }
        let demands: Vec<(&str, Resources)> = frameworks.iter().map(|(id, _, d)| (*id, *d)).collect();
        let tasks = run_one_task_per_offer(&mut al, &demands, Instant::now());
        assert_eq!(tasks, want, "{name}");
        if want.len() == 2 {
            assert!((al.framework_share("A") - 2.0 / 3.0).abs() < 1e-9, "{name}");
            assert!((al.framework_share("B") - 2.0 / 3.0).abs() < 1e-9, "{name}");
        }
    }
}

#[test]
fn weights_converge_to_their_ratio() {
    // (weight of a, weight of b, agents, agents a should end with); frameworks keep whole offers.
    let cases = [(1.0, 1.0, 100, 50), (1.0, 3.0, 100, 25), (2.0, 1.0, 120, 80), (1.0, 9.0, 100, 10)];
    for (wa, wb, agents, want_a) in cases {
        let mut al = Allocator::new();
        al.set_role("a", RoleConfig { weight: wa, ..Default::default() });
        al.set_role("b", RoleConfig { weight: wb, ..Default::default() });
        al.add_framework("fa", "a");
        al.add_framework("fb", "b");
        for i in 0..agents {
            al.add_agent(&format!("s{i:03}"), res(1000, 1));
        }
        let allocations = al.allocate(Instant::now());
        assert_eq!(allocations.len(), agents);
        let got_a = allocations.iter().filter(|a| a.framework_id == "fa").count();
        assert!(got_a.abs_diff(want_a) <= 1, "weights {wa}:{wb}: a got {got_a}, want {want_a}");
        // Weighted shares are within one agent's worth (of the lighter role) of each other.
        let one_agent = 1.0 / agents as f64 / wa.min(wb);
        let (sa, sb) = (al.role_weighted_share("a"), al.role_weighted_share("b"));
        assert!((sa - sb).abs() <= one_agent + 1e-12, "weights {wa}:{wb}: {sa} vs {sb}");
        assert!((al.role_share("a") - got_a as f64 / agents as f64).abs() < 1e-12);
        assert!(al.allocate(Instant::now()).is_empty(), "nothing is left");
        check_invariants(&al);
    }
}

#[test]
fn weights_over_many_cycles() {
    // Agents arrive a few at a time; shares still converge to 1:3.
    let mut al = Allocator::new();
    al.set_role("light", RoleConfig { weight: 1.0, ..Default::default() });
    al.set_role("heavy", RoleConfig { weight: 3.0, ..Default::default() });
    al.add_framework("l", "light");
    al.add_framework("h", "heavy");
    let now = Instant::now();
    for i in 0..200 {
        al.add_agent(&format!("s{i:03}"), res(1000, 1));
        if i % 7 == 0 {
            al.allocate(now);
        }
    }
    al.allocate(now);
    let (l, h) = (al.allocated("l").millicpus / 1000, al.allocated("h").millicpus / 1000);
    assert_eq!(l + h, 200);
    assert!(l.abs_diff(50) <= 1, "light {l}, heavy {h}");
}

#[test]
fn quota_guarantee_is_served_first() {
    // q already uses 3 of 5 agents (share 0.6), r nothing: without a guarantee r gets both free
    // agents; while q is below its guarantee, q gets them.
    let cases = [
        ("no guarantee", Resources::default(), 0, 2),
        ("cpu guarantee unmet", res(5000, 0), 2, 0),
        ("memory guarantee unmet", res(0, 4), 1, 1),
        ("guarantee met", res(3000, 3), 0, 2),
    ];
    for (name, guarantee, want_q, want_r) in cases {
        let mut al = Allocator::new();
        al.set_role("q", RoleConfig { guarantee, ..Default::default() });
        al.add_framework("fq", "q");
        al.add_framework("fr", "r");
        for i in 0..5 {
            al.add_agent(&format!("s{i}"), res(1000, 1));
        }
        for i in 0..3 {
            al.allocate_used("fq", &format!("s{i}"), res(1000, 1));
        }
        assert!(al.framework_share("fq") > al.framework_share("fr"));
        let got = al.allocate(Instant::now());
        let count = |fw: &str| got.iter().filter(|a| a.framework_id == fw).count();
        assert_eq!((count("fq"), count("fr")), (want_q, want_r), "{name}");
        check_invariants(&al);
    }
}

#[test]
fn quota_limit_caps_offers() {
    let limit = Resources { millicpus: 3000, mem_bytes: 3 * GIB, disk_bytes: 100, wasm_slots: 8 };
    let agent = Resources { millicpus: 2000, mem_bytes: 2 * GIB, disk_bytes: 100, wasm_slots: 4 };
    let mut al = Allocator::new();
    al.set_role("l", RoleConfig { limit: Some(limit), ..Default::default() });
    al.add_framework("fl", "l");
    for id in ["s0", "s1", "s2"] {
        al.add_agent(id, agent);
    }
    let now = Instant::now();
    let got = al.allocate(now);
    assert_eq!(got.len(), 2, "the third agent is not offered: the limit is reached");
    assert_eq!(got[0].resources, agent);
    assert_eq!(got[1].resources, Resources { millicpus: 1000, mem_bytes: GIB, disk_bytes: 0, wasm_slots: 4 });
    assert_eq!(al.allocated("fl"), limit);
    assert!(al.allocate(now).is_empty());
    // Another role gets the rest: the capped agent's remainder and the untouched agent.
    al.add_framework("fo", "o");
    let got = al.allocate(now);
    let mut got: Vec<_> = got.iter().map(|a| (a.framework_id.as_str(), a.resources)).collect();
    got.sort_by_key(|(_, r)| r.millicpus);
    let remainder = Resources { millicpus: 1000, mem_bytes: GIB, disk_bytes: 100, wasm_slots: 0 };
    assert_eq!(got, [("fo", remainder), ("fo", agent)]);
    // Recovering part of the limit makes exactly that much offerable again.
    al.recover("fl", "s0", res(500, 0), None, now);
    al.recover("fo", "s1", remainder, None, now);
    al.suppress("fo");
    let got = al.allocate(now);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].framework_id.as_str(), got[0].resources), ("fl", res(500, 0)));
    assert_eq!(al.allocated("fl"), limit);
    assert!(limit.contains(&al.role_allocated("l")));
    check_invariants(&al);
}

#[test]
fn unfilter_clears_one_agent_only() {
    let t0 = Instant::now();
    let mut al = Allocator::new();
    al.add_framework("fw", "r");
    for a in ["a1", "a2"] {
        al.add_agent(a, Resources { millicpus: 1000, mem_bytes: 1 << 30, disk_bytes: 0, wasm_slots: 0 });
    }
    for offer in al.allocate(t0) {
        al.recover("fw", &offer.agent_id, offer.resources, Some(Duration::from_secs(60)), t0);
    }
    assert!(al.allocate(t0).is_empty(), "both agents filtered");
    al.unfilter("fw", "a2");
    let again: Vec<String> = al.allocate(t0).into_iter().map(|a| a.agent_id).collect();
    assert_eq!(again, vec!["a2".to_string()]);
    assert!(al.has_framework("fw") && !al.has_framework("other"));
}

#[test]
fn filters_expire_and_revive_clears_them() {
    let t0 = Instant::now();
    let mut al = Allocator::new();
    al.add_agent("s", res(1000, 1));
    al.add_framework("a", "r");
    al.add_framework("b", "r");
    let all = res(1000, 1);
    // (offered at, who gets it); each holder declines, a with a 5 s filter at t0, b without one.
    assert_eq!(pairs(&al.allocate(t0)), [("s", "a")]);
    al.recover("a", "s", all, Some(secs(5.0)), t0);
    let steps = [(0.0, "b"), (4.999, "b"), (5.0, "a")];
    for (at, want) in steps {
        let now = t0 + secs(at);
        assert_eq!(pairs(&al.allocate(now)), [("s", want)], "at t0+{at}s");
        al.recover(want, "s", all, None, now);
    }
    // a alone: filtered means not offered at all.
    al.remove_framework("b");
    al.recover("a", "s", Resources::default(), Some(secs(5.0)), t0 + secs(10.0));
    assert!(al.allocate(t0 + secs(14.0)).is_empty());
    al.revive("a");
    assert_eq!(pairs(&al.allocate(t0 + secs(14.0))), [("s", "a")]);
    // A zero refusal sets no filter; an earlier refusal does not shorten a later one.
    al.recover("a", "s", all, Some(Duration::ZERO), t0);
    assert_eq!(pairs(&al.allocate(t0)), [("s", "a")]);
    al.recover("a", "s", all, Some(secs(60.0)), t0);
    al.recover("a", "s", Resources::default(), Some(secs(1.0)), t0);
    assert!(al.allocate(t0 + secs(30.0)).is_empty());
    assert_eq!(pairs(&al.allocate(t0 + secs(60.0))), [("s", "a")]);
    check_invariants(&al);
}

#[test]
fn suppress_stops_offers_until_revive() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent("s", res(1000, 1));
    al.add_framework("a", "r");
    al.add_framework("b", "r");
    al.suppress("a");
    assert_eq!(pairs(&al.allocate(now)), [("s", "b")]);
    al.recover("b", "s", res(1000, 1), None, now);
    al.suppress("b");
    assert!(al.allocate(now).is_empty());
    al.revive("a");
    assert_eq!(pairs(&al.allocate(now)), [("s", "a")]);
}

#[test]
fn inactive_agents_and_frameworks_are_not_allocated() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent("s0", res(1000, 1));
    al.add_agent("s1", res(1000, 1));
    al.add_framework("a", "r");
    al.activate_agent("s1", false);
    assert_eq!(pairs(&al.allocate(now)), [("s0", "a")]);
    assert_eq!(al.cluster_total(), res(1000, 1));
    assert_eq!(al.framework_share("a"), 1.0);
    // An inactive framework keeps its allocation but gets nothing new.
    al.activate_agent("s1", true);
    al.activate_framework("a", false);
    assert!(al.allocate(now).is_empty());
    assert_eq!(al.allocated("a"), res(1000, 1));
    assert_eq!(al.framework_share("a"), 0.5);
    al.activate_framework("a", true);
    assert_eq!(pairs(&al.allocate(now)), [("s1", "a")]);
    // An unreachable agent keeps its accounting but leaves the denominator.
    al.activate_agent("s1", false);
    assert_eq!(al.allocated("a"), res(2000, 2));
    assert_eq!(al.framework_share("a"), 2.0);
    check_invariants(&al);
}

#[test]
fn remove_agent_and_framework_drop_allocations() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent("s0", res(1000, 1));
    al.add_agent("s1", res(1000, 1));
    al.add_framework("a", "r");
    al.add_framework("b", "r");
    al.allocate_used("a", "s0", res(400, 0));
    al.allocate_used("b", "s0", res(100, 0));
    assert_eq!(al.free("s0"), Some(res(500, 1)));
    al.allocate_used("a", "s1", res(1000, 1));
    al.remove_agent("s1");
    assert_eq!(al.free("s1"), None);
    assert_eq!(al.allocated("a"), res(400, 0));
    assert_eq!(al.role_allocated("r"), res(500, 0));
    assert_eq!(al.framework_share("a"), 0.4);
    al.remove_framework("a");
    assert_eq!(al.free("s0"), Some(res(900, 1)));
    assert_eq!(al.allocated("a"), Resources::default());
    assert_eq!(al.role_allocated("r"), res(100, 0));
    // Recovering for a forgotten framework or agent is ignored.
    al.recover("a", "s0", res(400, 0), None, now);
    al.recover("b", "s1", res(100, 0), None, now);
    assert_eq!(al.free("s0"), Some(res(900, 1)));
    // Recovering more than allocated releases only what is allocated.
    al.recover("b", "s0", res(5000, 5), None, now);
    assert_eq!(al.free("s0"), Some(res(1000, 1)));
    assert_eq!(pairs(&al.allocate(now)), [("s0", "b")]);
    check_invariants(&al);
}

#[test]
fn allocate_used_counts_in_shares_and_free() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent("s0", res(4000, 4));
    al.add_agent("s1", res(4000, 4));
    al.add_framework("a", "r");
    al.add_framework("b", "r");
    al.allocate_used("a", "s0", res(1000, 0));
    assert_eq!(al.free("s0"), Some(res(3000, 4)));
    assert_eq!(al.framework_share("a"), 1000.0 / 8000.0);
    // a's share is higher, so b gets the first agent visited; then a (1/8 < 4/8+) gets the next.
    let got = al.allocate(now);
    assert_eq!(got.iter().map(|a| a.framework_id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
    // Tasks beyond an agent's total are still counted; free saturates at zero.
    al.allocate_used("b", "s1", res(9000, 9));
    assert_eq!(al.free("s1"), Some(Resources::default()));
    // Unknown framework or agent: ignored.
    al.allocate_used("nobody", "s0", res(1, 0));
    al.allocate_used("a", "nowhere", res(1, 0));
    check_invariants(&al);
}

#[test]
fn add_framework_moves_role_only_without_allocation() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent("s", res(1000, 1));
    al.add_framework("a", "r1");
    al.add_framework("a", "r1");
    al.add_framework("a", "r2");
    assert_eq!(al.framework_role("a"), Some("r2"));
    al.allocate(now);
    al.add_framework("a", "r3");
    assert_eq!(al.framework_role("a"), Some("r2"), "it has an allocation, so it stays");
    assert_eq!(al.role_allocated("r2"), res(1000, 1));
    al.recover("a", "s", res(1000, 1), None, now);
    al.add_framework("a", "r3");
    assert_eq!(al.framework_role("a"), Some("r3"));
    assert_eq!(pairs(&al.allocate(now)), [("s", "a")]);
    assert_eq!(al.role_allocated("r3"), res(1000, 1));
    assert_eq!(al.role_allocated("r2"), Resources::default());
    check_invariants(&al);
}

#[test]
fn agent_updates_keep_allocations() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent("s", res(1000, 1));
    al.add_framework("a", "r");
    al.allocate(now);
    al.add_agent("s", res(3000, 3));
    assert_eq!(al.free("s"), Some(res(2000, 2)));
    assert_eq!(al.allocated("a"), res(1000, 1));
    assert_eq!(al.framework_share("a"), 1.0 / 3.0);
    assert_eq!(pairs(&al.allocate(now)), [("s", "a")]);
    assert_eq!(al.allocated("a"), res(3000, 3));
    check_invariants(&al);
}

#[test]
fn agent_order_rotates_between_cycles() {
    let now = Instant::now();
    let mut al = Allocator::new();
    for id in ["c", "a", "b"] {
        al.add_agent(id, res(1000, 1));
    }
    al.add_framework("f", "r");
    let want = [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]];
    for want in want {
        let got = al.allocate(now);
        assert_eq!(got.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(), want);
        for a in got {
            al.recover(&a.framework_id, &a.agent_id, a.resources, None, now);
        }
    }
}

#[test]
fn shares_ignore_dimensions_without_capacity_and_bad_weights() {
    let mut al = Allocator::new();
    al.add_agent("s", res(1000, 0));
    al.add_framework("a", "r");
    al.allocate_used("a", "s", Resources { millicpus: 250, mem_bytes: 7, disk_bytes: 7, wasm_slots: 7 });
    assert_eq!(al.framework_share("a"), 0.25);
    al.set_role("r", RoleConfig { weight: f64::NAN, ..Default::default() });
    assert_eq!(al.role_weighted_share("r"), 0.25);
    al.set_role("r", RoleConfig { weight: -2.0, ..Default::default() });
    assert_eq!(al.role_weighted_share("r"), 0.25);
    al.set_role("r", RoleConfig { weight: 0.5, ..Default::default() });
    assert_eq!(al.role_share("r"), 0.25);
    assert_eq!(al.role_weighted_share("r"), 0.5);
    assert_eq!(al.role_share("unknown"), 0.0);
    assert_eq!(al.framework_share("unknown"), 0.0);
}

#[test]
fn random_operations_keep_accounting_consistent() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let t0 = Instant::now();
    let mut al = Allocator::new();
    al.set_role("r0", RoleConfig { limit: Some(res(8000, 8)), ..Default::default() });
    al.set_role("r1", RoleConfig { weight: 2.0, guarantee: res(4000, 0), ..Default::default() });
    let mut held: Vec<Allocation> = Vec::new();
    for step in 0..5000 {
        let now = t0 + secs(step as f64 * 0.1);
        let fw = format!("f{}", next(8));
        let agent = format!("s{}", next(12));
        match next(12) {
            0 => al.add_framework(&fw, &format!("r{}", next(3))),
            1 if next(4) == 0 => al.remove_framework(&fw),
            2 => al.add_agent(&agent, res(1000 * (1 + next(4)), 1 + next(4))),
            3 if next(4) == 0 => al.remove_agent(&agent),
            4 => al.activate_agent(&agent, next(3) != 0),
            5 => al.activate_framework(&fw, next(3) != 0),
            6 => al.suppress(&fw),
            7 => al.revive(&fw),
            8 => al.allocate_used(&fw, &agent, res(100 * next(5), next(2))),
            9 if !held.is_empty() => {
                let a = held.swap_remove(next(held.len() as u64) as usize);
                let refuse = [None, Some(secs(1.0)), Some(secs(5.0))][next(3) as usize];
                al.recover(&a.framework_id, &a.agent_id, a.resources, refuse, now);
            }
            _ => {
                // allocate_used may exceed a limit; allocate never does, and never adds beyond it.
                let before: Vec<Resources> = al.roles.iter().map(|r| r.allocated).collect();
                let got = al.allocate(now);
                for (role, before) in al.roles.iter().zip(before) {
                    if let Some(limit) = role.config.limit {
                        let room = limit.saturating_sub(&before);
                        let added = role.allocated.saturating_sub(&before);
                        assert!(room.contains(&added), "limit exceeded at step {step}");
                    }
                }
                held.extend(got);
            }
        }
        check_invariants(&al);
        let mut keyed = 0;
        if !al.keys_stale {
            for (r, role) in al.roles.iter().enumerate() {
                assert_eq!(role.key.is_some(), !role.frameworks.is_empty());
                assert_eq!(role.key.as_ref().is_some_and(|k| al.role_order.contains(k)), role.key.is_some());
                for key in &role.frameworks {
                    let fw = al.frameworks[key.2].as_ref().unwrap();
                    assert_eq!((fw.role, fw.active && !fw.suppressed), (r, true));
                    keyed += 1;
                }
            }
            let candidates = al.frameworks.iter().flatten().filter(|f| f.active && !f.suppressed).count();
            assert_eq!(keyed, candidates);
        }
    }
}
