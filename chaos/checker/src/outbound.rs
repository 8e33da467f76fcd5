//! The outbound check: every item the cluster acknowledged queueing (a webhook, say)
//! must reach the receiving end, and each item once. Delivery is at-least-once: an item
//! handed over just before its shard leader died is sent again by the next leader under
//! the same `Idempotency-Key`, which the receiver can drop; those redeliveries are
//! counted apart. An item delivered under two different keys was queued twice: that is
//! a duplicate, as is a delivery of an item whose queueing failed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{Operation, Outcome};

/// One delivery the receiving end recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The workload's reference, carried in the item's payload.
    pub client_ref: String,
    pub idempotency_key: String,
}

/// What happened to the queued items.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundVerdict {
    /// Items the cluster acknowledged queueing.
    pub queued: usize,
    /// Distinct items that arrived.
    pub delivered: usize,
    /// Extra deliveries of an item under the key it arrived with first (allowed).
    pub redelivered: usize,
    /// Acknowledged items that never arrived.
    pub undelivered: Vec<String>,
    /// Items that arrived under more than one key, or whose queueing failed.
    pub duplicated: Vec<String>,
}

impl OutboundVerdict {
    pub fn violation_lines(&self) -> impl Iterator<Item = &String> {
        self.undelivered.iter().chain(&self.duplicated)
    }
}

/// Checks the queueing operations against what the receiver got.
pub fn check_outbound(queued: &[Operation], deliveries: &[Delivery]) -> OutboundVerdict {
    let mut keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for delivery in deliveries {
        keys.entry(delivery.client_ref.as_str()).or_default().push(delivery.idempotency_key.as_str());
    }
    let mut verdict = OutboundVerdict {
        queued: queued.iter().filter(|o| o.is_ok()).count(),
        delivered: keys.len(),
        redelivered: keys.values().map(|k| k.len() - k.iter().collect::<BTreeSet<_>>().len()).sum(),
        ..Default::default()
    };
    for (client_ref, item_keys) in &keys {
        let distinct: BTreeSet<_> = item_keys.iter().collect();
        if distinct.len() > 1 {
            verdict.duplicated.push(format!("{client_ref} delivered under {} keys: {distinct:?}", distinct.len()));
        }
    }
    for operation in queued {
        let arrived = keys.contains_key(operation.client_ref.as_str());
        match &operation.outcome {
            Outcome::Ok { .. } | Outcome::Accepted if !arrived => {
                verdict.undelivered.push(format!("{} queued but never delivered", operation.client_ref))
            }
            Outcome::Failed { reason } if arrived => verdict
                .duplicated
                .push(format!("{} failed to queue ({reason}) yet was delivered", operation.client_ref)),
            _ => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client_ref: &str, outcome: Outcome) -> Operation {
        Operation {
            id: 0,
            user: "u".into(),
            shard: 1,
            client_ref: client_ref.into(),
            node: 1,
            invoked_ms: 0,
            completed_ms: 1,
            outcome,
        }
    }

    fn delivery(client_ref: &str, key: &str) -> Delivery {
        Delivery { client_ref: client_ref.into(), idempotency_key: key.into() }
    }

    #[test]
    fn redeliveries_under_the_same_key_are_counted_apart_from_duplicates() {
        let queued = [
            op("a", Outcome::Ok { uid: 1 }),
            op("b", Outcome::Ok { uid: 2 }),
            op("c", Outcome::Ok { uid: 3 }),
            op("d", Outcome::Failed { reason: "HTTP 400".into() }),
            op("e", Outcome::Unknown { reason: "timeout".into() }),
        ];
        let deliveries = [
            delivery("a", "k1"),
            delivery("a", "k1"),
            delivery("b", "k2"),
            delivery("b", "k9"),
            delivery("d", "k4"),
            delivery("e", "k5"),
        ];
        let verdict = check_outbound(&queued, &deliveries);
        assert_eq!((verdict.queued, verdict.delivered, verdict.redelivered), (3, 4, 1));
        assert_eq!(verdict.undelivered, ["c queued but never delivered"]);
        assert!(verdict.duplicated.iter().any(|d| d.starts_with("b delivered under 2 keys")), "{verdict:?}");
        assert!(verdict.duplicated.iter().any(|d| d.starts_with("d failed to queue")), "{verdict:?}");
        assert_eq!(verdict.violation_lines().count(), 3, "a redelivery and an unknown that arrived are fine");
    }
}
