//! APPEND: a message the client uploads into one of its mailboxes (Sent, Drafts, ...),
//! answered with UIDPLUS's APPENDUID.

use imap_types::core::Tag;
use imap_types::datetime::DateTime;
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::flag::Flag;
use imap_types::response::Code;

use super::responses::{no, no_unavailable, nz, ok};
use super::{After, Handled, Session};
use crate::mail_service::{NewMessage, ServiceError};

impl Session {
    pub(super) async fn append(
        &mut self,
        tag: &Tag<'_>,
        name: &str,
        flags: &[Flag<'_>],
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'_>,
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        let raw = match message {
            LiteralOrLiteral8::Literal(literal) => literal.data().to_vec(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.to_vec(),
        };
        let message = NewMessage {
            user_id: user,
            mailbox: name.to_string(),
            raw,
            kind: "email".into(),
            client_ref: "imap-append".into(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            internal_date_ms: date.map(|d| d.as_ref().timestamp_millis().max(0) as u64),
            existing_mailbox: true,
            ..NewMessage::default()
        };
        match self.service.deliver(message).await {
            Ok(stored) => {
                let code = Code::AppendUid { uid_validity: nz(stored.uid_validity), uid: nz(stored.uid) };
                if self.selected.as_ref().is_some_and(|s| s.name == name) && !self.refresh(out).await {
                    return Ok(After::Close);
                }
                out.extend(ok(tag, Some(code), "Appended"));
            }
            Err(ServiceError::NotFound(_)) => out.extend(no(tag, Some(Code::TryCreate), "No such mailbox")),
            Err(ServiceError::OverQuota(e)) => out.extend(no(tag, Some(Code::OverQuota), &e)),
            Err(e) => out.extend(no_unavailable(tag, &e)),
        }
        Ok(After::Continue)
    }
}
