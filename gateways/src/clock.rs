//! Wall-clock time, in milliseconds since the Unix epoch: what bans end at, and what the
//! node puts into replicated commands (`node::clock` is this clock).

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
