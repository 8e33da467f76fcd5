//! Pure: what the MX makes of a message's SPF, DKIM, ARC and DMARC results — the
//! `Authentication-Results` header (RFC 8601) stored with it, and whether it goes to
//! INBOX, to the Junk folder or is refused — plus the removal of forged copies of our
//! own header. The DNS work that produces the results is in the parent module; here
//! everything is plain data, so every rule has a table test.

use std::borrow::Cow;
use std::net::IpAddr;

use super::settings::{MailAuthSettings, PolicyOverride};

/// The result of one check, in RFC 8601's words (section 2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// SPF `~all`: probably not authorised.
    SoftFail,
    /// SPF `?all`, or a DKIM signature that could not be checked (malformed).
    Neutral,
    /// Nothing to check: no SPF record, no signature, no DMARC record.
    None,
    /// A DNS failure or a timeout: another try later may decide.
    TempError,
    /// A broken record or signature: no retry will help.
    PermError,
}

impl Outcome {
    /// The keyword in the header.
    pub fn keyword(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::None => "none",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        }
    }
}

/// SPF for one identity: the HELO name, or the MAIL FROM address (for a bounce, with its
/// empty reverse path, `postmaster@` the HELO name, RFC 7208 2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpfCheck {
    pub outcome: Outcome,
    /// The HELO name, or the MAIL FROM address checked.
    pub identity: String,
    /// The domain whose SPF record was asked.
    pub domain: String,
}

/// One `DKIM-Signature` (or a malformed one) and what its check came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimCheck {
    pub outcome: Outcome,
    /// `d=`: the signing domain, empty when the signature could not be parsed.
    pub domain: String,
    /// `s=`: the selector.
    pub selector: String,
    /// The first characters of `b=` (RFC 6008 `header.b`): tells two signatures apart.
    pub signature_start: String,
    /// Why it did not pass, for the header's `reason=`.
    pub reason: Option<String>,
}

/// A domain's DMARC policy (`p=`, or `sp=`/`np=` for its subdomains; one level lower
/// under `t=y`), as the DMARC check found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

/// DMARC for the `From:` domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcCheck {
    /// `None` when the domain publishes no DMARC record (or `From:` names several domains,
    /// which DMARC leaves alone).
    pub outcome: Outcome,
    /// The `From:` domain (RFC5322.From), empty without one.
    pub from_domain: String,
    pub policy: DmarcPolicy,
}

/// Everything checked for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checks {
    pub client_ip: IpAddr,
    /// `None` when the HELO name is not a domain (an address literal, a bare word).
    pub spf_helo: Option<SpfCheck>,
    pub spf_mail_from: SpfCheck,
    /// The MAIL FROM domain (lower case); `None` for a bounce (empty reverse path).
    pub mail_from_domain: Option<String>,
    /// The domains of every address in the `From:` header(s), lower case, as listed.
    pub from_domains: Vec<String>,
    pub dkim: Vec<DkimCheck>,
    pub arc: Outcome,
    pub dmarc: DmarcCheck,
}

impl Checks {
    /// The domains this message claims to come from: the MAIL FROM domain and every
    /// `From:` domain, each once. The MX refuses a claim of a local domain that is not
    /// authenticated (see [`decide`]).
    pub fn claimed_domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = Vec::new();
        for domain in self.mail_from_domain.iter().chain(&self.from_domains) {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if !domain.is_empty() && !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        domains
    }

    /// Whether the message proves it comes from `domain`, as DMARC would accept it: a
    /// DMARC pass for it, an SPF pass of a MAIL FROM in it, or a DKIM pass by it (the
    /// domain itself or a subdomain of it, never a parent: `go.ke` does not speak for
    /// `ministry.go.ke`).
    pub fn authenticates(&self, domain: &str) -> bool {
        let aligned = |other: &str| {
            let other = other.trim_end_matches('.');
            other.eq_ignore_ascii_case(domain)
                || (other.len() > domain.len()
                    && other.as_bytes()[other.len() - domain.len() - 1] == b'.'
                    && other[other.len() - domain.len()..].eq_ignore_ascii_case(domain))
        };
        (self.dmarc.outcome == Outcome::Pass && aligned(&self.dmarc.from_domain) && !self.dmarc.from_domain.is_empty())
            || (self.spf_mail_from.outcome == Outcome::Pass && aligned(&self.spf_mail_from.domain))
            || self.dkim.iter().any(|d| d.outcome == Outcome::Pass && aligned(&d.domain))
    }

