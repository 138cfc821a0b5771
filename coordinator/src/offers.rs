//! Offer bookkeeping, pure and synchronous: which agent resources are reserved by tasks, which are
//! out on offer to a framework, and whether an accept fits what was offered.
//!
//! An agent's resources are split three ways: `used` by launched tasks, `offered` (outstanding offers)
//! and the rest, which is available for the next offer. Accepting an offer moves what the launches
//! need into `used` and returns the remainder to the pool; declining returns all of it.

use std::collections::{BTreeMap, HashMap};

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
}

/// Why an accept was refused. Nothing changes when an accept is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("offer {0} is unknown (expired, rescinded or already used)")]
    UnknownOffer(String),
    #[error("offer {offer_id} was made to framework {owner}, not {framework_id}")]
    NotYours { offer_id: String, owner: String, framework_id: String },
    #[error("offers {0} and {1} are for different agents; one accept uses offers of one agent")]
    MixedAgents(String, String),
    #[error("an accept must name at least one offer")]
    NoOffers,
    #[error("task {task_id} does not fit: it needs {need:?} but only {left:?} of the offer is left")]
    DoesNotFit { task_id: String, need: Resources, left: Resources },
    #[error("agent {0} is unknown")]
    UnknownAgent(String),
}

/// What an accepted offer turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub agent_id: String,
    /// Resources now reserved by the launched tasks.
    pub used: Resources,
    /// Resources of the offers that the launches did not use, back in the pool.
    pub returned: Resources,
}

#[derive(Debug, Clone, Default)]
struct AgentSlot {
    total: Resources,
    used: Resources,
    offered: Resources,
}

/// The resources of every agent and the offers out on them.
#[derive(Debug, Default)]
pub struct OfferBook {
    agents: BTreeMap<String, AgentSlot>,
    offers: HashMap<String, Offer>,
    next_offer: u64,
    epoch: u64,
}

