//! The selected mailbox as one session sees it (pure): its UIDs in sequence order, which
//! of them are `\Recent` for this session, and the keywords the client was told about.
//! IMAP numbers messages per session, so this view changes only when the session tells
//! the client (EXISTS, EXPUNGE), never behind its back.

use std::ops::Range;

use super::responses::SYSTEM_FLAGS;

pub(super) struct Selected {
    pub name: String,
    pub read_only: bool,
    /// The mailbox's UIDVALIDITY when selected: a different one means it was deleted and
    /// created again, and this session's UIDs mean nothing any more.
    pub uid_validity: u32,
    /// UIDs in order: message sequence number n is `uids[n - 1]`.
    pub uids: Vec<u32>,
    pub highest_modseq: u64,
    /// UID ranges this session was the first to see (RFC 3501 2.3.2): their messages are
    /// `\Recent` here. A read-only session claims nothing and sees as recent what no
    /// session had claimed when it selected the mailbox.
    pub recent: Vec<Range<u32>>,
    /// The `\Recent` count the client was last told (`* N RECENT`).
    pub recent_reported: u32,
    /// Keywords announced in FLAGS / PERMANENTFLAGS (RFC 3501 7.2.6): a FETCH must not show
    /// a keyword the client was not told about first.
    pub keywords: Vec<String>,
}

impl Selected {
    pub fn is_recent(&self, uid: u32) -> bool {
        self.recent.iter().any(|range| range.contains(&uid))
    }

    pub fn recent_count(&self) -> u32 {
        self.uids.iter().filter(|&&uid| self.is_recent(uid)).count() as u32
    }

    /// The message sequence number of `uid`, if it is in this view.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids.binary_search(&uid).ok().map(|position| position as u32 + 1)
    }

    /// Takes `uids` out of the view; the sequence numbers to report, in the order they
    /// must be sent: ascending, each one counted after the ones before it are gone
    /// (RFC 3501 7.4.1: messages 3, 4, 7 expunged are reported as 3, 3, 5).
    pub fn remove(&mut self, uids: &[u32]) -> Vec<u32> {
        let mut positions: Vec<usize> = uids.iter().filter_map(|uid| self.uids.binary_search(uid).ok()).collect();
        positions.sort_unstable();
        positions.dedup();
        let reported = positions.iter().enumerate().map(|(gone, &position)| (position - gone) as u32 + 1).collect();
        for &position in positions.iter().rev() {
            self.uids.remove(position);
        }
        self.recent_reported = self.recent_count();
        reported
    }

    /// Adds keywords among `flags` the client was not told about; true if there were any
    /// (the caller then announces the new FLAGS).
    pub fn learn_keywords<'a>(&mut self, flags: impl IntoIterator<Item = &'a String>) -> bool {
        let mut learned = false;
        for flag in flags {
            let system = flag.starts_with('\\');
            if !system && !self.keywords.iter().any(|k| k.eq_ignore_ascii_case(flag)) {
                self.keywords.push(flag.clone());
                learned = true;
            }
        }
        learned
    }

    /// Every flag the mailbox knows: the system flags, then the keywords.
    pub fn flag_names(&self) -> Vec<String> {
        SYSTEM_FLAGS.iter().map(|f| f.to_string()).chain(self.keywords.iter().cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(uids: &[u32]) -> Selected {
        Selected {
            name: "INBOX".into(),
            read_only: false,
            uid_validity: 1,
            uids: uids.to_vec(),
            highest_modseq: 1,
            recent: std::iter::once(5..8).collect(),
            recent_reported: 0,
            keywords: Vec::new(),
        }
    }

    #[test]
    fn expunges_are_numbered_as_rfc_3501_shows() {
        // Messages 3, 4, 7 and 11 of 11 are expunged: "* 3, * 3, * 5, * 8".
        let mut selected = view(&(1..=11).map(|n| n * 10).collect::<Vec<_>>());
        assert_eq!(selected.remove(&[110, 30, 40, 70, 999]), [3, 3, 5, 8]);
        assert_eq!(selected.uids, [10, 20, 50, 60, 80, 90, 100]);
    }

    #[test]
    fn recent_is_what_this_session_claimed() {
        let selected = view(&[3, 5, 7, 8]);
        assert_eq!((selected.is_recent(4), selected.is_recent(5), selected.is_recent(8)), (false, true, false));
        assert_eq!(selected.recent_count(), 2);
        assert_eq!(selected.seq_of(7), Some(3));
        assert_eq!(selected.seq_of(6), None);
    }

    #[test]
    fn keywords_are_learned_once_and_system_flags_never() {
        let mut selected = view(&[1]);
        let flags = ["\\Seen".to_string(), "$Label1".to_string()];
        assert!(selected.learn_keywords(&flags));
        assert!(!selected.learn_keywords(&["$label1".to_string(), "\\Flagged".to_string()]));
        assert_eq!(selected.flag_names().last().unwrap(), "$Label1");
    }
}
