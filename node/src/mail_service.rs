//! The cluster as the protocol gateways see it: [`gateways::mail_service::MailService`]
//! implemented on top of [`Cluster`] (routing to shard leaders, replicated writes).

use async_trait::async_trait;
use gateways::mail_service::{
    Account, Copied, FlagChange, FlagsStored, MailService, MailboxState, MessageInfo, NewMessage, Quota, Relay,
    ServiceError, Stored,
};

use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::passwords::verify_password;
use crate::proto::state::{
    ClaimRecent, CopyMessages, CreateMailbox, DeleteMailbox, Deliver, Expunge, GetMailbox, ListMailboxes, ListMessages,
    Mailbox, MailboxInfo, MessageMeta, OutboundItem, RenameMailbox, StoreFlags, Subscribe, command, query, store_flags,
};
use crate::state::folders::first_recent;

/// A mailbox record as the gateways see it; the counts are made only by the mailbox list.
fn state_of(name: &str, mailbox: &Mailbox, counts: Option<&MailboxInfo>) -> MailboxState {
    let counts = counts.cloned().unwrap_or_default();
    MailboxState {
        name: name.to_string(),
        uid_validity: mailbox.uid_validity,
        uid_next: mailbox.next_uid,
        highest_modseq: mailbox.highest_modseq,
        messages: mailbox.exists,
        unseen: counts.unseen,
        recent: counts.recent,
        deleted: counts.deleted,
        deleted_bytes: counts.deleted_bytes,
        first_recent_uid: first_recent(mailbox),
        subscribed: mailbox.subscribed,
        special_use: (!mailbox.special_use.is_empty()).then(|| mailbox.special_use.clone()),
    }
}

fn info_of(meta: MessageMeta, raw: Option<Vec<u8>>) -> MessageInfo {
    MessageInfo {
        uid: meta.uid,
        modseq: meta.modseq,
        flags: meta.flags,
        internal_date_ms: meta.internal_date_ms,
        size: meta.size,
        raw,
    }
}

impl Cluster {
    /// Proposes a mailbox operation on the user's shard.
    async fn on_mailboxes(
        &self,
        user_id: &str,
        op: command::Op,
    ) -> Result<crate::proto::state::CommandResult, ServiceError> {
        self.propose(self.shard_of(user_id), op).await
    }
}

#[async_trait]
impl MailService for Cluster {
    fn mailbox_changes(&self, user_id: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        Cluster::mailbox_changes(self, user_id)
    }

    async fn is_local_domain(&self, domain: &str) -> Result<bool, ServiceError> {
        Cluster::is_local_domain(self, domain).await
    }

