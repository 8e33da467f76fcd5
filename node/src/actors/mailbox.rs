//! Virtual mailbox actors: activated on first use, passivated after being idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use consensus::{Command, GroupId, ProposeError};

use crate::runtime::RaftHandle;

/// Proposes a command that changes this mailbox on the local Raft replica (which must
/// lead the shard; otherwise the proposal fails with `NotLeader` and the caller moves on).
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, ProposeError>")]
pub struct ProposeToMailbox {
    pub group: GroupId,
    pub command: Command,
}

/// One active mailbox.
pub struct MailboxActor {
    user_id: String,
    generation: u64,
    raft: RaftHandle,
    idle_after: Duration,
    last_active: Instant,
    registry: Weak<MailboxRegistry>,
}

impl Actor for MailboxActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.idle_after / 4, |actor, ctx| {
            if actor.last_active.elapsed() >= actor.idle_after {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(registry) = self.registry.upgrade() {
            registry.on_passivated(&self.user_id, self.generation);
        }
    }
}

impl Handler<ProposeToMailbox> for MailboxActor {
    // Atomic: the next proposal for this mailbox starts when this one has an outcome.
    type Result = AtomicResponse<Self, Result<Vec<u8>, ProposeError>>;

    fn handle(&mut self, message: ProposeToMailbox, _ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        let raft = self.raft.clone();
        AtomicResponse::new(Box::pin(
            async move { raft.propose(message.group, message.command).await }.into_actor(self).map(
                |result, actor, _| {
                    actor.last_active = Instant::now();
                    result
                },
            ),
        ))
    }
}

/// Finds or activates the actor of a mailbox.
pub struct MailboxRegistry {
    arbiter: ArbiterHandle,
    raft: RaftHandle,
    idle_after: Duration,
    active: Mutex<HashMap<String, (u64, Addr<MailboxActor>)>>,
    next_generation: AtomicU64,
}

impl MailboxRegistry {
    pub fn new(arbiter: ArbiterHandle, raft: RaftHandle, idle_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            arbiter,
            raft,
            idle_after,
            active: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
        })
    }

    /// The live actor of `user_id`'s mailbox, activated if needed.
    pub fn mailbox(self: &Arc<Self>, user_id: &str) -> Addr<MailboxActor> {
        let mut active = self.active.lock().expect("registry lock");
        if let Some((_, addr)) = active.get(user_id)
            && addr.connected()
        {
            return addr.clone();
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let actor = MailboxActor {
            user_id: user_id.to_string(),
            generation,
            raft: self.raft.clone(),
            idle_after: self.idle_after,
            last_active: Instant::now(),
            registry: Arc::downgrade(self),
        };
        let addr = MailboxActor::start_in_arbiter(&self.arbiter, move |_| actor);
        active.insert(user_id.to_string(), (generation, addr.clone()));
        metrics::gauge!("ums_active_mailboxes").set(active.len() as f64);
        addr
    }

    /// Proposes through the mailbox's actor.
    pub async fn propose(
        self: &Arc<Self>,
        user_id: &str,
        group: GroupId,
        command: Command,
    ) -> Result<Vec<u8>, ProposeError> {
        self.mailbox(user_id)
            .send(ProposeToMailbox { group, command })
            .await
            .unwrap_or(Err(ProposeError::Dropped { group }))
    }

    pub fn active_count(&self) -> usize {
        self.active.lock().expect("registry lock").len()
    }

    fn on_passivated(&self, user_id: &str, generation: u64) {
        let mut active = self.active.lock().expect("registry lock");
        // A newer actor may already have taken the name; leave that one alone.
        if active.get(user_id).is_some_and(|(g, _)| *g == generation) {
            active.remove(user_id);
        }
        metrics::gauge!("ums_active_mailboxes").set(active.len() as f64);
    }
}
