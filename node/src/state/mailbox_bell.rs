//! Rings when a user's mailboxes change on this replica, so IMAP IDLE sessions on this
//! node hear of new mail, flag changes and expunges at once instead of polling.
//!
//! The state machine notes the owner of every mailbox an entry changed while it applies,
//! and rings them once the applied batch is written, so a read after a ring sees the
//! change. Only users someone watches are kept: a ring for anyone else is one lookup,
//! and a user whose last watcher went is forgotten at its next ring.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Per watched user, a generation that changes with each ring.
#[derive(Debug, Default)]
pub struct MailboxBell {
    watched: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl MailboxBell {
    /// A receiver that changes whenever `user_id`'s mailboxes change here.
    pub fn subscribe(&self, user_id: &str) -> watch::Receiver<u64> {
        let mut watched = self.watched.lock().expect("mailbox bell");
        watched.entry(user_id.to_string()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Tells the watchers of `users` (on the Raft thread: it never blocks).
    pub fn ring<'a>(&self, users: impl IntoIterator<Item = &'a String>) {
        let mut watched = self.watched.lock().expect("mailbox bell");
        for user in users {
            let Some(sender) = watched.get(user) else { continue };
            if sender.receiver_count() == 0 {
                watched.remove(user);
            } else {
                sender.send_modify(|generation| *generation += 1);
            }
        }
    }

    /// Tells every watcher (a snapshot replaced a group's data: anyone may have changed).
    pub fn ring_all(&self) {
        let users: Vec<String> = self.watched.lock().expect("mailbox bell").keys().cloned().collect();
        self.ring(&users);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_reaches_the_users_watchers_only_and_forgets_the_unwatched() {
        let bell = MailboxBell::default();
        let mut ana = bell.subscribe("ana");
        let ben = bell.subscribe("ben");
        bell.ring(&["ana".to_string(), "nobody".to_string()]);
        assert!(ana.has_changed().unwrap());
        assert!(!ben.has_changed().unwrap());
        ana.mark_unchanged();
        bell.ring_all();
        assert!(ana.has_changed().unwrap() && ben.has_changed().unwrap());
        drop(ben);
        bell.ring(&["ben".to_string()]);
        assert_eq!(bell.watched.lock().unwrap().len(), 1, "ben had no watcher left");
    }
}
