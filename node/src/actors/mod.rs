//! Actors (actix) that give mailboxes and shard queues a home on the node that leads
//! their shard:
//! - [`mailbox`]: one [`mailbox::MailboxActor`] per *active* mailbox, activated on
//!   demand by the [`mailbox::MailboxRegistry`] and passivated when idle, so 50,000
//!   users do not mean 50,000 live actors. It serialises the mailbox's proposals, so
//!   messages arriving at the leader get UIDs in arrival order.
//! - [`queue`]: one [`queue::QueueActor`] per shard this node leads, delivering the
//!   shard's outbound items; the [`queue::QueueSupervisor`] follows leadership changes.
//!
//! All actors live on one actix system with its own thread ([`ActorRuntime`]), so the
//! HTTP workers, the peer network and the Raft thread can all reach them.

pub mod mailbox;
pub mod queue;

use actix::{Arbiter, ArbiterHandle, System};

/// A dedicated actix system thread that hosts this node's actors.
pub struct ActorRuntime {
    arbiter: ArbiterHandle,
    system: System,
}

impl ActorRuntime {
    pub fn start() -> Self {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ums-actors".into())
            .spawn(move || {
                let system = System::new();
                system.block_on(async {
                    let _ = sender.send((Arbiter::current(), System::current()));
                });
                let _ = system.run();
            })
            .expect("spawn the actor thread");
        let (arbiter, system) = receiver.recv().expect("actor system started");
        Self { arbiter, system }
    }

    /// Where actors are started.
    pub fn arbiter(&self) -> &ArbiterHandle {
        &self.arbiter
    }

    pub fn stop(&self) {
        self.system.stop();
    }
}
