//! A small deterministic state machine for tests and benchmarks: each group keeps an
//! append-only sequence of payloads. Applying a command appends its payload and answers
//! with the 1-based position, so a checker can verify where every acknowledged request
//! landed and that all replicas hold the same sequence.

use storage::{Cf, KvRead};

use consensus::GroupId;
use consensus::{ApplyContext, StateMachine, state_machine_key};

const COUNT_KEY: &[u8] = b"n";
const ITEM_PREFIX: u8 = b's';

/// Appends payloads to a per-group sequence. Payloads of at least `blob_threshold`
/// bytes are stored in the blob family, like message bodies.
#[derive(Clone, Debug)]
pub struct SequenceMachine {
    pub blob_threshold: usize,
}

impl Default for SequenceMachine {
    fn default() -> Self {
        Self { blob_threshold: 512 }
    }
}

fn item_key(position: u64) -> [u8; 9] {
    let mut key = [ITEM_PREFIX; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

impl StateMachine for SequenceMachine {
    fn apply(&mut self, ctx: &mut ApplyContext<'_>, payload: &[u8]) -> Vec<u8> {
        let count = ctx
            .get(Cf::Data, COUNT_KEY)
            .map(|bytes| u64::from_be_bytes(bytes.as_slice().try_into().expect("8-byte counter")))
            .unwrap_or(0);
        let position = count + 1;
        ctx.put(Cf::Data, COUNT_KEY, position.to_be_bytes().to_vec());
        let cf = if payload.len() >= self.blob_threshold { Cf::Blobs } else { Cf::Data };
        ctx.put(cf, &item_key(position), payload.to_vec());
        position.to_be_bytes().to_vec()
    }
}

/// Decodes a [`SequenceMachine`] response (the position).
pub fn position_of(response: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(response.try_into().ok()?))
}

/// Reads the whole sequence of `group` from an engine, in order.
pub fn read_sequence(engine: &dyn KvRead, group: GroupId) -> storage::Result<Vec<Vec<u8>>> {
    let start = state_machine_key(group, &[ITEM_PREFIX]);
    let end = state_machine_key(group, &[ITEM_PREFIX + 1]);
    // Items live in either family depending on size; merge them by key (position).
    let mut items = Vec::new();
    for cf in Cf::STATE_MACHINE {
        engine.scan(cf, &start, &end, &mut |key, value| {
            items.push((key.to_vec(), value.to_vec()));
            true
        })?;
    }
    items.sort();
    Ok(items.into_iter().map(|(_, value)| value).collect())
}
