//! The selected state: SELECT/EXAMINE, CLOSE, UNSELECT, NOOP/CHECK and IDLE, and the
//! refresh that tells the client what changed elsewhere (new mail, expunges, flags).

use imap_types::core::{Tag, Vec1};
use imap_types::fetch::MessageDataItem;
use imap_types::flag::FlagPerm;
use imap_types::response::{Code, Data};

use super::responses::{SYSTEM_FLAGS, bye, data, flags_of, no, no_unavailable, nz, nz64, ok, untagged_ok};
use super::{After, Handled, Selected, Session};
use crate::mail_service::ServiceError;

impl Session {
    pub(super) async fn select(&mut self, tag: &Tag<'_>, name: &str, read_only: bool, out: &mut Vec<u8>) -> Handled {
        let user = self.user(tag)?;
        self.selected = None;
        let state = match self.service.mailbox(&user, name, false).await {
            Ok(state) => state,
            Err(ServiceError::NotFound(_)) => return Err(no(tag, None, "No such mailbox")),
            Err(e) => return Err(no_unavailable(tag, &e)),
        };
        let messages = self.service.messages(&user, name, None, false).await.map_err(|e| no_unavailable(tag, &e))?;
        let uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        out.extend(data(Data::Flags(SYSTEM_FLAGS.to_vec())));
        out.extend(data(Data::Exists(uids.len() as u32)));
        out.extend(data(Data::Recent(0)));
        if let Some(first) = messages.iter().position(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen"))) {
            out.extend(untagged_ok(Code::Unseen(nz(first as u32 + 1)), "First unseen"));
        }
        let mut permanent: Vec<FlagPerm<'static>> = SYSTEM_FLAGS.iter().cloned().map(FlagPerm::Flag).collect();
        permanent.push(FlagPerm::Asterisk);
        out.extend(untagged_ok(
            Code::PermanentFlags(if read_only { Vec::new() } else { permanent }),
            "Flags permitted",
        ));
        // Two reads: a message may have arrived between them.
        let uid_next = state.uid_next.max(uids.last().map_or(1, |&u| u + 1));
        out.extend(untagged_ok(Code::UidNext(nz(uid_next)), "Predicted next UID"));
        out.extend(untagged_ok(Code::UidValidity(nz(state.uid_validity)), "UIDs valid"));
        let highest_modseq = messages.iter().map(|m| m.modseq).max().unwrap_or(0).max(state.highest_modseq);
        out.extend(untagged_ok(Code::HighestModSeq(nz64(highest_modseq)), "Highest"));
        self.selected = Some(Selected {
            name: name.to_string(),
            read_only,
            uid_validity: state.uid_validity,
            uids,
            highest_modseq,
        });
        let code = if read_only { Code::ReadOnly } else { Code::ReadWrite };
        out.extend(ok(tag, Some(code), if read_only { "EXAMINE completed" } else { "SELECT completed" }));
        Ok(After::Continue)
    }

    pub(super) fn unselect(&mut self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        self.selected(tag)?;
        self.selected = None;
        out.extend(ok(tag, None, "Unselected"));
        Ok(After::Continue)
    }

    /// CLOSE: expunges silently (unless EXAMINEd) and leaves the selected state.
    pub(super) async fn close(&mut self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        let selected = self.selected(tag)?;
        if !selected.read_only {
            let (user, name) = (self.user(tag)?, selected.name.clone());
            self.service.expunge(&user, &name, None).await.map_err(|e| no_unavailable(tag, &e))?;
        }
        self.selected = None;
        out.extend(ok(tag, None, "Closed"));
        Ok(After::Continue)
    }

    pub(super) async fn noop(&mut self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        if !self.refresh(out).await {
            return Ok(After::Close);
        }
        out.extend(ok(tag, None, "Done"));
        Ok(After::Continue)
    }

    pub(super) fn idle(&self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        self.selected(tag)?;
        out.extend_from_slice(b"+ idling\r\n");
        Ok(After::Idle)
    }