    async fn find_user(&self, address: &str) -> Result<Option<Account>, ServiceError> {
        match self.lookup_account(address).await {
            Ok((user, quota)) => {
                let over_quota = quota.used_bytes >= quota.limit_bytes;
                Ok(Some(Account { user_id: user.id, email: user.email, over_quota }))
            }
            Err(ServiceError::NotFound(_) | ServiceError::Invalid(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn login_account(&self, login: &str) -> Result<Option<String>, ServiceError> {
        match self.resolve(login).await {
            Ok(user_id) => Ok(Some(user_id)),
            Err(ServiceError::NotFound(_) | ServiceError::Invalid(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn verify_login(&self, login: &str, password: &str) -> Result<Option<Account>, ServiceError> {
        let user = match self.lookup_user(login).await {
            Ok(user) => user,
            Err(ServiceError::NotFound(_) | ServiceError::Invalid(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Argon2 takes tens of milliseconds: off the async workers.
        let (password, hash) = (password.to_string(), user.password_hash.clone());
        let valid = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(valid.then_some(Account { user_id: user.id, email: user.email, over_quota: false }))
    }

    async fn deliver(&self, message: NewMessage) -> Result<Stored, ServiceError> {
        let deliver = Deliver {
            user_id: message.user_id,
            mailbox: message.mailbox,
            raw: message.raw,
            kind: message.kind,
            internal_date_ms: message.internal_date_ms.unwrap_or_else(now_ms),
            flags: message.flags,
            client_ref: message.client_ref,
            existing_mailbox: message.existing_mailbox,
            // What clients and other servers send counts against the user's quota.
            ignore_quota: false,
        };
        let (_, delivered) = self.deliver_to_user(deliver, message.idempotency_key.as_deref()).await?;
        Ok(Stored { uid: delivered.uid, uid_validity: delivered.uid_validity, modseq: delivered.modseq })
    }

    async fn enqueue_relay(&self, relay: Relay) -> Result<(), ServiceError> {
        let item = OutboundItem {
            channel: "smtp".into(),
            target: relay.recipient,
            payload: relay.raw,
            content_type: "message/rfc822".into(),
            client_ref: relay.idempotency_key.clone(),
            mail_from: relay.mail_from,
            ..Default::default()
        };
        self.enqueue_outbound(&relay.user_id, item, Some(&relay.idempotency_key)).await.map(|_| ())
    }

    async fn mailboxes(&self, user_id: &str) -> Result<Vec<MailboxState>, ServiceError> {
        let result = self
            .query(self.shard_of(user_id), query::Q::ListMailboxes(ListMailboxes { user_id: user_id.to_string() }))
            .await?;
        Ok(result
            .mailboxes
            .iter()
            .map(|m| state_of(&m.name, &m.mailbox.clone().unwrap_or_default(), Some(m)))
            .collect())
    }

    async fn mailbox(&self, user_id: &str, mailbox: &str, local: bool) -> Result<MailboxState, ServiceError> {
        let get = query::Q::GetMailbox(GetMailbox { user_id: user_id.to_string(), mailbox: mailbox.to_string() });
        let shard = self.shard_of(user_id);
        let result = self.query_from(shard, get, local).await?;
        Ok(state_of(mailbox, &result.mailbox.unwrap_or_default(), None))
    }

    async fn create_mailbox(&self, user_id: &str, mailbox: &str) -> Result<(), ServiceError> {
        let op =
            command::Op::CreateMailbox(CreateMailbox { user_id: user_id.to_string(), mailbox: mailbox.to_string() });
        self.on_mailboxes(user_id, op).await.map(|_| ())
    }

    async fn delete_mailbox(&self, user_id: &str, mailbox: &str) -> Result<(), ServiceError> {
        let op =
            command::Op::DeleteMailbox(DeleteMailbox { user_id: user_id.to_string(), mailbox: mailbox.to_string() });
        self.on_mailboxes(user_id, op).await.map(|_| ())
    }

    async fn rename_mailbox(&self, user_id: &str, from: &str, to: &str) -> Result<(), ServiceError> {
        let op = command::Op::RenameMailbox(RenameMailbox {
            user_id: user_id.to_string(),
            from: from.to_string(),
            to: to.to_string(),
        });
        self.on_mailboxes(user_id, op).await.map(|_| ())
    }

    async fn subscribe(&self, user_id: &str, mailbox: &str, subscribed: bool) -> Result<(), ServiceError> {
        let op = command::Op::Subscribe(Subscribe {
            user_id: user_id.to_string(),
            mailbox: mailbox.to_string(),
            subscribed,
        });
        self.on_mailboxes(user_id, op).await.map(|_| ())
    }

    async fn messages(
        &self,
        user_id: &str,
        mailbox: &str,
        uids: Option<&[u32]>,
        bodies: bool,
    ) -> Result<Vec<MessageInfo>, ServiceError> {
        if uids.is_some_and(<[u32]>::is_empty) {
            return Ok(Vec::new());
        }
        let list = ListMessages {
            user_id: user_id.to_string(),
            mailbox: mailbox.to_string(),
            after_uid: 0,
            limit: 0,
            with_bodies: bodies,
            uids: uids.map(<[u32]>::to_vec).unwrap_or_default(),
        };
        let result = self.query(self.shard_of(user_id), query::Q::ListMessages(list)).await?;
        if result.mailbox.is_none() {
            return Err(ServiceError::NotFound(format!("no mailbox {mailbox}")));
        }
        Ok(result.messages.into_iter().map(|m| info_of(m.meta.unwrap_or_default(), bodies.then_some(m.raw))).collect())
    }

    async fn store_flags(
        &self,
        user_id: &str,
        mailbox: &str,
        uids: &[u32],
        change: FlagChange,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<FlagsStored, ServiceError> {
        let mode = match change {
            FlagChange::Add => store_flags::Mode::Add,
            FlagChange::Remove => store_flags::Mode::Remove,
            FlagChange::Replace => store_flags::Mode::Replace,
        };
        let op = command::Op::StoreFlags(StoreFlags {
            user_id: user_id.to_string(),
            mailbox: mailbox.to_string(),
            uids: uids.to_vec(),
            mode: mode as i32,
            flags: flags.to_vec(),
            unchanged_since,
        });
        let result = self.on_mailboxes(user_id, op).await?;
        Ok(FlagsStored {
            messages: result.changed.into_iter().map(|m| info_of(m, None)).collect(),
            modified: result.modified,
        })
    }

    async fn expunge(&self, user_id: &str, mailbox: &str, uids: Option<&[u32]>) -> Result<Vec<u32>, ServiceError> {
        let op = command::Op::Expunge(Expunge {
            user_id: user_id.to_string(),
            mailbox: mailbox.to_string(),
            uids: uids.map(<[u32]>::to_vec).unwrap_or_default(),
            all_deleted: uids.is_none(),
        });
        Ok(self.on_mailboxes(user_id, op).await?.expunged)
    }

    async fn copy_messages(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
        uids: &[u32],
        remove: bool,
    ) -> Result<Copied, ServiceError> {
        let op = command::Op::CopyMessages(CopyMessages {
            user_id: user_id.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            uids: uids.to_vec(),
            r#move: remove,
        });
        let result = self.on_mailboxes(user_id, op).await?;
        Ok(Copied {
            uid_validity: result.dest_uid_validity,
            source_uids: result.source_uids,
            dest_uids: result.dest_uids,
            expunged: result.expunged,
        })
    }

    async fn claim_recent(&self, user_id: &str, mailbox: &str) -> Result<std::ops::Range<u32>, ServiceError> {
        let op = command::Op::ClaimRecent(ClaimRecent { user_id: user_id.to_string(), mailbox: mailbox.to_string() });
        let result = self.on_mailboxes(user_id, op).await?;
        Ok(result.recent_from..result.recent_to)
    }

    async fn quota(&self, user_id: &str) -> Result<Quota, ServiceError> {
        Ok(self.lookup_account(user_id).await?.1)
    }
}
