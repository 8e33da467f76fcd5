//! The selected state: SELECT/EXAMINE, CLOSE, UNSELECT, NOOP/CHECK and IDLE, and the
//! refresh that tells the client what changed elsewhere (new mail, expunges, flags).
//! SELECT and each refresh that finds new mail claim the messages no session has seen
//! yet, which makes them `\Recent` here (decided by the replicated state, so exactly one
//! session on any node gets each).

use imap_types::command::SelectParameter;
use imap_types::core::{Tag, Vec1};
use imap_types::fetch::MessageDataItem;
use imap_types::flag::FlagPerm;
use imap_types::response::{Code, Data};
use imap_types::sequence::SequenceSet;

use super::responses::{
    bad, bye, data, flag_list, flags_of, no, no_unavailable, nz, nz64, ok, runs, sequence_set, untagged_ok,
};
use super::{After, Handled, Selected, Session, sets};
use crate::mail_service::{MessageInfo, ServiceError};

impl Session {
    pub(super) async fn select(
        &mut self,
        tag: &Tag<'_>,
        name: &str,
        read_only: bool,
        parameters: &[SelectParameter],
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        let resync = self.resync_request(tag, parameters)?;
        // RFC 7162 3.2.11: the client learns where the old mailbox's responses end.
        if self.selected.take().is_some() && self.qresync {
            out.extend(untagged_ok(Code::Closed, "Previous mailbox closed"));
        }
        let state = match self.service.mailbox(&user, name, false).await {
            Ok(state) => state,
            Err(ServiceError::NotFound(_)) => return Err(no(tag, None, "No such mailbox")),
            Err(e) => return Err(no_unavailable(tag, &e)),
        };
        let messages = self.service.messages(&user, name, None, false).await.map_err(|e| no_unavailable(tag, &e))?;
        let uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        // Two reads: a message may have arrived between them.
        let uid_next = state.uid_next.max(uids.last().map_or(1, |&u| u + 1));
        let recent = if read_only {
            // EXAMINE changes nothing, \Recent included (RFC 3501 6.3.2).
            std::iter::once(state.first_recent_uid..u32::MAX).collect()
        } else if state.first_recent_uid < uid_next {
            let claimed = self.service.claim_recent(&user, name).await.map_err(|e| no_unavailable(tag, &e))?;
            std::iter::once(claimed).collect()
        } else {
            Vec::new()
        };
        let highest_modseq = messages.iter().map(|m| m.modseq).max().unwrap_or(0).max(state.highest_modseq);
        let mut selected = Selected {
            name: name.to_string(),
            read_only,
            uid_validity: state.uid_validity,
            uids,
            highest_modseq,
            recent,
            recent_reported: 0,
            keywords: Vec::new(),
        };
        selected.learn_keywords(messages.iter().flat_map(|m| &m.flags));
        selected.recent_reported = selected.recent_count();
        out.extend(data(Data::Flags(flag_list(&selected.flag_names()))));
        out.extend(data(Data::Exists(selected.uids.len() as u32)));
        out.extend(data(Data::Recent(selected.recent_reported)));
        if let Some(first) = messages.iter().position(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen"))) {
            out.extend(untagged_ok(Code::Unseen(nz(first as u32 + 1)), "First unseen"));
        }
        out.extend(permanent_flags(&selected));
        out.extend(untagged_ok(Code::UidNext(nz(uid_next)), "Predicted next UID"));
        out.extend(untagged_ok(Code::UidValidity(nz(state.uid_validity)), "UIDs valid"));
        out.extend(untagged_ok(Code::HighestModSeq(nz64(highest_modseq)), "Highest"));
        if let Some(resync) = resync.filter(|r| r.uid_validity == state.uid_validity) {
            out.extend(resynchronise(&selected, &messages, &resync, uid_next));
        }
        self.selected = Some(selected);
        let code = if read_only { Code::ReadOnly } else { Code::ReadWrite };
        out.extend(ok(tag, Some(code), if read_only { "EXAMINE completed" } else { "SELECT completed" }));
        Ok(After::Continue)
    }

