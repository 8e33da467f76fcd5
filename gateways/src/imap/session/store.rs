//! STORE: add, remove or replace flags, `.SILENT` or answered with the new flags, with
//! CONDSTORE's UNCHANGEDSINCE (messages changed since are left alone and named in
//! `[MODIFIED]`).

use imap_types::core::{Tag, Vec1};
use imap_types::fetch::MessageDataItem;
use imap_types::flag::StoreType;
use imap_types::response::{Code, Data};
use imap_types::sequence::SequenceSet;

use super::responses::{data, flags_of, no_unavailable, nz, nz64, ok};
use super::{After, Handled, Session, resolve_set};
use crate::mail_service::FlagChange;

/// What a STORE command asks for, beside the messages it names.
pub(super) struct StoreRequest {
    pub kind: StoreType,
    /// `FLAGS.SILENT`: no untagged FETCH with the new flags.
    pub silent: bool,
    pub flags: Vec<String>,
    /// `UID STORE`: the set holds UIDs, and responses carry them.
    pub by_uid: bool,
    pub unchanged_since: Option<u64>,
}

impl Session {
    pub(super) async fn store(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        request: StoreRequest,
        out: &mut Vec<u8>,
    ) -> Handled {
        let StoreRequest { kind, silent, flags, by_uid, unchanged_since } = request;
        let user = self.user(tag)?;
        let selected = self.writable(tag)?;
        let targets = resolve_set(tag, selected, set, by_uid)?;
        let name = selected.name.clone();
        let uids: Vec<u32> = targets.iter().map(|&(_, uid)| uid).collect();
        let change = match kind {
            StoreType::Add => FlagChange::Add,
            StoreType::Remove => FlagChange::Remove,
            StoreType::Replace => FlagChange::Replace,
        };
        let stored = self
            .service
            .store_flags(&user, &name, &uids, change, &flags, unchanged_since)
            .await
            .map_err(|e| no_unavailable(tag, &e))?;
        let condstore = self.condstore || unchanged_since.is_some();
        if !silent {
            self.announce_keywords(&stored.messages, out);
        }
        let selected = self.selected(tag)?;
        for message in &stored.messages {
            let Some(seq) = selected.seq_of(message.uid) else { continue };
            if silent && !condstore {
                continue;
            }
            let mut items = Vec::new();
            if !silent {
                items.push(MessageDataItem::Flags(flags_of(&message.flags, selected.is_recent(message.uid))));
            }
            if by_uid {
                items.push(MessageDataItem::Uid(nz(message.uid)));
            }
            if condstore {
                items.push(MessageDataItem::ModSeq(nz64(message.modseq)));
            }
            if let Ok(items) = Vec1::try_from(items) {
                out.extend(data(Data::Fetch { seq: nz(seq), items }));
            }
        }
        // highest_modseq stays: only a refresh may advance it, or changes made by other
        // sessions in between would never be reported.
        match SequenceSet::try_from(stored.modified.iter().map(|&u| nz(u)).collect::<Vec<_>>()) {
            Ok(modified) => {
                out.extend(ok(tag, Some(Code::Modified(modified)), "Conditional STORE failed for some messages"))
            }
            Err(_) => out.extend(ok(tag, None, "STORE completed")),
        }
        Ok(After::Continue)
    }
}
