//! What the programs that start and drive a local UMS cluster share: `umsd dev` and
//! `ums-bench` (in `node`), `umschaos` (in `chaos`) and the integration tests. Kept
//! apart from `node` so that a drill tool builds without the daemon (RocksDB, Raft).
//!
//! - [`process`]: starting `umsd --config FILE`, and finding running ones in /proc.
//! - [`node_file`]: the fields of a node's `node.toml` that such programs read.
//! - [`http`]: small HTTP client helpers for the cluster's API.
//! - [`tokens`]: where API tokens are kept on this machine, and creating one.
//! - [`webhook_sink`]: a receiver that records outbound webhook deliveries.

pub mod http;
pub mod node_file;
pub mod process;
pub mod tokens;
pub mod webhook_sink;
