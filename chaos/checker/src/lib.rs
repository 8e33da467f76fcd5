//! The history checker of UMS drills (pure, no IO), in a crate of its own so the very
//! same checks run on `umschaos` drills against real processes and inside the
//! deterministic simulation of `consensus` (which cannot depend on `chaos`).
//!
//! - [`history`]: operations (invocation, completion, outcome ok/failed/unknown), fault
//!   events, isolation windows.
//! - [`checker`]: the verdict over a history and the replicas' final state.
//! - [`outbound`]: queued outbound items against what the receiving end got.

pub mod checker;
pub mod history;
pub mod outbound;
