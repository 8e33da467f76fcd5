//! Wall-clock time as the proposer reads it: times in replicated commands are chosen
//! before proposing, so every replica applies the same value. The gateways' clock, so
//! bans and the times the node proposes agree.

/// Milliseconds since the Unix epoch (times in commands are chosen by the proposer).
pub use gateways::clock::now_ms;
