//! An in-memory [`MailService`] for the gateways' unit tests: users with passwords,
//! local domains, and mailboxes with UIDs, modseqs, flags and folders that behave like
//! the replicated ones (`node::state::folders`), so a protocol session can be driven
//! command by command without a cluster. Relays are recorded, not sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::mail_service::{
    Account, Copied, FlagChange, FlagsStored, MailService, MailboxState, MessageInfo, NewMessage, Quota, Relay,
    SPECIAL_USE_MAILBOXES, ServiceError, Stored,
};

const INBOX: &str = "INBOX";

#[derive(Clone, Debug)]
struct MemMailbox {
    uid_validity: u32,
    next_uid: u32,
    first_recent_uid: u32,
    highest_modseq: u64,
    subscribed: bool,
    special_use: Option<String>,
    messages: BTreeMap<u32, MessageInfo>,
}

#[derive(Default)]
struct State {
    /// login (the user id) → password.
    users: HashMap<String, String>,
    domains: Vec<String>,
    mailboxes: BTreeMap<(String, String), MemMailbox>,
    /// Grows like a log index: a mailbox created again gets a larger UIDVALIDITY.
    next_uid_validity: u32,
    /// Every user's storage quota.
    quota_bytes: u64,
    relays: Vec<Relay>,
}

impl State {
    fn new_mailbox(&mut self) -> MemMailbox {
        self.next_uid_validity += 1;
        MemMailbox {
            uid_validity: self.next_uid_validity,
            next_uid: 1,
            first_recent_uid: 1,
            highest_modseq: 0,
            subscribed: true,
            special_use: None,
            messages: BTreeMap::new(),
        }
    }

    fn used_bytes(&self, user: &str) -> u64 {
        let messages =
            self.mailboxes.iter().filter(|((owner, _), _)| owner == user).flat_map(|(_, m)| m.messages.values());
        messages.map(|m| m.size).sum()
    }

    /// Refuses `bytes` more for `user` beyond the quota, as the replicated state does.
    fn check_room(&self, user: &str, bytes: u64) -> Result<(), ServiceError> {
        let used = self.used_bytes(user);
        if used + bytes > self.quota_bytes {
            return Err(ServiceError::OverQuota(format!(
                "{user} is over quota: {used} of {} bytes used",
                self.quota_bytes
            )));
        }
        Ok(())
    }

    fn mailbox(&mut self, user: &str, name: &str) -> Result<&mut MemMailbox, ServiceError> {
        self.mailboxes
            .get_mut(&(user.to_string(), name.to_string()))
            .ok_or_else(|| ServiceError::NotFound(format!("{user} has no mailbox {name}")))
    }
}

#[derive(Default)]
pub struct MemService {
    state: Mutex<State>,
}

impl MemService {
    /// A service whose users are `(e-mail address, password)`; each has an INBOX and the
    /// special-use mailboxes, and the domains of their addresses are local.
    pub fn with_users(users: &[(&str, &str)]) -> Self {
        let service = Self::default();
        {
            let mut state = service.state.lock().unwrap();
            state.quota_bytes = 10 * 1024 * 1024;
            for (email, password) in users {
                state.users.insert(email.to_string(), password.to_string());
                let domain = email.rsplit('@').next().unwrap_or_default().to_string();
                if !state.domains.contains(&domain) {
                    state.domains.push(domain);
                }
                let inbox = state.new_mailbox();
                state.mailboxes.insert((email.to_string(), INBOX.to_string()), inbox);
                for (name, special_use) in SPECIAL_USE_MAILBOXES {
                    let mailbox = MemMailbox { special_use: Some(special_use.to_string()), ..state.new_mailbox() };
                    state.mailboxes.insert((email.to_string(), name.to_string()), mailbox);
                }
            }
        }
        service
    }