    /// SELECT's parameters: CONDSTORE switches it on, QRESYNC (once enabled) says what
    /// the client has cached.
    fn resync_request(&mut self, tag: &Tag<'_>, parameters: &[SelectParameter]) -> Result<Option<Resync>, Vec<u8>> {
        let mut resync = None;
        for parameter in parameters {
            match parameter {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync { .. } if !self.qresync => {
                    return Err(bad(tag, "QRESYNC parameters need ENABLE QRESYNC first"));
                }
                SelectParameter::QResync { uid_validity, mod_sequence_value, known_uids, .. } => {
                    resync = Some(Resync {
                        uid_validity: uid_validity.get(),
                        since: mod_sequence_value.get(),
                        known: known_uids.clone(),
                    });
                }
            }
        }
        Ok(resync)
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

    /// Tells the client about expunged messages and forgets them: EXPUNGE with sequence
    /// numbers, or, once QRESYNC is enabled, one VANISHED with their UIDs (RFC 7162 3.2.10).
    pub(super) fn report_expunged(&mut self, expunged: &[u32], out: &mut Vec<u8>) {
        let Some(selected) = self.selected.as_mut() else { return };
        let mut known: Vec<u32> = expunged.iter().copied().filter(|&uid| selected.seq_of(uid).is_some()).collect();
        known.sort_unstable();
        known.dedup();
        let numbers = selected.remove(&known);
        if self.qresync {
            if let Some(uids) = sequence_set(&runs(&known)) {
                out.extend(data(Data::Vanished { earlier: false, known_uids: uids }));
            }
        } else {
            for seq in numbers {
                out.extend(data(Data::Expunge(nz(seq))));
            }
        }
    }

    /// Before responses that show these messages' flags: announces keywords the client
    /// has not been told about (RFC 3501 7.2.6), as untagged FLAGS and PERMANENTFLAGS.
    pub(super) fn announce_keywords<'a>(
        &mut self,
        messages: impl IntoIterator<Item = &'a MessageInfo>,
        out: &mut Vec<u8>,
    ) {
        let Some(selected) = self.selected.as_mut() else { return };
        if selected.learn_keywords(messages.into_iter().flat_map(|m| &m.flags)) {
            out.extend(data(Data::Flags(flag_list(&selected.flag_names()))));
            out.extend(permanent_flags(selected));
        }
    }

    /// Brings the selected mailbox up to date: EXPUNGE for messages gone, EXISTS (and
    /// RECENT) for new ones, FETCH FLAGS for messages changed elsewhere. False (with a BYE
    /// in `out`) when the mailbox was deleted, or deleted and created again: the session
    /// must end (RFC 3501 7.1.1: UIDVALIDITY may only change between sessions).
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
        let selected = self.selected.as_ref().expect("checked above");
        let known_max = selected.uids.last().copied().unwrap_or(0);
        let before = selected.highest_modseq;
        let new: Vec<u32> = current.iter().filter(|&&u| u > known_max).copied().collect();
        let changed: Vec<&MessageInfo> = messages.iter().filter(|m| m.modseq > before && m.uid <= known_max).collect();
        let read_only = selected.read_only;
        // New mail is \Recent for the first session to see it: this one, if the claim
        // finds it still unclaimed (a failed claim leaves it to the next session).
        let claim = if new.is_empty() || read_only { None } else { self.service.claim_recent(&user, &name).await.ok() };
        self.announce_keywords(messages.iter().filter(|m| m.modseq > before), out);
        let selected = self.selected.as_mut().expect("checked above");
        selected.recent.extend(claim);
        if !new.is_empty() {
            selected.uids.extend(new);
            out.extend(data(Data::Exists(selected.uids.len() as u32)));
        }
        let recent = selected.recent_count();
        if recent != selected.recent_reported {
            selected.recent_reported = recent;
            out.extend(data(Data::Recent(recent)));
        }
        for message in changed {
            if let Some(seq) = selected.seq_of(message.uid) {
                let mut items = vec![
                    MessageDataItem::Flags(flags_of(&message.flags, selected.is_recent(message.uid))),
                    MessageDataItem::Uid(nz(message.uid)),
                ];
                if self.condstore {
                    items.push(MessageDataItem::ModSeq(nz64(message.modseq)));
                }
                out.extend(data(Data::Fetch { seq: nz(seq), items: Vec1::try_from(items).expect("not empty") }));
            }
        }
        selected.highest_modseq = messages.iter().map(|m| m.modseq).max().unwrap_or(0).max(before);
        true
    }
}

/// What a QRESYNC client has cached of the mailbox (RFC 7162 3.2.5).
struct Resync {
    uid_validity: u32,
    /// The highest modseq the client knows.
    since: u64,
    /// The UIDs it knows (all below UIDNEXT when it does not say).
    known: Option<SequenceSet>,
}

/// QRESYNC's answer to a SELECT: what the client's cache lacks instead of the whole
/// mailbox again: the UIDs gone (VANISHED (EARLIER)) and the messages changed since.
fn resynchronise(selected: &Selected, messages: &[MessageInfo], resync: &Resync, uid_next: u32) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(gone) = sequence_set(&sets::vanished(resync.known.as_ref(), &selected.uids, uid_next)) {
        out.extend(data(Data::Vanished { earlier: true, known_uids: gone }));
    }
    for (position, message) in messages.iter().enumerate().filter(|(_, m)| m.modseq > resync.since) {
        let items = vec![
            MessageDataItem::Uid(nz(message.uid)),
            MessageDataItem::Flags(flags_of(&message.flags, selected.is_recent(message.uid))),
            MessageDataItem::ModSeq(nz64(message.modseq)),
        ];
        out.extend(data(Data::Fetch {
            seq: nz(position as u32 + 1),
            items: Vec1::try_from(items).expect("not empty"),
        }));
    }
    out
}

/// PERMANENTFLAGS: every known flag and `\*` (new keywords may be made), or none when
/// the mailbox is read-only.
fn permanent_flags(selected: &Selected) -> Vec<u8> {
    let flags: Vec<FlagPerm<'static>> = if selected.read_only {
        Vec::new()
    } else {
        flag_list(&selected.flag_names()).into_iter().map(FlagPerm::Flag).chain([FlagPerm::Asterisk]).collect()
    };
    untagged_ok(Code::PermanentFlags(flags), "Flags permitted")
}
