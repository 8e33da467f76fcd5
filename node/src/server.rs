//! Starts one node from its configuration: storage, Raft thread, peer network, service,
//! SMTP and IMAP gateways and HTTP API; stops them in order on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor as _;
use anyhow::Context;
use consensus::{Event, MultiRaft, NodeId};
use storage::{Engine, RocksEngine, RocksOptions};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::actors::ActorRuntime;
use crate::actors::mailbox::MailboxRegistry;
use crate::actors::queue::{Leadership, QueueSettings, QueueSupervisor, Rung, webhook_agent};
use crate::audit::{AuditEvent, AuditLog};
use crate::auth::Authenticator;
use crate::auth::authenticator::load_or_create_node_token;
use crate::cluster::Cluster;
use crate::config::{NodeConfig, ThreadSettings};
use crate::http::{self, AppState};
use crate::peer::tls::PeerTls;
use crate::peer::{self, PeerNetwork, PeerTransport};
use crate::placement::{initial_placement, preferred_leaders};
use crate::runtime::{self, LoopSettings};
use crate::state::UmsMachine;
use crate::state::bell::OutboundBell;
use crate::webhook_targets::WebhookTargets;
use gateways::bans::BanList;

/// Marker file: the groups of this node were bootstrapped once; never do it again.
pub const BOOTSTRAPPED_MARKER: &str = "bootstrapped";

