//! Ids, one rule each. Task ids name sandbox directories, registry keys and cgroups, so they use an
//! alphabet that is safe in all three: letters, digits, `_` and `-` (no `.`, no `/`).

/// What is wrong with an id; the message names the kind of id, the id and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id {id:?} is invalid: {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub id: String,
    pub rule: &'static str,
}

/// Longest id of any kind.
pub const MAX_ID_LEN: usize = 64;

const RULE: &str = "use 1-64 letters, digits, '_' or '-'";

fn check(kind: &'static str, id: &str) -> Result<(), IdError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(IdError { kind, id: truncated(id), rule: RULE }) }
}

/// At most the first 80 characters of a bad id (an error must not echo megabytes back).
fn truncated(id: &str) -> String {
    match id.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &id[..at]),
        None => id.to_owned(),
    }
}

/// A task id: chosen by the leader (`t-...`) or by a framework.
pub fn check_task_id(id: &str) -> Result<(), IdError> {
    check("task", id)
}

/// A job id (`j-...`, chosen by the leader).
pub fn check_job_id(id: &str) -> Result<(), IdError> {
    check("job", id)
}

/// A framework id (`fw-...`, chosen by the leader, or given back by a framework that fails over).
pub fn check_framework_id(id: &str) -> Result<(), IdError> {
    check("framework", id)
}

/// An agent id: an agent's certificate name (`a1`, `host-17.rack-2`) or a generated uuid.
/// Agent names may hold dots (host names); not leading, and never `.`/`..`.
pub fn check_agent_id(id: &str) -> Result<(), IdError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with(['.', '-'])
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdError {
            kind: "agent",
            id: truncated(id),
            rule: "use 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        for good in ["t-0123456789abcdef", "a", "A_b-9", &"x".repeat(64)] {
            assert_eq!(check_task_id(good), Ok(()), "{good}");
        }
        for bad in ["", "a.b", "..", "a/b", "a b", "ä", "t\n", &"x".repeat(65), "-\0"] {
            let err = check_task_id(bad).unwrap_err();
            assert!(err.to_string().starts_with("task id "), "{err}");
            assert!(err.to_string().contains("1-64 letters"), "{err}");
        }
    }

    #[test]
    fn agent_ids_may_hold_dots_but_not_lead_with_them() {
        for good in ["a1", "host-17.rack-2", "0b1e1b3c-8d5e-4c2e-9d0e-6a1f2b3c4d5e"] {
            assert_eq!(check_agent_id(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "-x", "a/b", &"a".repeat(65)] {
            assert!(check_agent_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_do_not_echo_huge_ids() {
        let err = check_job_id(&"x".repeat(1 << 20)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
