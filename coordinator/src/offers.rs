//! Outstanding offers, pure and synchronous: which slice of which agent is out on offer to which
//! framework, whether an accept fits what was offered, and which offers time out.
//!
//! What is free on each agent, and who gets it next, is the [`crate::allocator`]'s business; an offer
//! is the allocator's decision handed to a framework. Accepting moves what the launches need to the
//! tasks and hands the remainder back (the leader returns it to the allocator); declining, expiry
//! and rescinds hand everything back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::resources::Resources;

/// One outstanding offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub id: String,
    pub agent_id: String,
    pub framework_id: String,
    pub resources: Resources,
    /// Epoch of the leader that made it; offer ids name it too, so no other leader knows them.
    pub epoch: u64,
    pub made_at: Instant,
}

/// Why an accept was refused. Nothing changes when an accept is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("offer {0} is unknown (expired, rescinded, already used, or made by another leader)")]
    UnknownOffer(String),
    #[error("offer {offer_id} was made to framework {owner}, not {framework_id}")]
    NotYours { offer_id: String, owner: String, framework_id: String },
    #[error("offers {0} and {1} are for different agents; one accept uses offers of one agent")]
    MixedAgents(String, String),
    #[error("an accept must name at least one offer")]
    NoOffers,
    #[error("offer {0} is named twice")]
    Duplicate(String),
    #[error("task {task_id} does not fit: it needs {need} but only {left} of the offer is left")]
    DoesNotFit { task_id: String, need: Resources, left: Resources },
}

/// What an accepted offer turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub agent_id: String,
    /// Resources now reserved by the launched tasks.
    pub used: Resources,
    /// Resources of the offers that the launches did not use, to return to the allocator.
    pub returned: Resources,
}

/// The offers out on agents.
#[derive(Debug, Default)]
pub struct OfferBook {
    offers: HashMap<String, Offer>,
    next_offer: u64,
    epoch: u64,
}

