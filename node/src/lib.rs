//! The UMS node: everything that turns the replicated core into a running cluster.
//!
//! - [`config`]: the node's TOML configuration and the dev-cluster port plan.
//! - [`placement`]: which groups exist and where (meta group 0, shards by user hash).
//! - [`state`]: the replicated UMS state machine (users, address directory, mailboxes
//!   with UIDs and modseqs) and the read-only queries answered after ReadIndex.
//! - [`actors`]: actix actors: virtual mailbox actors on the shard leader.
//! - [`runtime`]: the thread that drives [`consensus::MultiRaft`] (ticks, rounds).
//! - [`peer`]: the TCP peer transport (mutual TLS, handshake, batched Raft frames,
//!   forwarding); [`pki`]: the cluster CA and the node certificates it issues.
//! - [`cluster`]: the cluster as this node reaches it, what the HTTP layer and the queue
//!   actors call: routes each request to its shard's leader (locally or forwarded) and
//!   retries with the same request id; users, domains, messages, outbound items.
//! - [`membership`]: keeps this node's view of the cluster's nodes and shard targets
//!   current (peers dialled and admitted, targets to the Raft thread), fences a removed node.
//! - [`driver`]: the placement driver on the meta leader (drains, repairs, balances
//!   replicas and leaders, a learner of every group on each backup-site node; pure
//!   policy in [`driver::policy`]); [`backup_core`]: the backup site's recovery point;
//!   [`backup`]: the backup format and `umsd restore`.
//! - [`mail_service`]: the gateways' [`gateways::mail_service::MailService`] on top of
//!   [`cluster::Cluster`] (domains, logins, deliveries, relays, IMAP mailbox operations).
//! - [`addresses`], [`passwords`], [`clock`]: address normalisation, argon2 passwords,
//!   the proposer's wall clock.
//! - [`auth`]: who may call the HTTP API: tokens, roles, the policy, the authenticator.
//! - [`http`]: the HTTP API, health and Prometheus metrics (actix-web).
//! - [`server`]: starts one node from a config; [`dev`]: `umsd dev`, a local cluster
//!   of child processes (process and HTTP helpers shared with the drills and tests come
//!   from the crate `devkit`).

pub mod actors;
pub mod addresses;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod backup_core;
pub mod bans;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod dkim;
pub mod driver;
pub mod http;
pub mod mail_service;
pub mod membership;
pub mod passwords;
pub mod peer;
pub mod pki;
pub mod placement;
pub mod runtime;
pub mod server;
pub mod state;
pub mod webhook_targets;

/// Generated protobuf types.
pub mod proto {
    /// Frames between nodes.
    pub mod peer {
        include!(concat!(env!("OUT_DIR"), "/ums.peer.rs"));
    }
    /// Replicated commands, records and queries.
    pub mod state {
        include!(concat!(env!("OUT_DIR"), "/ums.state.rs"));
    }
}