    /// Whether a DNS failure may be why something did not pass (then a retry may help).
    fn had_temporary_error(&self) -> bool {
        self.spf_mail_from.outcome == Outcome::TempError
            || self.dmarc.outcome == Outcome::TempError
            || self.dkim.iter().any(|d| d.outcome == Outcome::TempError)
    }
}

/// An SMTP refusal of the message after DATA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    /// The enhanced status code (RFC 3463).
    pub status: &'static str,
    pub text: String,
}

/// What the MX does with the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Into INBOX (the header tells what was found).
    Accept,
    /// Into the recipient's Junk folder (`p=quarantine`).
    Junk,
    /// Refused: not stored at all.
    Reject(Refusal),
}

/// What the MX makes of one message: the header to store it with and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The whole `Authentication-Results:` header field, CRLF included.
    pub header: String,
    pub decision: Decision,
}

/// Where the message goes. `local_claims` are the [`Checks::claimed_domains`] that are
/// local domains of this cluster: mail from outside claiming one of them is refused
/// unless it proves it ([`Checks::authenticates`]) — whatever that domain's DMARC record
/// says, since a spoofed ministry address is the attack to stop. Otherwise the `From:`
/// domain's DMARC policy decides for a message that fails DMARC (`reject` refuses,
/// `quarantine` goes to Junk, `none` only tags), unless the operator set another for
/// that domain; a DNS failure under `p=reject` is a temporary refusal, so the sender
/// retries rather than the message being lost or let through.
pub fn decide(checks: &Checks, local_claims: &[String], settings: &MailAuthSettings) -> Decision {
    if let Some(domain) = local_claims.iter().find(|domain| !checks.authenticates(domain)) {
        return Decision::Reject(if checks.had_temporary_error() {
            Refusal {
                code: 451,
                status: "4.7.1",
                text: format!("Could not verify that this message comes from {domain} (DNS), try again later"),
            }
        } else {
            Refusal {
                code: 550,
                status: "5.7.1",
                text: format!(
                    "{domain} is a local domain: mail from outside must authenticate as it (SPF or DKIM aligned with it)"
                ),
            }
        });
    }
    let dmarc = &checks.dmarc;
    let action = settings.override_for(&dmarc.from_domain).unwrap_or(match dmarc.policy {
        DmarcPolicy::None => PolicyOverride::Tag,
        DmarcPolicy::Quarantine => PolicyOverride::Junk,
        DmarcPolicy::Reject => PolicyOverride::Reject,
    });
    match (dmarc.outcome, action) {
        (Outcome::Fail | Outcome::PermError, PolicyOverride::Reject) => Decision::Reject(Refusal {
            code: 550,
            status: "5.7.1",
            text: format!("Rejected per the DMARC policy of {}", dmarc.from_domain),
        }),
        (Outcome::Fail | Outcome::PermError, PolicyOverride::Junk) => Decision::Junk,
        (Outcome::TempError, PolicyOverride::Reject) => Decision::Reject(Refusal {
            code: 451,
            status: "4.7.1",
            text: format!("Could not verify the DMARC policy of {} (DNS), try again later", dmarc.from_domain),
        }),
        _ => Decision::Accept,
    }
}