    /// One IDLE poll: a cheap look at this node's replica of the selected mailbox (the
    /// leader's, if this node holds no replica of it), and a refresh when anything
    /// changed. False when the mailbox is gone: the session must end.
    pub async fn idle_tick(&mut self, out: &mut Vec<u8>) -> bool {
        let (Some(user), Some(selected)) = (self.user.clone(), self.selected.as_ref()) else { return true };
        let state = match self.service.mailbox(&user, &selected.name, true).await {
            Err(ServiceError::NotFound(_)) => self.service.mailbox(&user, &selected.name, false).await,
            local => local,
        };
        let state = match state {
            Ok(state) => state,
            Err(ServiceError::NotFound(_)) => return self.refresh(out).await,
            Err(_) => return true,
        };
        let known_last = selected.uids.last().copied().unwrap_or(0);
        let changed = state.uid_validity != selected.uid_validity
            || state.highest_modseq > selected.highest_modseq
            || state.uid_next.saturating_sub(1) > known_last
            || state.messages as usize != selected.uids.len();
        !changed || self.refresh(out).await
    }

    /// Tells the client about expunged messages (highest sequence number first, so the
    /// numbers stay right) and forgets them.
    pub(super) fn report_expunged(&mut self, expunged: &[u32], out: &mut Vec<u8>) {
        let Some(selected) = self.selected.as_mut() else { return };
        let mut positions: Vec<usize> =
            expunged.iter().filter_map(|uid| selected.uids.iter().position(|u| u == uid)).collect();
        positions.sort_unstable_by(|a, b| b.cmp(a));
        for position in positions {
            selected.uids.remove(position);
            out.extend(data(Data::Expunge(nz(position as u32 + 1))));
        }
    }

    /// Brings the selected mailbox up to date: EXPUNGE for messages gone, EXISTS for new
    /// ones, FETCH FLAGS for messages changed elsewhere. False (with a BYE in `out`) when
    /// the mailbox was deleted, or deleted and created again: the session must end
    /// (RFC 3501 7.1.1: UIDVALIDITY may only change between sessions).
    pub async fn refresh(&mut self, out: &mut Vec<u8>) -> bool {
        let (Some(user), Some(selected)) = (self.user.clone(), self.selected.as_ref()) else { return true };
        let name = selected.name.clone();
        match self.service.mailbox(&user, &name, false).await {
            Ok(state) if state.uid_validity == selected.uid_validity => {}
            Ok(_) | Err(ServiceError::NotFound(_)) => {
                out.extend(bye("The selected mailbox was deleted or replaced"));
                return false;
            }
            Err(_) => return true,
        }
        let Ok(messages) = self.service.messages(&user, &name, None, false).await else { return true };
        let current: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        let gone: Vec<u32> = selected.uids.iter().filter(|u| current.binary_search(u).is_err()).copied().collect();
        self.report_expunged(&gone, out);
        let selected = self.selected.as_mut().expect("checked above");
        let known_max = selected.uids.last().copied().unwrap_or(0);
        let before = selected.highest_modseq;
        let new: Vec<u32> = current.iter().filter(|&&u| u > known_max).copied().collect();
        if !new.is_empty() {
            selected.uids.extend(new);
            out.extend(data(Data::Exists(selected.uids.len() as u32)));
        }
        for message in messages.iter().filter(|m| m.modseq > before && m.uid <= known_max) {
            if let Some(position) = selected.uids.iter().position(|&u| u == message.uid) {
                let mut items =
                    vec![MessageDataItem::Flags(flags_of(&message.flags)), MessageDataItem::Uid(nz(message.uid))];
                if self.condstore {
                    items.push(MessageDataItem::ModSeq(nz64(message.modseq)));
                }
                out.extend(data(Data::Fetch {
                    seq: nz(position as u32 + 1),
                    items: Vec1::try_from(items).expect("not empty"),
                }));
            }
        }
        selected.highest_modseq = messages.iter().map(|m| m.modseq).max().unwrap_or(0).max(before);
        true
    }
}
