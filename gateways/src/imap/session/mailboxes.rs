//! The mailbox hierarchy: CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB,
//! STATUS and NAMESPACE. Names are full paths with "/" between levels.

use std::collections::BTreeMap;

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
        let names: Vec<(&str, bool)> = mailboxes.iter().map(|m| (m.name.as_str(), m.subscribed)).collect();
        for (name, attributes) in listed(&names, &full, subscribed_only) {
            let Some(mailbox) = mailbox_of(&name) else { continue };
            let mut items: Vec<FlagNameAttribute<'static>> =
                attributes.into_iter().map(|a| FlagNameAttribute::from(Atom::unvalidated(a))).collect();
            // RFC 6154: what the mailbox is for, on every LIST.
            let special_use = mailboxes.iter().find(|m| m.name == name).and_then(|m| m.special_use.as_deref());
            if let Some(attribute) = special_use.and_then(|a| a.strip_prefix('\\')) {
                items.push(FlagNameAttribute::from(Atom::unvalidated(attribute.to_string())));
            }
            let delimiter = Some(QuotedChar::unvalidated('/'));
            out.extend(data(if subscribed_only {
                Data::Lsub { items, delimiter, mailbox }
            } else {
                Data::List { items, delimiter, mailbox }
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
                StatusDataItemName::Recent => Some(StatusDataItem::Recent(state.recent)),
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