/// The `Authentication-Results:` header field (RFC 8601) for `checks`, naming this
/// server `authserv_id`; `decision` adds what was done under DMARC (`dis=`).
pub fn authentication_results(authserv_id: &str, checks: &Checks, decision: &Decision) -> String {
    let mut results: Vec<String> = Vec::new();
    if checks.dkim.is_empty() {
        results.push("dkim=none".into());
    }
    for dkim in &checks.dkim {
        let mut result = format!("dkim={}", dkim.outcome.keyword());
        push_reason(&mut result, dkim.reason.as_deref());
        if !dkim.domain.is_empty() {
            result.push_str(&format!(" header.d={}", pvalue(&dkim.domain)));
            result.push_str(&format!(" header.s={}", pvalue(&dkim.selector)));
        }
        if !dkim.signature_start.is_empty() {
            result.push_str(&format!(" header.b={}", pvalue(&dkim.signature_start)));
        }
        results.push(result);
    }
    let spf = &checks.spf_mail_from;
    let mail_from = if checks.mail_from_domain.is_some() { pvalue(&spf.identity) } else { "<>".into() };
    results.push(format!("spf={} smtp.mailfrom={mail_from}", spf.outcome.keyword()));
    if let Some(helo) = &checks.spf_helo {
        results.push(format!("spf={} smtp.helo={}", helo.outcome.keyword(), pvalue(&helo.identity)));
    }
    results.push(format!("arc={} smtp.remote-ip={}", checks.arc.keyword(), checks.client_ip));
    let dmarc = &checks.dmarc;
    let mut result = format!("dmarc={}", dmarc.outcome.keyword());
    if dmarc.outcome != Outcome::None {
        let policy = match dmarc.policy {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        };
        let disposition = match decision {
            Decision::Accept => "none",
            Decision::Junk => "quarantine",
            Decision::Reject(_) => "reject",
        };
        result.push_str(&format!(" (p={policy} dis={disposition})"));
    }
    if !dmarc.from_domain.is_empty() {
        result.push_str(&format!(" header.from={}", pvalue(&dmarc.from_domain)));
    }
    results.push(result);
    let mut header = format!("Authentication-Results: {authserv_id}");
    for result in results {
        header.push_str(";\r\n\t");
        header.push_str(&result);
    }
    header.push_str("\r\n");
    header
}

fn push_reason(result: &mut String, reason: Option<&str>) {
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        let reason: String = reason.chars().take(80).collect();
        result.push_str(&format!(" reason={}", quoted(&reason)));
    }
}

/// A property value as RFC 8601 allows it: as is when it is a token or an address made
/// of token characters, else a quoted string. Text from the message or the client is
/// printable ASCII only here, so it cannot end or fold the header.
fn pvalue(value: &str) -> String {
    let plain = !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| b.is_ascii_graphic() && !b"()<>,;:\\\"/[]?=".contains(&b));
    if plain { value.to_string() } else { quoted(value) }
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars().take(255) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// The message without the `Authentication-Results` fields that claim to come from
/// `authserv_id`: only this server writes those, so any that arrive are forged (RFC 8601
/// section 5), meant to make a mail client trust a failed check. Other servers' results
/// stay. Works on the header section only; the message is returned as is when there is
/// nothing to remove.
pub fn strip_authentication_results<'a>(message: &'a [u8], authserv_id: &str) -> Cow<'a, [u8]> {
    let mut forged: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    while start < message.len() && !message[start..].starts_with(b"\r\n") && !message[start..].starts_with(b"\n") {
        let end = field_end(message, start);
        if claims_authserv_id(&message[start..end], authserv_id) {
            forged.push(start..end);
        }
        start = end;
    }
    if forged.is_empty() {
        return Cow::Borrowed(message);
    }
    let mut kept = Vec::with_capacity(message.len());
    let mut at = 0;
    for range in forged {
        kept.extend_from_slice(&message[at..range.start]);
        at = range.end;
    }
    kept.extend_from_slice(&message[at..]);
    Cow::Owned(kept)
}

/// Where the header field starting at `start` ends: after the line break of its last
/// line (continuation lines start with a space or a tab).
fn field_end(message: &[u8], start: usize) -> usize {
    let mut end = start;
    loop {
        end = match message[end..].iter().position(|&b| b == b'\n') {
            Some(newline) => end + newline + 1,
            None => return message.len(),
        };
        if !matches!(message.get(end), Some(b' ' | b'\t')) {
            return end;
        }
    }
}

