//! Every multi-process test in one binary (one link against node and RocksDB instead of
//! one per area), a module per area; the harness is `tests/src/lib.rs`.

mod actors;
mod api_defence;
mod backup_core;
mod backup_restore;
mod chaos;
mod dev_cluster;
mod failover;
mod idempotency;
mod imap;
mod load;
mod mail_auth;
mod operator;
mod outbound;
mod restart;
mod scaling;
mod security;
mod smtp;
