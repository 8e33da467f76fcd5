//! Wall-clock time as the proposer reads it: times in replicated commands are chosen
//! before proposing, so every replica applies the same value.

/// Milliseconds since the Unix epoch (times in commands are chosen by the proposer).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