impl OfferBook {
    /// The offer book of the leader of `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self { epoch, ..Self::default() }
    }

    /// Records an offer of `resources` on `agent_id` to `framework_id`.
    pub fn make(&mut self, agent_id: &str, framework_id: &str, resources: Resources, now: Instant) -> Offer {
        self.next_offer += 1;
        let offer = Offer {
            id: format!("offer-{}-{}", self.epoch, self.next_offer),
            agent_id: agent_id.to_owned(),
            framework_id: framework_id.to_owned(),
            resources,
            epoch: self.epoch,
            made_at: now,
        };
        self.offers.insert(offer.id.clone(), offer.clone());
        offer
    }

    /// Accepts `offer_ids` (all on one agent) with launches of the given (task id, resources); the
    /// offers are used up. A refused accept changes nothing.
    pub fn accept(
        &mut self,
        framework_id: &str,
        offer_ids: &[String],
        launches: &[(String, Resources)],
    ) -> Result<Accepted, OfferError> {
        let first = offer_ids.first().ok_or(OfferError::NoOffers)?;
        let mut agent_id: Option<&str> = None;
        let mut offered = Resources::default();
        for (i, id) in offer_ids.iter().enumerate() {
            if offer_ids[..i].contains(id) {
                return Err(OfferError::Duplicate(id.clone()));
            }
            let offer = self.offers.get(id).ok_or_else(|| OfferError::UnknownOffer(id.clone()))?;
            if offer.framework_id != framework_id {
                return Err(OfferError::NotYours {
                    offer_id: id.clone(),
                    owner: offer.framework_id.clone(),
                    framework_id: framework_id.to_owned(),
                });
            }
            match agent_id {
                Some(a) if a != offer.agent_id => return Err(OfferError::MixedAgents(first.clone(), id.clone())),
                _ => agent_id = Some(&offer.agent_id),
            }
            offered = offered.saturating_add(&offer.resources);
        }
        let agent_id = agent_id.unwrap_or_default().to_owned();
        let mut left = offered;
        for (task_id, need) in launches {
            left = left.checked_sub(need).ok_or_else(|| OfferError::DoesNotFit {
                task_id: task_id.clone(),
                need: *need,
                left,
            })?;
        }
        for id in offer_ids {
            self.offers.remove(id);
        }
        Ok(Accepted { agent_id, used: offered.saturating_sub(&left), returned: left })
    }

    /// Takes back offers of `framework_id` (declined); unknown ids and other frameworks' are ignored.
    pub fn decline(&mut self, framework_id: &str, offer_ids: &[String]) -> Vec<Offer> {
        let mine: Vec<&String> = offer_ids
            .iter()
            .filter(|id| self.offers.get(*id).is_some_and(|o| o.framework_id == framework_id))
            .collect();
        mine.into_iter().filter_map(|id| self.offers.remove(id)).collect()
    }

    /// Takes back every offer matching `pred`.
    fn take(&mut self, pred: impl Fn(&Offer) -> bool) -> Vec<Offer> {
        let ids: Vec<String> = self.offers.values().filter(|o| pred(o)).map(|o| o.id.clone()).collect();
        let mut taken: Vec<Offer> = ids.iter().filter_map(|id| self.offers.remove(id)).collect();
        taken.sort_by(|a, b| a.made_at.cmp(&b.made_at).then_with(|| a.id.cmp(&b.id)));
        taken
    }

    /// Rescinds every offer on an agent (it went away).
    pub fn rescind_agent(&mut self, agent_id: &str) -> Vec<Offer> {
        self.take(|o| o.agent_id == agent_id)
    }

    /// Rescinds every offer to a framework (it disconnected, suppressed or tore down).
    pub fn rescind_framework(&mut self, framework_id: &str) -> Vec<Offer> {
        self.take(|o| o.framework_id == framework_id)
    }

    /// Takes back the offers older than `timeout`.
    pub fn expired(&mut self, now: Instant, timeout: Duration) -> Vec<Offer> {
        self.take(|o| now.saturating_duration_since(o.made_at) >= timeout)
    }

    /// Number of outstanding offers.
    pub fn outstanding(&self) -> usize {
        self.offers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(millicpus: u64, mem_bytes: u64) -> Resources {
        Resources { millicpus, mem_bytes, disk_bytes: 0, wasm_slots: 0 }
    }

    #[test]
    fn accept_uses_part_and_returns_the_rest() {
        let now = Instant::now();
        let mut book = OfferBook::new(7);
        let offer = book.make("a1", "fw", r(2000, 1000), now);
        assert_eq!(offer.id, "offer-7-1", "offer ids name the epoch");
        let accepted = book
            .accept("fw", std::slice::from_ref(&offer.id), &[("t1".into(), r(500, 100)), ("t2".into(), r(500, 100))])
            .expect("fits");
        assert_eq!(accepted, Accepted { agent_id: "a1".into(), used: r(1000, 200), returned: r(1000, 800) });
        assert_eq!(book.outstanding(), 0);
        assert_eq!(
            book.accept("fw", std::slice::from_ref(&offer.id), &[]),
            Err(OfferError::UnknownOffer(offer.id)),
            "an offer is used once"
        );
    }

    #[test]
    #[allow(clippy::redundant_clone)] // the table reads better with every id cloned alike
    fn refused_accepts_change_nothing() {
        let now = Instant::now();
        let mut book = OfferBook::new(1);
        let o1 = book.make("a1", "fw", r(2000, 1000), now);
        let o2 = book.make("a2", "fw", r(1000, 500), now);
        type Case<'a> = (&'a str, Vec<String>, Vec<(String, Resources)>, OfferError);
        let cases: Vec<Case> = vec![
            ("fw", vec![], vec![], OfferError::NoOffers),
            ("fw", vec!["offer-99".into()], vec![], OfferError::UnknownOffer("offer-99".into())),
            (
                "other",
                vec![o1.id.clone()],
                vec![],
                OfferError::NotYours { offer_id: o1.id.clone(), owner: "fw".into(), framework_id: "other".into() },
            ),
            ("fw", vec![o1.id.clone(), o2.id.clone()], vec![], OfferError::MixedAgents(o1.id.clone(), o2.id.clone())),
            ("fw", vec![o1.id.clone(), o1.id.clone()], vec![], OfferError::Duplicate(o1.id.clone())),
            (
                "fw",
                vec![o2.id.clone()],
                vec![("big".into(), r(600, 10)), ("bigger".into(), r(600, 10))],
                OfferError::DoesNotFit { task_id: "bigger".into(), need: r(600, 10), left: r(400, 490) },
            ),
        ];
        for (fw, ids, launches, want) in cases {
            assert_eq!(book.accept(fw, &ids, &launches), Err(want));
            assert_eq!(book.outstanding(), 2, "a refused accept consumes no offer");
        }
    }

    #[test]
    fn decline_rescind_and_expiry_take_offers_back() {
        let t0 = Instant::now();
        let mut book = OfferBook::new(1);
        let o1 = book.make("a1", "fw", r(1000, 1), t0);
        let o2 = book.make("a2", "fw", r(1000, 1), t0 + Duration::from_secs(5));
        let o3 = book.make("a2", "other", r(1000, 1), t0 + Duration::from_secs(5));
        assert!(book.decline("other", std::slice::from_ref(&o1.id)).is_empty(), "not its offer");
        assert_eq!(book.expired(t0 + Duration::from_secs(9), Duration::from_secs(10)), vec![]);
        assert_eq!(book.expired(t0 + Duration::from_secs(10), Duration::from_secs(10)), vec![o1]);
        assert_eq!(book.rescind_framework("other"), vec![o3]);
        assert_eq!(book.rescind_agent("a2"), vec![o2.clone()]);
        assert_eq!(book.decline("fw", std::slice::from_ref(&o2.id)), vec![], "already gone");
        assert_eq!(book.outstanding(), 0);
    }
}