impl OfferBook {
    /// The offer book of the leader of `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self { epoch, ..Self::default() }
    }

    /// Adds an agent, or updates its total resources (re-registration); its reservations stay.
    pub fn upsert_agent(&mut self, agent_id: &str, total: Resources) {
        self.agents.entry(agent_id.to_owned()).or_default().total = total;
    }

    /// Removes an agent and rescinds its outstanding offers, which are returned.
    pub fn remove_agent(&mut self, agent_id: &str) -> Vec<Offer> {
        self.agents.remove(agent_id);
        let ids: Vec<String> = self.offers.values().filter(|o| o.agent_id == agent_id).map(|o| o.id.clone()).collect();
        ids.iter().filter_map(|id| self.offers.remove(id)).collect()
    }

    /// Rescinds the outstanding offers on an agent (it disconnected); its reservations stay.
    pub fn rescind_agent(&mut self, agent_id: &str) -> Vec<Offer> {
        let ids: Vec<String> = self.offers.values().filter(|o| o.agent_id == agent_id).map(|o| o.id.clone()).collect();
        self.decline(&ids);
        ids.into_iter()
            .map(|id| Offer {
                id,
                agent_id: agent_id.to_owned(),
                framework_id: String::new(),
                resources: Resources::default(),
                epoch: self.epoch,
            })
            .collect()
    }

    /// Resources of `agent_id` that are neither used nor on offer.
    pub fn available(&self, agent_id: &str) -> Option<Resources> {
        let slot = self.agents.get(agent_id)?;
        Some(slot.total.saturating_sub(&slot.used).saturating_sub(&slot.offered))
    }

    /// (total, used) of an agent.
    pub fn usage(&self, agent_id: &str) -> Option<(Resources, Resources)> {
        self.agents.get(agent_id).map(|s| (s.total, s.used))
    }

    /// Agents in id order with what each has available.
    pub fn agents_with_available(&self) -> Vec<(String, Resources)> {
        self.agents
            .keys()
            .filter_map(|id| Some((id.clone(), self.available(id)?)))
            .filter(|(_, r)| !r.is_empty())
            .collect()
    }

    /// Offers everything available on `agent_id` to `framework_id`.
    pub fn offer(&mut self, agent_id: &str, framework_id: &str) -> Option<Offer> {
        let available = self.available(agent_id)?;
        if available.is_empty() {
            return None;
        }
        self.next_offer += 1;
        let offer = Offer {
            id: format!("offer-{}-{}", self.epoch, self.next_offer),
            agent_id: agent_id.to_owned(),
            framework_id: framework_id.to_owned(),
            resources: available,
            epoch: self.epoch,
        };
        let slot = self.agents.get_mut(agent_id)?;
        slot.offered = slot.offered.saturating_add(&available);
        self.offers.insert(offer.id.clone(), offer.clone());
        Some(offer)
    }

    /// Accepts `offer_ids` (all on one agent) with launches of the given (task id, resources).
    pub fn accept(
        &mut self,
        framework_id: &str,
        offer_ids: &[String],
        launches: &[(String, Resources)],
    ) -> Result<Accepted, OfferError> {
        let first = offer_ids.first().ok_or(OfferError::NoOffers)?;
        let mut agent_id: Option<&str> = None;
        let mut offered = Resources::default();
        for id in offer_ids {
            let offer = self.offers.get(id).ok_or_else(|| OfferError::UnknownOffer(id.clone()))?;
            if offer.framework_id != framework_id {
                return Err(OfferError::NotYours {
                    offer_id: id.clone(),
                    owner: offer.framework_id.clone(),
                    framework_id: framework_id.to_owned(),
                });
            }
            match agent_id {
                Some(a) if a != offer.agent_id => {
                    return Err(OfferError::MixedAgents(first.clone(), id.clone()));
                }
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
        let slot = self.agents.get_mut(&agent_id).ok_or_else(|| OfferError::UnknownAgent(agent_id.clone()))?;
        let used = offered.saturating_sub(&left);
        slot.offered = slot.offered.saturating_sub(&offered);
        slot.used = slot.used.saturating_add(&used);
        for id in offer_ids {
            self.offers.remove(id);
        }
        Ok(Accepted { agent_id, used, returned: left })
    }

    /// Declines offers: their resources go back to the pool. Unknown ids are ignored.
    pub fn decline(&mut self, offer_ids: &[String]) {
        for id in offer_ids {
            if let Some(offer) = self.offers.remove(id)
                && let Some(slot) = self.agents.get_mut(&offer.agent_id)
            {
                slot.offered = slot.offered.saturating_sub(&offer.resources);
            }
        }
    }

    /// Reserves resources on an agent outside of an offer (a task the agent reported on re-registration).
    pub fn reserve(&mut self, agent_id: &str, resources: &Resources) {
        if let Some(slot) = self.agents.get_mut(agent_id) {
            slot.used = slot.used.saturating_add(resources);
        }
    }

    /// Releases what a task reserved, when it ends.
    pub fn release(&mut self, agent_id: &str, resources: &Resources) {
        if let Some(slot) = self.agents.get_mut(agent_id) {
            slot.used = slot.used.saturating_sub(resources);
        }
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

    fn book() -> OfferBook {
        let mut book = OfferBook::new(7);
        book.upsert_agent("a1", r(2000, 1000));
        book.upsert_agent("a2", r(1000, 500));
        book
    }

    #[test]
    fn accept_uses_part_and_returns_the_rest() {
        let mut book = book();
        let offer = book.offer("a1", "fw").expect("a1 has resources");
        assert_eq!(offer.resources, r(2000, 1000));
        assert_eq!(book.available("a1"), Some(r(0, 0)), "offered resources are not offered twice");
        assert!(book.offer("a1", "fw").is_none());

        let accepted = book
            .accept("fw", std::slice::from_ref(&offer.id), &[("t1".into(), r(500, 100)), ("t2".into(), r(500, 100))])
            .expect("fits");
        assert_eq!(accepted, Accepted { agent_id: "a1".into(), used: r(1000, 200), returned: r(1000, 800) });
        assert_eq!(book.available("a1"), Some(r(1000, 800)));
        assert_eq!(book.outstanding(), 0);

        book.release("a1", &r(500, 100));
        assert_eq!(book.available("a1"), Some(r(1500, 900)));
    }

    #[test]
    #[allow(clippy::redundant_clone)] // the table reads better with every id cloned alike
    fn refused_accepts_change_nothing() {
        let mut book = book();
        let o1 = book.offer("a1", "fw").unwrap();
        let o2 = book.offer("a2", "fw").unwrap();
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
    fn decline_and_agent_removal_return_offers() {
        let mut book = book();
        let o1 = book.offer("a1", "fw").unwrap();
        book.decline(std::slice::from_ref(&o1.id));
        assert_eq!(book.available("a1"), Some(r(2000, 1000)));
        let o2 = book.offer("a2", "fw").unwrap();
        let rescinded = book.remove_agent("a2");
        assert_eq!(rescinded, vec![o2.clone()]);
        assert_eq!(book.accept("fw", std::slice::from_ref(&o2.id), &[]), Err(OfferError::UnknownOffer(o2.id)));
        assert_eq!(book.agents_with_available().len(), 1);
    }
}
