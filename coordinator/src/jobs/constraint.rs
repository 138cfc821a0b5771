//! Constraints on agent attributes: which agents may run a job's tasks.

use std::collections::HashMap;

use skiff_proto as pb;
use skiff_proto::constraint::Operator;

/// Whether every constraint holds for an agent with `attributes`.
pub fn satisfied(constraints: &[pb::Constraint], attributes: &HashMap<String, String>) -> bool {
    constraints.iter().all(|c| holds(c, attributes.get(&c.attribute)))
}

/// Whether an agent with `attributes` may run the tasks of `job`: its constraints hold, and a
/// native job's agent runs native tasks ([`pb::NATIVE_ATTRIBUTE`]).
pub fn eligible(job: &pb::JobSpec, attributes: &HashMap<String, String>) -> bool {
    let native = matches!(job.task.as_ref().and_then(|t| t.kind.as_ref()), Some(pb::task_spec::Kind::Native(_)));
    satisfied(&job.constraints, attributes)
        && (!native || attributes.get(pb::NATIVE_ATTRIBUTE).is_some_and(|v| v == "true"))
}

fn holds(c: &pb::Constraint, value: Option<&String>) -> bool {
    let listed = || value.is_some_and(|v| c.values.contains(v));
    match c.operator() {
        Operator::Eq | Operator::In => listed(),
        Operator::Ne | Operator::NotIn => !listed(),
        Operator::Exists => value.is_some(),
        Operator::Unspecified => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(attribute: &str, op: Operator, values: &[&str]) -> pb::Constraint {
        pb::Constraint {
            attribute: attribute.into(),
            operator: op as i32,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn native_jobs_only_on_agents_that_run_them() {
        let native = pb::JobSpec {
            task: Some(pb::TaskSpec {
                kind: Some(pb::task_spec::Kind::Native(pb::NativeTask::default())),
                ..Default::default()
            }),
            ..Default::default()
        };
        let wasm = pb::JobSpec {
            task: Some(pb::TaskSpec {
                kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask::default())),
                ..Default::default()
            }),
            ..Default::default()
        };
        let with = |v: &str| HashMap::from([(pb::NATIVE_ATTRIBUTE.to_owned(), v.to_owned())]);
        assert!(eligible(&native, &with("true")));
        assert!(!eligible(&native, &with("false")));
        assert!(!eligible(&native, &HashMap::new()), "an agent that does not say runs none");
        assert!(eligible(&wasm, &with("false")) && eligible(&wasm, &HashMap::new()));
    }

    #[test]
    fn constraints_on_attributes() {
        let attrs: HashMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        let cases = [
            (vec![], true),
            (vec![c("zone", Operator::Eq, &["a"])], true),
            (vec![c("zone", Operator::Eq, &["b"])], false),
            (vec![c("zone", Operator::Ne, &["b"])], true),
            (vec![c("rack", Operator::Ne, &["b"])], true),
            (vec![c("zone", Operator::In, &["b", "a"])], true),
            (vec![c("zone", Operator::NotIn, &["b", "a"])], false),
            (vec![c("zone", Operator::Exists, &[])], true),
            (vec![c("rack", Operator::Exists, &[])], false),
            (vec![c("zone", Operator::Eq, &["a"]), c("rack", Operator::Exists, &[])], false),
        ];
        for (constraints, want) in cases {
            assert_eq!(satisfied(&constraints, &attrs), want, "{constraints:?}");
        }
    }
}
