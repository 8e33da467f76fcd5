//! The mailbox hierarchy: CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB,
//! STATUS and NAMESPACE. Names are full paths with "/" between levels.

use imap_types::core::{Atom, QuotedChar, Tag};
use imap_types::flag::FlagNameAttribute;
use imap_types::response::Data;
use imap_types::status::{StatusDataItem, StatusDataItemName};

use super::responses::{bad, data, mailbox_of, no, no_unavailable, nz, ok, other_code};
use super::{After, Handled, Session, sets};
use crate::mail_service::ServiceError;

impl Session {
    pub(super) async fn create(&mut self, tag: &Tag<'_>, name: &str, out: &mut Vec<u8>) -> Handled {
        let user = self.user(tag)?;
        // RFC 3501 6.3.3: a trailing delimiter only says the client means to add children.
        let name = name.trim_end_matches('/');
        match self.service.create_mailbox(&user, name).await {
            Ok(()) => out.extend(ok(tag, None, "Created")),
            Err(ServiceError::Conflict(_)) => out.extend(no(tag, Some(other_code("ALREADYEXISTS")), "Mailbox exists")),
            Err(ServiceError::Invalid(e)) => out.extend(no(tag, None, &e)),
            Err(e) => out.extend(no_unavailable(tag, &e)),
        }
        Ok(After::Continue)
    }

    pub(super) async fn delete(&mut self, tag: &Tag<'_>, name: &str, out: &mut Vec<u8>) -> Handled {
        let user = self.user(tag)?;
        if self.selected.as_ref().is_some_and(|s| s.name == name) {
            self.selected = None;
        }
        match self.service.delete_mailbox(&user, name).await {
            Ok(()) => out.extend(ok(tag, None, "Deleted")),
            Err(ServiceError::NotFound(e) | ServiceError::Invalid(e)) => out.extend(no(tag, None, &e)),
            Err(e) => out.extend(no_unavailable(tag, &e)),
        }
        Ok(After::Continue)
    }

    pub(super) async fn rename(&mut self, tag: &Tag<'_>, from: &str, to: &str, out: &mut Vec<u8>) -> Handled {
        let user = self.user(tag)?;
        match self.service.rename_mailbox(&user, from, to).await {
            Ok(()) => out.extend(ok(tag, None, "Renamed")),
            Err(ServiceError::NotFound(e) | ServiceError::Invalid(e) | ServiceError::Conflict(e)) => {
                out.extend(no(tag, None, &e))
            }
            Err(e) => out.extend(no_unavailable(tag, &e)),
        }
        Ok(After::Continue)
    }

    pub(super) async fn set_subscribed(
        &mut self,
        tag: &Tag<'_>,
        name: &str,
        subscribed: bool,
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        match self.service.subscribe(&user, name, subscribed).await {
            Ok(()) => out.extend(ok(tag, None, "Done")),
            Err(ServiceError::NotFound(e)) => out.extend(no(tag, None, &e)),
            Err(e) => out.extend(no_unavailable(tag, &e)),
        }
        Ok(After::Continue)
    }

    /// LIST, or LSUB (`subscribed_only`).
    pub(super) async fn list(
        &mut self,
        tag: &Tag<'_>,
        reference: &str,
        pattern: &[u8],
        subscribed_only: bool,
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        let pattern = String::from_utf8_lossy(pattern).into_owned();
        if pattern.is_empty() {
            // The hierarchy delimiter and root.
            out.extend_from_slice(
                format!("* {} (\\Noselect) \"/\" \"\"\r\n", if subscribed_only { "LSUB" } else { "LIST" }).as_bytes(),
            );
            out.extend(ok(tag, None, "Listed"));
            return Ok(After::Continue);
        }
        let reference = if reference.is_empty() || reference.ends_with('/') {
            reference.to_string()
        } else {
            format!("{reference}/")
        };
        let full = format!("{reference}{pattern}");
        let mailboxes = self.service.mailboxes(&user).await.map_err(|e| no_unavailable(tag, &e))?;
        for mailbox in mailboxes.iter().filter(|m| sets::matches(&full, &m.name) && (!subscribed_only || m.subscribed))
        {
            let Some(name) = mailbox_of(&mailbox.name) else { continue };
            let has_children = mailboxes.iter().any(|m| m.name.starts_with(&format!("{}/", mailbox.name)));
            let attribute = if has_children { "HasChildren" } else { "HasNoChildren" };
            let items = vec![FlagNameAttribute::from(Atom::unvalidated(attribute))];
            let delimiter = Some(QuotedChar::unvalidated('/'));
            out.extend(data(if subscribed_only {
                Data::Lsub { items, delimiter, mailbox: name }
            } else {
                Data::List { items, delimiter, mailbox: name }
            }));
        }
        out.extend(ok(tag, None, "Listed"));
        Ok(After::Continue)
    }

    pub(super) async fn status(
        &mut self,
        tag: &Tag<'_>,
        name: &str,
        items: &[StatusDataItemName],
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        let mailboxes = self.service.mailboxes(&user).await.map_err(|e| no_unavailable(tag, &e))?;
        let Some(state) = mailboxes.into_iter().find(|m| m.name == name) else {
            return Err(no(tag, None, "No such mailbox"));
        };
        let values: Vec<StatusDataItem> = items
            .iter()
            .filter_map(|item| match item {
                StatusDataItemName::Messages => Some(StatusDataItem::Messages(state.messages)),
                StatusDataItemName::Recent => Some(StatusDataItem::Recent(0)),
                StatusDataItemName::UidNext => Some(StatusDataItem::UidNext(nz(state.uid_next))),
                StatusDataItemName::UidValidity => Some(StatusDataItem::UidValidity(nz(state.uid_validity))),
                StatusDataItemName::Unseen => Some(StatusDataItem::Unseen(state.unseen)),
                StatusDataItemName::HighestModSeq => Some(StatusDataItem::HighestModSeq(state.highest_modseq)),
                _ => None,
            })
            .collect();
        let mailbox = mailbox_of(name).ok_or_else(|| bad(tag, "Bad mailbox name"))?;
        out.extend(data(Data::Status { mailbox, items: values.into() }));
        out.extend(ok(tag, None, "STATUS completed"));
        Ok(After::Continue)
    }

    pub(super) fn namespace(&self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        self.user(tag)?;
        out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
        out.extend(ok(tag, None, "Namespaces listed"));
        Ok(After::Continue)
    }
}