/// Runs the node until it is told to stop.
pub fn run(config: NodeConfig, metrics: Option<metrics_exporter_prometheus::PrometheusHandle>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    if config.debug_faults && !http::FAULTS_COMPILED_IN {
        anyhow::bail!(
            "debug_faults = true, but this build has no fault injection (build with --features debug-faults)"
        );
    }
    crate::membership::check_not_removed(&config.data_dir)?;
    let node_token = load_or_create_node_token(&config.data_dir).context("this node's admin token")?;
    let db_path = config.data_dir.join("db");
    let rocks_options = RocksOptions { unsafe_skip_fsync: config.unsafe_skip_fsync, ..RocksOptions::default() };
    let rocks = RocksEngine::open(&db_path, &rocks_options)
        .with_context(|| format!("opening RocksDB at {}", db_path.display()))?;
    let disk_faults = rocks.disk_faults();
    let engine: Engine = Arc::new(rocks);
    let bell = Arc::new(OutboundBell::default());
    let mailbox_bell = Arc::new(crate::state::mailbox_bell::MailboxBell::default());
    let mut raft = MultiRaft::open(
        config.node_id,
        config.raft_config(),
        engine.clone(),
        UmsMachine::new(Arc::clone(&bell), Arc::clone(&mailbox_bell)),
    )
    .context("opening Raft groups")?;

    let member_ids: Vec<NodeId> = config.members.iter().map(|m| m.id).collect();
    let placement = initial_placement(&member_ids, config.shards, config.replicas);
    let marker = config.data_dir.join(BOOTSTRAPPED_MARKER);
    if !marker.exists() {
        let mut created = 0;
        for (&group, replicas) in &placement {
            if replicas.contains(&config.node_id) && !raft.has_group(group) {
                raft.bootstrap_group(group, replicas).with_context(|| format!("bootstrapping shard {group}"))?;
                created += 1;
            }
        }
        std::fs::write(&marker, b"").context("writing bootstrap marker")?;
        info!(node = config.node_id, groups = created, "bootstrapped a new cluster member");
    }
    info!(node = config.node_id, groups = raft.group_ids().count(), "replicas loaded");

    let io_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(ThreadSettings::resolve(config.threads.io_threads))
        .thread_name("ums-io")
        .enable_all()
        .build()?;
    let peers = crate::membership::peer_members(&config.members, &[]);
    let peer_tls = match &config.peer_tls {
        Some(settings) => Some(PeerTls::load(settings, &config.cluster_id).context("loading [peer_tls]")?),
        None => {
            warn!(
                node = config.node_id,
                "no [peer_tls]: peer traffic is unauthenticated plain TCP; never outside a test machine"
            );
            None
        }
    };
    let mut network = None;
    let (events_tx, events_rx) = crossbeam_channel::bounded(4096);
    let settings = LoopSettings {
        tick: Duration::from_millis(config.raft.tick_ms),
        preferred_leaders: preferred_leaders(&placement),
        balance_every: Duration::from_secs(1),
    };
    let (raft_handle, raft_thread) = runtime::start(raft, settings, events_tx, |handle| {
        let started = PeerNetwork::start(
            io_runtime.handle(),
            config.node_id,
            &config.cluster_id,
            config.peer_listen.ip(),
            &peers,
            peer_tls.clone(),
            handle,
        );
        network = Some(Arc::clone(&started));
        Box::new(PeerTransport(started))
    });
    let network = network.expect("transport created by runtime::start");
    {
        let (data_dir, node) = (config.data_dir.clone(), config.node_id);
        network.on_removed(Box::new(move || {
            crate::membership::fence(&data_dir, node, "a member refused this node as removed")
        }));
    }

    let listener = io_runtime
        .block_on(tokio::net::TcpListener::bind(config.peer_listen))
        .with_context(|| format!("binding the peer port {}", config.peer_listen))?;
    let replicas_of: HashMap<_, _> = placement.into_iter().collect();
    let actors = ActorRuntime::start();
    let mailboxes = MailboxRegistry::new(
        actors.arbiter().clone(),
        raft_handle.clone(),
        Duration::from_millis(config.mailbox_idle_ms.max(100)),
    );
    let cluster = Cluster::new(
        config.node_id,
        config.shards,
        replicas_of,
        raft_handle.clone(),
        Arc::clone(&network),
        crate::cluster::LocalReplica { engine, mailbox_bell },
        mailboxes,
    );
    let webhook_targets = Arc::new(WebhookTargets::new(&config.outbound.webhook_allow).map_err(anyhow::Error::msg)?);
    // Outgoing mail is signed by its domain's DKIM key, copied from the meta group.
    let dkim = {
        let _runtime = io_runtime.enter();
        crate::dkim::DkimSigners::start(Arc::clone(&cluster))
    };
    let queue_settings = QueueSettings {
        cluster_id: config.cluster_id.clone(),
        rescan_after: Duration::from_millis(100),
        bell: Arc::clone(&bell),
        retry_base: Duration::from_millis(config.outbound.retry_base_ms.max(1)),
        max_attempts: config.outbound.max_attempts.max(1),
        batch: 64,
        relay: gateways::smtp::relay::RelayTarget::new(
            config.smtp.relay_host.clone(),
            config.smtp.hostname.clone(),
            config.smtp.relay_tls.clone(),
        )
        .map_err(anyhow::Error::msg)?,
        webhooks: webhook_agent(Arc::clone(&webhook_targets)),
        dkim,
    };
    let supervisor = {
        let (cluster, settings) = (Arc::clone(&cluster), queue_settings);
        QueueSupervisor::start_in_arbiter(actors.arbiter(), move |_| QueueSupervisor::new(cluster, settings))
    };
    // The bell's rings reach the shards' queue actors through their supervisor.
    let rung = supervisor.clone();
    bell.listen(Box::new(move |shards| rung.do_send(Rung(shards))));
    // Leadership news from the Raft thread drives the queue actors.
    std::thread::Builder::new().name("ums-events".into()).spawn(move || {
        for event in events_rx {
            if let Event::RoleChanged { group, role, .. } = event {
                supervisor.do_send(Leadership { shard: group, leading: role == raft::StateRole::Leader });
            }
        }
    })?;
    let (incoming_tx, incoming_rx) = mpsc::channel(4096);
    let admits = peer::Listener {
        cluster_id: config.cluster_id.clone(),
        tls: peer_tls,
        network: Arc::clone(&network),
        raft: raft_handle.clone(),
        incoming: incoming_tx,
    };
    io_runtime.spawn(peer::listen(listener, admits));
    io_runtime.spawn(Arc::clone(&cluster).serve_incoming(incoming_rx));
    {
        let _runtime = io_runtime.enter();
        let settings = crate::membership::Settings {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            bootstrap: config.members.clone(),
        };
        crate::membership::start(Arc::clone(&cluster), Arc::clone(&network), settings);
        crate::driver::start(Arc::clone(&cluster), config.placement.clone(), config.replicas);
    }

    let mail: Arc<dyn gateways::mail_service::MailService> = Arc::clone(&cluster) as _;
    // One count of failed logins for every protocol: a guesser gains nothing by switching.
    let logins = gateways::logins::LoginThrottle::new(config.logins.clone());
    let bans = Arc::new(BanList::new(config.bans.networks().map_err(anyhow::Error::msg)?));
    // The audit writer and the ban copier run on the I/O runtime.
    let audit = {
        let _runtime = io_runtime.enter();
        crate::bans::start(Arc::clone(&cluster), Arc::clone(&bans));
        AuditLog::start(Arc::clone(&cluster))
    };
    let reporter = Arc::clone(&audit);
    logins.report_to(Box::new(move |failure| {
        let detail = if failure.throttled { "not checked: too many failed logins" } else { "wrong login or password" };
        let action = format!("{} login", failure.protocol);
        reporter.record(AuditEvent { actor: failure.login, source: failure.ip, action: &action, result: 401, detail });
    }));
    let smtp = gateways::smtp::start(config.smtp.clone(), Arc::clone(&mail), Arc::clone(&logins), Arc::clone(&bans));
    io_runtime.block_on(smtp).context("starting SMTP")?;
    let imap = gateways::imap::start(config.imap.clone(), mail, Arc::clone(&logins), Arc::clone(&bans));
    io_runtime.block_on(imap).context("starting IMAP")?;

    info!(node = config.node_id, peer = %config.peer_listen, http = %config.http_listen, "node started");
    #[cfg(any(debug_assertions, feature = "debug-faults"))]
    let debug = config.debug_faults.then(|| {
        warn!(node = config.node_id, "debug fault injection is on (debug_faults = true): never on a production node");
        http::DebugFaults { network: Arc::clone(&network), disk: disk_faults }
    });
    #[cfg(not(any(debug_assertions, feature = "debug-faults")))]
    drop(disk_faults);
    let authenticator = Authenticator::new(Arc::clone(&cluster), &node_token, logins)?;
    let state = AppState {
        cluster,
        cluster_id: config.cluster_id.clone(),
        members: config.members.clone(),
        placement: config.placement.clone(),
        replicas: config.replicas,
        metrics,
        authenticator,
        webhook_targets,
        audit,
        bans,
        #[cfg(any(debug_assertions, feature = "debug-faults"))]
        debug,
    };
    let workers = ThreadSettings::resolve(config.threads.http_workers);
    let served = actix_web::rt::System::new().block_on(http::serve(config.http_listen, &config.http, workers, state));
    info!(node = config.node_id, "stopping");
    actors.stop();
    raft_handle.stop();
    let _ = raft_thread.join();
    io_runtime.shutdown_timeout(Duration::from_secs(1));
    served.with_context(|| format!("HTTP API on {}", config.http_listen))
}
