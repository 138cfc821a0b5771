//! Who native tasks run as: a uid of their own from a configured range (`--task-uids`), never
//! one two running tasks share; or, as a documented fallback, one user for all; or the agent's
//! own (root), only with `--allow-root-tasks`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A range of uids (`FIRST-LAST`, inclusive); each task runs as uid = gid = one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    /// The default `--task-uids`, above the uids Debian hands out and the usual subordinate ranges.
    pub const DEFAULT: Self = Self { first: 200_000, last: 265_535 };
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for UidRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a uid range FIRST-LAST like 200000-265535, got {s:?}");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (first, last): (u32, u32) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        if first == 0 || last < first || last == u32::MAX {
            return Err(format!("uid range {s:?}: it must be non-empty, above 0 (root) and below {}", u32::MAX));
        }
        Ok(Self { first, last })
    }
}

/// Who native tasks run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// A uid (and gid) of its own for each running task.
    Range(UidRange),
    /// One unprivileged user (uid, gid) for every task: the fallback.
    User { uid: u32, gid: u32 },
    /// The agent's own user; only with the agent's explicit `--allow-root-tasks`.
    Agent,
}

impl RunAs {
    /// Looks up a user by name.
    pub fn user(name: &str) -> Result<Self, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(RunAs::User { uid: u.uid.as_raw(), gid: u.gid.as_raw() }),
            Ok(None) => Err(format!("no such user {name:?} to run native tasks as")),
            Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
        }
    }
}

/// Hands out task identities; a range's uids go round, so a uid just given back is the last to
/// be handed out again.
#[derive(Debug, Clone)]
pub struct Users {
    run_as: RunAs,
    leased: Arc<Mutex<Leased>>,
}

#[derive(Debug, Default)]
struct Leased {
    in_use: BTreeSet<u32>,
    next: u32,
}

/// A task's identity while it runs; a range's uid is free again when this drops.
#[derive(Debug)]
pub struct Identity {
    /// uid and gid; `None`: the agent's own.
    pub user: Option<(u32, u32)>,
    lease: Option<(u32, Arc<Mutex<Leased>>)>,
}

impl Drop for Identity {
    fn drop(&mut self) {
        if let Some((uid, leased)) = self.lease.take() {
            leased.lock().unwrap_or_else(|e| e.into_inner()).in_use.remove(&uid);
        }
    }
}

impl Users {
    pub fn new(run_as: RunAs) -> Self {
        let next = match run_as {
            RunAs::Range(r) => r.first,
            _ => 0,
        };
        Self { run_as, leased: Arc::new(Mutex::new(Leased { in_use: BTreeSet::new(), next })) }
    }

    /// An identity for one task, or why there is none (every uid of the range in use).
    pub fn lease(&self) -> Result<Identity, String> {
        let range = match self.run_as {
            RunAs::User { uid, gid } => return Ok(Identity { user: Some((uid, gid)), lease: None }),
            RunAs::Agent => return Ok(Identity { user: None, lease: None }),
            RunAs::Range(range) => range,
        };
        let mut leased = self.leased.lock().unwrap_or_else(|e| e.into_inner());
        let size = u64::from(range.last - range.first) + 1;
        if leased.in_use.len() as u64 >= size {
            return Err(format!("all {size} uids of --task-uids {range} are in use"));
        }
        let mut uid = leased.next;
        while leased.in_use.contains(&uid) {
            uid = if uid == range.last { range.first } else { uid + 1 };
        }
        leased.next = if uid == range.last { range.first } else { uid + 1 };
        leased.in_use.insert(uid);
        Ok(Identity { user: Some((uid, uid)), lease: Some((uid, self.leased.clone())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_or_say_why_not() {
        assert_eq!("200000-265535".parse::<UidRange>(), Ok(UidRange { first: 200000, last: 265535 }));
        for bad in ["", "5", "a-b", "10-5", "0-10", "-3-4", "1-4294967295"] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_two_running_tasks_share_a_uid() {
        let users = Users::new(RunAs::Range(UidRange { first: 1000, last: 1002 }));
        let a = users.lease().unwrap();
        let b = users.lease().unwrap();
        let c = users.lease().unwrap();
        let uids: BTreeSet<_> = [&a, &b, &c].iter().map(|i| i.user.unwrap().0).collect();
        assert_eq!(uids.len(), 3);
        let err = users.lease().unwrap_err();
        assert!(err.contains("all 3 uids of --task-uids 1000-1002 are in use"), "{err}");
        let freed = b.user.unwrap().0;
        drop(b);
        assert_eq!(users.lease().unwrap().user.unwrap().0, freed, "the only free uid");
        drop((a, c));
        // Round the range: the uid after the last one handed out comes next.
        let d = users.lease().unwrap();
        assert_ne!(d.user.unwrap().0, freed);
        assert_eq!(Users::new(RunAs::Agent).lease().unwrap().user, None);
    }
}