/// Whether `field` is an `Authentication-Results` field whose authserv-id is ours.
fn claims_authserv_id(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else { return false };
    if !field[..colon].trim_ascii().eq_ignore_ascii_case(b"Authentication-Results") {
        return false;
    }
    let value = skip_cfws(&field[colon + 1..]);
    let value = value.strip_prefix(b"\"").unwrap_or(value);
    let id_end = value
        .iter()
        .position(|&b| matches!(b, b';' | b'(' | b'"' | b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(value.len());
    let id = &value[..id_end];
    id.eq_ignore_ascii_case(authserv_id.as_bytes())
        || id.strip_suffix(b".").is_some_and(|id| id.eq_ignore_ascii_case(authserv_id.as_bytes()))
}

/// `text` after leading white space, line breaks and (nested) comments.
fn skip_cfws(mut text: &[u8]) -> &[u8] {
    loop {
        text = text.trim_ascii_start();
        if text.first() != Some(&b'(') {
            return text;
        }
        let mut depth = 0usize;
        let mut escaped = false;
        let mut end = text.len();
        for (i, &b) in text.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text = &text[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spf(outcome: Outcome, domain: &str) -> SpfCheck {
        SpfCheck { outcome, identity: format!("sender@{domain}"), domain: domain.into() }
    }

    fn dkim(outcome: Outcome, domain: &str) -> DkimCheck {
        DkimCheck {
            outcome,
            domain: domain.into(),
            selector: "s1".into(),
            signature_start: "AbC/12".into(),
            reason: (outcome != Outcome::Pass).then(|| "body hash did not verify".into()),
        }
    }

    /// A message from `sender@{mail_from}` with `From: x@{from}` and `dmarc` as found.
    fn checks(mail_from: &str, from: &str, spf_outcome: Outcome, dkims: Vec<DkimCheck>, dmarc: DmarcCheck) -> Checks {
        Checks {
            client_ip: IpAddr::from([192, 0, 2, 7]),
            spf_helo: Some(SpfCheck {
                outcome: Outcome::None,
                identity: "mx.sender.example".into(),
                domain: "mx.sender.example".into(),
            }),
            spf_mail_from: spf(spf_outcome, mail_from),
            mail_from_domain: Some(mail_from.into()),
            from_domains: vec![from.into()],
            dkim: dkims,
            arc: Outcome::None,
            dmarc,
        }
    }

    fn dmarc(outcome: Outcome, from: &str, policy: DmarcPolicy) -> DmarcCheck {
        DmarcCheck { outcome, from_domain: from.into(), policy }
    }

    fn settings(overrides: &[(&str, PolicyOverride)]) -> MailAuthSettings {
        let policy_overrides: BTreeMap<String, PolicyOverride> =
            overrides.iter().map(|(d, o)| (d.to_string(), *o)).collect();
        MailAuthSettings { policy_overrides, ..MailAuthSettings::default() }
    }

    fn code(decision: &Decision) -> String {
        match decision {
            Decision::Accept => "inbox".into(),
            Decision::Junk => "junk".into(),
            Decision::Reject(refusal) => format!("{} {}", refusal.code, refusal.status),
        }
    }

    #[test]
    fn dmarc_policy_decides_for_foreign_domains() {
        use DmarcPolicy::{None as PNone, Quarantine, Reject};
        use Outcome::*;
        // (case, DMARC outcome, published policy, operator's overrides, decision)
        type Case<'a> = (&'a str, Outcome, DmarcPolicy, &'a [(&'a str, PolicyOverride)], &'a str);
        let cases: Vec<Case> = vec![
            ("pass under reject", Pass, Reject, &[], "inbox"),
            ("no record", None, PNone, &[], "inbox"),
            ("fail under none: tag only", Fail, PNone, &[], "inbox"),
            ("fail under quarantine", Fail, Quarantine, &[], "junk"),
            ("fail under reject", Fail, Reject, &[], "550 5.7.1"),
            ("permerror under reject", PermError, Reject, &[], "550 5.7.1"),
            ("DNS failure under reject: try later", TempError, Reject, &[], "451 4.7.1"),
            ("DNS failure under quarantine", TempError, Quarantine, &[], "inbox"),
            ("operator tags a partner", Fail, Reject, &[("sender.example", PolicyOverride::Tag)], "inbox"),
            ("override for a parent", Fail, Reject, &[("example", PolicyOverride::Junk)], "junk"),
            ("operator rejects", Fail, PNone, &[("sender.example", PolicyOverride::Reject)], "550 5.7.1"),
            ("override of a pass", Pass, PNone, &[("sender.example", PolicyOverride::Reject)], "inbox"),
            ("unrelated override", Fail, Reject, &[("other.example", PolicyOverride::Tag)], "550 5.7.1"),
        ];
        for (name, outcome, policy, overrides, expected) in cases {
            let checks = checks(
                "sender.example",
                "sender.example",
                Outcome::Fail,
                vec![],
                dmarc(outcome, "sender.example", policy),
            );
            assert_eq!(code(&decide(&checks, &[], &settings(overrides))), expected, "{name}");
        }
    }

    #[test]
    fn a_local_domain_from_outside_must_authenticate() {
        use Outcome::*;
        let local = "ministry.go.ke";
        let none = || dmarc(None, local, DmarcPolicy::None);
        let cases: Vec<(&str, Checks, &str)> = vec![
            ("spoofed From:, no DMARC record", checks("evil.example", local, Pass, vec![], none()), "550 5.7.1"),
            (
                "spoofed From:, the domain's own p=none does not let it through",
                checks("evil.example", local, Pass, vec![], dmarc(Fail, local, DmarcPolicy::None)),
                "550 5.7.1",
            ),
            ("DKIM by the domain", checks("evil.example", local, Fail, vec![dkim(Pass, local)], none()), "inbox"),
            (
                "DKIM by a subdomain",
                checks("evil.example", local, Fail, vec![dkim(Pass, "mail.ministry.go.ke")], none()),
                "inbox",
            ),
            ("DKIM by a parent", checks("evil.example", local, Fail, vec![dkim(Pass, "go.ke")], none()), "550 5.7.1"),
            (
                "DKIM by a look-alike",
                checks("evil.example", local, Fail, vec![dkim(Pass, "evilministry.go.ke")], none()),
                "550 5.7.1",
            ),
            ("a failed signature", checks("evil.example", local, Fail, vec![dkim(Fail, local)], none()), "550 5.7.1"),
            ("SPF pass of a MAIL FROM in the domain", checks(local, local, Pass, vec![], none()), "inbox"),
            (
                "DMARC pass",
                checks("ministry.go.ke", local, Fail, vec![], dmarc(Pass, local, DmarcPolicy::Reject)),
                "inbox",
            ),
            ("a DNS failure", checks("evil.example", local, Pass, vec![dkim(TempError, local)], none()), "451 4.7.1"),
        ];
        for (name, checks, expected) in cases {
            assert_eq!(code(&decide(&checks, &[local.into()], &settings(&[]))), expected, "{name}");
        }
        // Only the MAIL FROM is local: SPF for it, or a signature by it, proves it.
        let envelope =
            checks(local, "citizen.example", Fail, vec![], dmarc(None, "citizen.example", DmarcPolicy::None));
        assert_eq!(envelope.claimed_domains(), [local, "citizen.example"]);
        assert_eq!(code(&decide(&envelope, &[local.into()], &settings(&[]))), "550 5.7.1");
        let signed = Checks { dkim: vec![dkim(Pass, local)], ..envelope };
        assert_eq!(code(&decide(&signed, &[local.into()], &settings(&[]))), "inbox");
        // The operator's DMARC overrides do not loosen the local-domain rule.
        let spoof = checks("evil.example", local, Pass, vec![], dmarc(Fail, local, DmarcPolicy::None));
        let tag_all = settings(&[(local, PolicyOverride::Tag)]);
        assert_eq!(code(&decide(&spoof, &[local.into()], &tag_all)), "550 5.7.1");
    }

    #[test]
    fn claimed_domains_are_the_envelope_and_header_senders_once() {
        let mut c =
            checks("Sender.Example", "x.example", Outcome::None, vec![], dmarc(Outcome::None, "", DmarcPolicy::None));
        c.from_domains = vec!["x.example".into(), "sender.example".into(), "y.example.".into()];
        assert_eq!(c.claimed_domains(), ["sender.example", "x.example", "y.example"]);
        c.mail_from_domain = None;
        assert_eq!(c.claimed_domains(), ["x.example", "sender.example", "y.example"]);
    }

    #[test]
    fn the_header_lists_every_result_under_our_name() {
        let mut c = checks(
            "sender.example",
            "sender.example",
            Outcome::Pass,
            vec![dkim(Outcome::Pass, "sender.example"), dkim(Outcome::Fail, "list.example")],
            dmarc(Outcome::Pass, "sender.example", DmarcPolicy::Reject),
        );
        assert_eq!(
            authentication_results("mx1.ums.go.ke", &c, &Decision::Accept),
            "Authentication-Results: mx1.ums.go.ke;\r\n\
             \tdkim=pass header.d=sender.example header.s=s1 header.b=\"AbC/12\";\r\n\
             \tdkim=fail reason=\"body hash did not verify\" header.d=list.example header.s=s1 header.b=\"AbC/12\";\r\n\
             \tspf=pass smtp.mailfrom=sender@sender.example;\r\n\
             \tspf=none smtp.helo=mx.sender.example;\r\n\
             \tarc=none smtp.remote-ip=192.0.2.7;\r\n\
             \tdmarc=pass (p=reject dis=none) header.from=sender.example\r\n"
        );
        // A bounce, no signature, no DMARC record, no usable HELO; client text cannot
        // break out of the header.
        c.mail_from_domain = None;
        c.spf_mail_from = SpfCheck { outcome: Outcome::None, identity: "postmaster@x".into(), domain: "x".into() };
        c.spf_helo = None;
        c.dkim = vec![];
        c.dmarc = dmarc(Outcome::Fail, "evil\r\nX-Injected: yes", DmarcPolicy::Quarantine);
        let header = authentication_results("mx1", &c, &Decision::Junk);
        assert!(header.contains("\tdkim=none;\r\n\tspf=none smtp.mailfrom=<>;\r\n\tarc=none"), "{header}");
        assert!(header.ends_with("dmarc=fail (p=quarantine dis=quarantine) header.from=\"evil??X-Injected: yes\"\r\n"));
        assert_eq!(header.matches("\r\n").count(), 5, "one field, folded: {header}");
    }

    #[test]
    fn forged_results_in_our_name_are_removed_and_others_kept() {
        let message = b"Received: from a\r\n\tby b\r\n\
            Authentication-Results: MX1.ums.go.ke; dkim=pass\r\n\
            Authentication-Results: (comment (nested)) mx1.ums.go.ke.;\r\n\tspf=pass\r\n\
            authentication-results:\"mx1.ums.go.ke\"; dmarc=pass\r\n\
            Authentication-Results: mx.google.com; dkim=pass\r\n\
            Authentication-Results: mx1.ums.go.ke.evil.example; dkim=pass\r\n\
            Subject: hi\r\n\
            \r\n\
            Authentication-Results: mx1.ums.go.ke; in the body stays\r\n";
        let stripped = strip_authentication_results(message, "mx1.ums.go.ke");
        assert_eq!(
            String::from_utf8_lossy(&stripped),
            "Received: from a\r\n\tby b\r\n\
             Authentication-Results: mx.google.com; dkim=pass\r\n\
             Authentication-Results: mx1.ums.go.ke.evil.example; dkim=pass\r\n\
             Subject: hi\r\n\
             \r\n\
             Authentication-Results: mx1.ums.go.ke; in the body stays\r\n"
        );
        let clean = b"Subject: x\r\n\r\nbody\r\n";
        assert!(matches!(strip_authentication_results(clean, "mx1"), Cow::Borrowed(_)));
        for odd in [
            &b""[..],
            b"\r\n",
            b"Authentication-Results: mx1",
            b"Authentication-Results: (unclosed mx1\r\n",
            b"no colon\r\n",
        ] {
            let _ = strip_authentication_results(odd, "mx1");
        }
        assert!(strip_authentication_results(b"Authentication-Results: mx1", "mx1").is_empty(), "no final CRLF");
    }
}