    /// Stores `raw` in a mailbox as a delivery from outside would (test set-up).
    pub fn put_message(&self, user: &str, mailbox: &str, raw: &str, flags: &[&str]) -> u32 {
        let message = NewMessage {
            user_id: user.into(),
            mailbox: mailbox.into(),
            raw: raw.as_bytes().to_vec(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            internal_date_ms: Some(1_772_618_400_000),
            ..NewMessage::default()
        };
        self.store_new(message).expect("test delivery").uid
    }

    /// Sets every user's storage quota.
    pub fn set_quota(&self, bytes: u64) {
        self.state.lock().unwrap().quota_bytes = bytes;
    }

    /// The relays queued so far.
    pub fn relays(&self) -> Vec<Relay> {
        self.state.lock().unwrap().relays.clone()
    }

    /// UIDs in a mailbox now, as another client would see them.
    pub fn uids(&self, user: &str, mailbox: &str) -> Vec<u32> {
        let mut state = self.state.lock().unwrap();
        state.mailbox(user, mailbox).map(|m| m.messages.keys().copied().collect()).unwrap_or_default()
    }

    fn store_new(&self, message: NewMessage) -> Result<Stored, ServiceError> {
        let mut state = self.state.lock().unwrap();
        if !state.users.contains_key(&message.user_id) {
            return Err(ServiceError::NotFound(format!("no such user: {}", message.user_id)));
        }
        let key = (message.user_id.clone(), message.mailbox.clone());
        state.check_room(&message.user_id, message.raw.len() as u64)?;
        if !state.mailboxes.contains_key(&key) {
            if message.existing_mailbox {
                return Err(ServiceError::NotFound(format!("no mailbox {}", message.mailbox)));
            }
            let fresh = state.new_mailbox();
            state.mailboxes.insert(key.clone(), fresh);
        }
        let mailbox = state.mailboxes.get_mut(&key).expect("just made sure");
        let uid = mailbox.next_uid;
        mailbox.next_uid += 1;
        mailbox.highest_modseq += 1;
        let info = MessageInfo {
            uid,
            modseq: mailbox.highest_modseq,
            flags: message.flags,
            internal_date_ms: message.internal_date_ms.unwrap_or(1_772_618_400_000),
            size: message.raw.len() as u64,
            raw: Some(message.raw),
        };
        mailbox.messages.insert(uid, info);
        Ok(Stored { uid, uid_validity: mailbox.uid_validity, modseq: mailbox.highest_modseq })
    }
}

fn state_of(name: &str, mailbox: &MemMailbox) -> MailboxState {
    let unseen = mailbox.messages.values().filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")));
    let recent = mailbox.messages.keys().filter(|&&uid| uid >= mailbox.first_recent_uid).count() as u32;
    let deleted: Vec<&MessageInfo> =
        mailbox.messages.values().filter(|m| m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted"))).collect();
    MailboxState {
        name: name.to_string(),
        uid_validity: mailbox.uid_validity,
        uid_next: mailbox.next_uid,
        highest_modseq: mailbox.highest_modseq,
        messages: mailbox.messages.len() as u32,
        unseen: unseen.count() as u32,
        recent,
        deleted: deleted.len() as u32,
        deleted_bytes: deleted.iter().map(|m| m.size).sum(),
        first_recent_uid: mailbox.first_recent_uid,
        subscribed: mailbox.subscribed,
        special_use: mailbox.special_use.clone(),
    }
}

#[async_trait]
impl MailService for MemService {
    async fn is_local_domain(&self, domain: &str) -> Result<bool, ServiceError> {
        Ok(self.state.lock().unwrap().domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }

    async fn find_user(&self, address: &str) -> Result<Option<Account>, ServiceError> {
        let address = address.to_lowercase();
        let state = self.state.lock().unwrap();
        let over_quota = state.used_bytes(&address) >= state.quota_bytes;
        let known = state.users.contains_key(&address);
        Ok(known.then(|| Account { user_id: address.clone(), email: address, over_quota }))
    }

    async fn verify_login(&self, login: &str, password: &str) -> Result<Option<Account>, ServiceError> {
        let login = login.to_lowercase();
        let valid = self.state.lock().unwrap().users.get(&login).is_some_and(|p| p == password);
        Ok(valid.then(|| Account { user_id: login.clone(), email: login, over_quota: false }))
    }

    async fn deliver(&self, message: NewMessage) -> Result<Stored, ServiceError> {
        self.store_new(message)
    }

    async fn enqueue_relay(&self, relay: Relay) -> Result<(), ServiceError> {
        self.state.lock().unwrap().relays.push(relay);
        Ok(())
    }

    async fn mailboxes(&self, user_id: &str) -> Result<Vec<MailboxState>, ServiceError> {
        let state = self.state.lock().unwrap();
        Ok(state.mailboxes.iter().filter(|((user, _), _)| user == user_id).map(|((_, n), m)| state_of(n, m)).collect())
    }

    async fn mailbox(&self, user_id: &str, mailbox: &str, _local: bool) -> Result<MailboxState, ServiceError> {
        let mut state = self.state.lock().unwrap();
        let mut found = state_of(mailbox, state.mailbox(user_id, mailbox)?);
        // Like the replicated query: the counts come only with the list.
        (found.unseen, found.recent, found.deleted, found.deleted_bytes) = (0, 0, 0, 0);
        Ok(found)
    }

    async fn create_mailbox(&self, user_id: &str, mailbox: &str) -> Result<(), ServiceError> {
        let mut state = self.state.lock().unwrap();
        let key = (user_id.to_string(), mailbox.to_string());
        if mailbox.is_empty() {
            return Err(ServiceError::Invalid("invalid mailbox name".into()));
        }
        if state.mailboxes.contains_key(&key) {
            return Err(ServiceError::Conflict(format!("mailbox {mailbox} exists")));
        }
        // Superior names are created too, as the replicated state does.
        for (at, _) in mailbox.match_indices('/') {
            let superior = (user_id.to_string(), mailbox[..at].to_string());
            if !superior.1.is_empty() && !state.mailboxes.contains_key(&superior) {
                let fresh = state.new_mailbox();
                state.mailboxes.insert(superior, fresh);
            }
        }
        let fresh = state.new_mailbox();
        state.mailboxes.insert(key, fresh);
        Ok(())
    }

    async fn delete_mailbox(&self, user_id: &str, mailbox: &str) -> Result<(), ServiceError> {
        if mailbox == INBOX {
            return Err(ServiceError::Invalid("INBOX cannot be deleted".into()));
        }
        let mut state = self.state.lock().unwrap();
        state.mailbox(user_id, mailbox)?;
        state.mailboxes.remove(&(user_id.to_string(), mailbox.to_string()));
        Ok(())
    }

    async fn rename_mailbox(&self, user_id: &str, from: &str, to: &str) -> Result<(), ServiceError> {
        if to == INBOX || to.starts_with(&format!("{from}/")) {
            return Err(ServiceError::Invalid(format!("cannot rename {from} to {to}")));
        }
        let mut state = self.state.lock().unwrap();
        state.mailbox(user_id, from)?;
        let mut moves = vec![(from.to_string(), to.to_string())];
        if from != INBOX {
            let prefix = format!("{from}/");
            for (user, name) in state.mailboxes.keys() {
                if user == user_id && name.starts_with(&prefix) {
                    moves.push((name.clone(), format!("{to}{}", &name[from.len()..])));
                }
            }
        }
        if moves.iter().any(|(_, target)| state.mailboxes.contains_key(&(user_id.to_string(), target.clone()))) {
            return Err(ServiceError::Conflict(format!("mailbox {to} exists")));
        }
        for (old, new) in moves {
            let old_key = (user_id.to_string(), old.clone());
            let source = state.mailboxes.get(&old_key).cloned().expect("listed above");
            let fresh = state.new_mailbox();
            let target = MemMailbox { uid_validity: fresh.uid_validity, ..source.clone() };
            state.mailboxes.insert((user_id.to_string(), new), target);
            if old == INBOX {
                // INBOX stays, empty; its UIDs are never reused.
                let emptied =
                    MemMailbox { messages: BTreeMap::new(), highest_modseq: source.highest_modseq + 1, ..source };
                state.mailboxes.insert(old_key, emptied);
            } else {
                state.mailboxes.remove(&old_key);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, user_id: &str, mailbox: &str, subscribed: bool) -> Result<(), ServiceError> {
        self.state.lock().unwrap().mailbox(user_id, mailbox)?.subscribed = subscribed;
        Ok(())
    }

    async fn messages(
        &self,
        user_id: &str,
        mailbox: &str,
        uids: Option<&[u32]>,
        bodies: bool,
    ) -> Result<Vec<MessageInfo>, ServiceError> {
        let mut state = self.state.lock().unwrap();
        let mailbox = state.mailbox(user_id, mailbox)?;
        let wanted = |uid: &u32| uids.is_none_or(|uids| uids.contains(uid));
        Ok(mailbox
            .messages
            .iter()
            .filter(|(uid, _)| wanted(uid))
            .map(|(_, m)| MessageInfo { raw: if bodies { m.raw.clone() } else { None }, ..m.clone() })
            .collect())
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
        let mut state = self.state.lock().unwrap();
        let mailbox = state.mailbox(user_id, mailbox)?;
        let mut stored = FlagsStored::default();
        for uid in uids {
            let Some(message) = mailbox.messages.get_mut(uid) else { continue };
            if unchanged_since.is_some_and(|since| message.modseq > since) {
                stored.modified.push(*uid);
                continue;
            }
            let flags = change.apply(&message.flags, flags);
            if flags != message.flags {
                mailbox.highest_modseq += 1;
                message.flags = flags;
                message.modseq = mailbox.highest_modseq;
            }
            stored.messages.push(MessageInfo { raw: None, ..message.clone() });
        }
        Ok(stored)
    }

    async fn expunge(&self, user_id: &str, mailbox: &str, uids: Option<&[u32]>) -> Result<Vec<u32>, ServiceError> {
        let mut state = self.state.lock().unwrap();
        let mailbox = state.mailbox(user_id, mailbox)?;
        let gone: Vec<u32> = mailbox
            .messages
            .values()
            .filter(|m| uids.is_none_or(|uids| uids.contains(&m.uid)))
            .filter(|m| m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")))
            .map(|m| m.uid)
            .collect();
        for uid in &gone {
            mailbox.messages.remove(uid);
        }
        if !gone.is_empty() {
            mailbox.highest_modseq += 1;
        }
        Ok(gone)
    }

    async fn copy_messages(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
        uids: &[u32],
        remove: bool,
    ) -> Result<Copied, ServiceError> {
        if from == to && remove {
            return Err(ServiceError::Invalid("cannot move messages into the mailbox they are in".into()));
        }
        let mut state = self.state.lock().unwrap();
        state.mailbox(user_id, to)?;
        if !remove {
            let source = state.mailbox(user_id, from)?;
            let bytes = source.messages.values().filter(|m| uids.contains(&m.uid)).map(|m| m.size).sum();
            state.check_room(user_id, bytes)?;
        }
        let source = state.mailbox(user_id, from)?;
        let mut picked: Vec<MessageInfo> =
            source.messages.values().filter(|m| uids.contains(&m.uid)).cloned().collect();
        picked.sort_by_key(|m| m.uid);
        let mut copied = Copied::default();
        if remove && !picked.is_empty() {
            for message in &picked {
                source.messages.remove(&message.uid);
            }
            source.highest_modseq += 1;
        }
        let target = state.mailbox(user_id, to)?;
        copied.uid_validity = target.uid_validity;
        for message in picked {
            let uid = target.next_uid;
            target.next_uid += 1;
            target.highest_modseq += 1;
            target.messages.insert(uid, MessageInfo { uid, modseq: target.highest_modseq, ..message.clone() });
            copied.source_uids.push(message.uid);
            copied.dest_uids.push(uid);
            if remove {
                copied.expunged.push(message.uid);
            }
        }
        Ok(copied)
    }

    async fn claim_recent(&self, user_id: &str, mailbox: &str) -> Result<std::ops::Range<u32>, ServiceError> {
        let mut state = self.state.lock().unwrap();
        let mailbox = state.mailbox(user_id, mailbox)?;
        let claimed = mailbox.first_recent_uid..mailbox.next_uid;
        mailbox.first_recent_uid = mailbox.next_uid;
        Ok(claimed)
    }

    async fn quota(&self, user_id: &str) -> Result<Quota, ServiceError> {
        let state = self.state.lock().unwrap();
        let messages = state.mailboxes.iter().filter(|((owner, _), _)| owner == user_id).map(|(_, m)| m.messages.len());
        Ok(Quota {
            used_bytes: state.used_bytes(user_id),
            limit_bytes: state.quota_bytes,
            messages: messages.sum::<usize>() as u64,
        })
    }
}
