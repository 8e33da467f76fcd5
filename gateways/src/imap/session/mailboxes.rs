//! The mailbox hierarchy: CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB,
//! STATUS and NAMESPACE. Names are full paths with "/" between levels.

use std::collections::BTreeMap;

use imap_types::core::{Atom, QuotedChar, Tag};
use imap_types::flag::FlagNameAttribute;
use imap_types::response::Data;
use imap_types::status::{StatusDataItem, StatusDataItemName};

use super::responses::{bad, data, mailbox_of, no, no_unavailable, nz, ok, other_code};
use super::{After, Handled, Session, sets};
use crate::imap::extended::ListOptions;
use crate::mail_service::{MailboxState, ServiceError};

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

    /// LIST (with LIST-EXTENDED `options`, if given), or LSUB (`subscribed_only`).
    pub(super) async fn list(
        &mut self,
        tag: &Tag<'_>,
        reference: &str,
        pattern: &[u8],
        subscribed_only: bool,
        options: Option<ListOptions>,
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        let pattern = String::from_utf8_lossy(pattern).into_owned();
        let options = options.unwrap_or_default();
        if pattern.is_empty() && options.more_patterns.is_empty() {
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
        let mailboxes = self.service.mailboxes(&user).await.map_err(|e| no_unavailable(tag, &e))?;
        let names: Vec<(&str, bool)> = mailboxes.iter().map(|m| (m.name.as_str(), m.subscribed)).collect();
        let mut entries: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for pattern in std::iter::once(&pattern).chain(&options.more_patterns) {
            let full = format!("{reference}{pattern}");
            let lsub = subscribed_only || options.subscribed;
            for (name, attributes) in listed(&names, &full, lsub) {
                entries.entry(name).or_insert(attributes);
            }
        }
        for (name, mut attributes) in entries {
            let state = mailboxes.iter().find(|m| m.name == name);
            let special_use = state.and_then(|m| m.special_use.as_deref()).and_then(|a| a.strip_prefix('\\'));
            if options.special_use && special_use.is_none() {
                continue;
            }
            let subscribed = state.is_some_and(|m| m.subscribed);
            // LIST (SUBSCRIBED) names the stand-in parents of subscribed children by
            // CHILDINFO with RECURSIVEMATCH, and leaves them out without it (RFC 5258 3).
            let stand_in = options.subscribed && !subscribed;
            if stand_in && !options.recursive_match {
                continue;
            }
            if options.subscribed {
                attributes.retain(|a| *a != "Noselect");
            }
            let Some(mailbox) = mailbox_of(&name) else { continue };
            let mut items: Vec<FlagNameAttribute<'static>> =
                attributes.into_iter().map(|a| FlagNameAttribute::from(Atom::unvalidated(a))).collect();
            if options.return_subscribed && subscribed {
                items.push(FlagNameAttribute::from(Atom::unvalidated("Subscribed")));
            }
            // RFC 6154: what the mailbox is for, on every LIST.
            if let Some(attribute) = special_use {
                items.push(FlagNameAttribute::from(Atom::unvalidated(attribute.to_string())));
            }
            let delimiter = Some(QuotedChar::unvalidated('/'));
            let mut line = data(if subscribed_only {
                Data::Lsub { items, delimiter, mailbox: mailbox.clone() }
            } else {
                Data::List { items, delimiter, mailbox: mailbox.clone() }
            });
            if stand_in {
                line.truncate(line.len() - 2);
                line.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n");
            }
            out.extend(line);
            // LIST-STATUS (RFC 5819): the mailbox's STATUS right after it.
            if let (Some(items), Some(state)) = (&options.status, state) {
                out.extend(data(Data::Status { mailbox, items: status_items(state, items).into() }));
            }
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
        let mailbox = mailbox_of(name).ok_or_else(|| bad(tag, "Bad mailbox name"))?;
        out.extend(data(Data::Status { mailbox, items: values(&state, items).into() }));
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

/// The STATUS data of a mailbox for the items asked for.
fn values(state: &MailboxState, items: &[StatusDataItemName]) -> Vec<StatusDataItem> {
    items
        .iter()
        .map(|item| match item {
            StatusDataItemName::Messages => StatusDataItem::Messages(state.messages),
            StatusDataItemName::Recent => StatusDataItem::Recent(state.recent),
            StatusDataItemName::UidNext => StatusDataItem::UidNext(nz(state.uid_next)),
            StatusDataItemName::UidValidity => StatusDataItem::UidValidity(nz(state.uid_validity)),
            StatusDataItemName::Unseen => StatusDataItem::Unseen(state.unseen),
            StatusDataItemName::HighestModSeq => StatusDataItem::HighestModSeq(state.highest_modseq),
            StatusDataItemName::Deleted => StatusDataItem::Deleted(state.deleted),
            StatusDataItemName::DeletedStorage => StatusDataItem::DeletedStorage(state.deleted_bytes.div_ceil(1024)),
        })
        .collect()
}

/// LIST-STATUS's items, given as text (`MESSAGES UNSEEN`); unknown ones are left out.
fn status_items(state: &MailboxState, names: &str) -> Vec<StatusDataItem> {
    let names: Vec<StatusDataItemName> = names
        .split_whitespace()
        .filter_map(|name| match name.to_ascii_uppercase().as_str() {
            "MESSAGES" => Some(StatusDataItemName::Messages),
            "RECENT" => Some(StatusDataItemName::Recent),
            "UIDNEXT" => Some(StatusDataItemName::UidNext),
            "UIDVALIDITY" => Some(StatusDataItemName::UidValidity),
            "UNSEEN" => Some(StatusDataItemName::Unseen),
            "HIGHESTMODSEQ" => Some(StatusDataItemName::HighestModSeq),
            "DELETED" => Some(StatusDataItemName::Deleted),
            "DELETED-STORAGE" => Some(StatusDataItemName::DeletedStorage),
            _ => None,
        })
        .collect();
    values(state, &names)
}

/// What LIST (or LSUB: `subscribed_only`) answers for `pattern` over a user's mailboxes
/// `(name, subscribed)`: each name with its attributes, in name order. Every mailbox says
/// whether it has children (RFC 3348). LSUB lists subscribed mailboxes; one below the
/// pattern's level (`%`) is stood in for by its ancestor at that level, which, unless
/// subscribed itself, is flagged `\Noselect` (RFC 3501 6.3.9).
fn listed(mailboxes: &[(&str, bool)], pattern: &str, subscribed_only: bool) -> BTreeMap<String, Vec<&'static str>> {
    let has_children = |name: &str| mailboxes.iter().any(|(other, _)| other.starts_with(&format!("{name}/")));
    let children = |name: &str| if has_children(name) { "HasChildren" } else { "HasNoChildren" };
    let mut listed: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for &(name, subscribed) in mailboxes {
        if subscribed_only && !subscribed {
            continue;
        }
        if sets::matches(pattern, name) {
            listed.insert(name.to_string(), vec![children(name)]);
        } else if subscribed_only {
            let mut ancestors = name.match_indices('/').map(|(at, _)| &name[..at]);
            if let Some(stand_in) = ancestors.rfind(|a| sets::matches(pattern, a)) {
                let subscribed = mailboxes.iter().any(|&(other, s)| other == stand_in && s);
                listed.entry(stand_in.to_string()).or_insert_with(|| {
                    if subscribed { vec![children(stand_in)] } else { vec!["Noselect", children(stand_in)] }
                });
            }
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_lsub_answers() {
        let mailboxes = [("INBOX", true), ("Projects", false), ("Projects/Budget", true), ("Projects/Old", false)];
        // (pattern, LSUB?, the answer: names with their attributes)
        type Case<'a> = (&'a str, bool, &'a [(&'a str, &'a [&'a str])]);
        let cases: [Case<'_>; 5] = [
            (
                "*",
                false,
                &[
                    ("INBOX", &["HasNoChildren"]),
                    ("Projects", &["HasChildren"]),
                    ("Projects/Budget", &["HasNoChildren"]),
                    ("Projects/Old", &["HasNoChildren"]),
                ],
            ),
            ("%", false, &[("INBOX", &["HasNoChildren"]), ("Projects", &["HasChildren"])]),
            // The subscribed child's unsubscribed parent stands in for it, \Noselect.
            ("%", true, &[("INBOX", &["HasNoChildren"]), ("Projects", &["Noselect", "HasChildren"])]),
            ("*", true, &[("INBOX", &["HasNoChildren"]), ("Projects/Budget", &["HasNoChildren"])]),
            ("Projects/%", true, &[("Projects/Budget", &["HasNoChildren"])]),
        ];
        for (pattern, lsub, expected) in cases {
            let got = listed(&mailboxes, pattern, lsub);
            let expected: BTreeMap<String, Vec<&str>> =
                expected.iter().map(|(name, attributes)| (name.to_string(), attributes.to_vec())).collect();
            assert_eq!(got, expected, "{} {pattern}", if lsub { "LSUB" } else { "LIST" });
        }
    }
}
