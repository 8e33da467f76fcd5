//! One SMTP conversation as a pure state machine: bytes go in, and out come replies
//! and requests for the outside world (check a recipient, check a password, deliver,
//! start TLS), each answered by the caller before the conversation goes on. No IO and
//! no clocks here, so every protocol rule is unit-tested without sockets.
//!
//! Commands are parsed by `smtp-proto` (Stalwart's parser); this module decides what
//! they mean for an MX or a submission service (RFC 5321, 6409, 3207, 4954, 2920).

use std::collections::VecDeque;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, DummyLineReceiver, RequestReceiver};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, MAIL_SMTPUTF8, Request};

use super::message::{from_addresses, normalize_line_endings};

/// Which service a listener offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Port 25: mail for local users from anyone, no relaying.
    Mx,
    /// Port 587: authenticated users send to anyone.
    Submission,
}

/// The rules one listener applies.
#[derive(Clone, Debug)]
pub struct Policy {
    pub hostname: String,
    pub mode: Mode,
    /// The SIZE limit; larger messages get `552`.
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    /// STARTTLS is offered (a certificate is configured).
    pub tls_available: bool,
    /// AUTH without TLS (development only).
    pub allow_insecure_auth: bool,
    /// Bad commands before the connection is closed.
    pub max_errors: u32,
    /// Failed AUTH attempts before the connection is closed.
    pub max_auth_failures: u32,
}

/// What the DATA receiver is primed with (and what is taken off the message again).
const DATA_START: &[u8] = b"\r\n";
/// Longest command line accepted (RFC 5321 says 512 octets; extensions add parameters).
const MAX_COMMAND_LINE: usize = 2048;
/// Longest AUTH response line (base64 of a long login and password).
const MAX_AUTH_LINE: usize = 12 * 1024;

/// What the caller must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Send this reply. Replies may be batched; they are flushed before reading.
    Reply(String),
    /// Nothing more can happen until more input arrives: flush and read.
    NeedInput,
    /// Switch the connection to TLS, then call [`Session::tls_started`].
    StartTls,
    /// Look the recipient up, then call [`Session::recipient_checked`].
    CheckRecipient { address: String, domain: String },
    /// Check the credentials, then call [`Session::authenticated`].
    Authenticate { login: String, password: String },
    /// Store or queue the message, then call [`Session::delivered`].
    Deliver(Envelope),
    /// Flush and close the connection.
    Close,
}

/// The answer to [`Event::CheckRecipient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// A user of ours.
    Local { user_id: String },
    /// An address in a domain that is not ours.
    Remote,
    /// A local domain without such a user.
    Unknown,
    /// Not an address we can deliver to at all (a bad domain name, an address literal).
    BadAddress,
    /// A user of ours whose storage quota is used up (RFC 3463 4.2.2: try again later,
    /// once the user has made room).
    MailboxFull,
    /// The directory could not answer now.
    Unavailable,
}

/// The answer to [`Event::Deliver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Replicated and applied for every recipient; `id` names it in the reply.
    Done { id: String },
    /// Some recipient could not be served now; the client should retry.
    Failed { reason: String },
    /// The message does not fit a recipient's storage quota: for good (`permanent`, the
    /// only recipient, 552 5.2.2), or until the client retries (others were stored, and a
    /// retry stores them no second time: 452 4.2.2).
    MailboxFull { permanent: bool },
    /// Refused after its content was checked (mail authentication: 550 5.7.1, or 451
    /// 4.7.1 when DNS could not answer); nothing was stored.
    Refused { code: u16, status: String, text: String },
}

/// A message ready to be stored, as the client handed it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path (`""` for a bounce).
    pub mail_from: String,
    pub local: Vec<LocalRecipient>,
    /// Recipients in other domains (submission only).
    pub remote: Vec<String>,
    /// The message exactly as received (dot-unstuffed), without a trace header.
    pub data: Vec<u8>,
    pub trace: Trace,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRecipient {
    pub address: String,
    pub user_id: String,
}

/// What the Received header says about the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub helo: String,
    pub client_ip: IpAddr,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA` or `ESMTPSA` (RFC 3848).
    pub protocol: &'static str,
    /// The authenticated user, if any.
    pub authenticated: Option<String>,
}

/// Where the input is being read.
enum State {
    Command(RequestReceiver),
    /// Skip the rest of a line that was too long.
    SkipLine(DummyLineReceiver),
    Data {
        receiver: DataReceiver,
        data: Vec<u8>,
    },
    /// The message is over the size limit: read it to its end and refuse it.
    DataTooBig(DummyDataReceiver),
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword {
        login: String,
    },
    Closed,
}

/// What one round of input processing came to.
enum Step {
    NeedMore,
    Parsed(Result<Request<String>, ParseError>),
    LineSkipped,
    DataEnded(Vec<u8>),
    DataTooBig(DummyDataReceiver),
    TooBigEnded,
}

/// The caller owes the session an answer to this.
#[derive(Debug)]
enum Awaiting {
    Recipient { address: String },
    Login { login: String },
    Delivery,
    Tls,
}

#[derive(Default)]
struct Transaction {
    mail_from: String,
    local: Vec<LocalRecipient>,
    remote: Vec<String>,
}

impl Transaction {
    fn recipients(&self) -> usize {
        self.local.len() + self.remote.len()
    }

    fn has(&self, address: &str) -> bool {
        self.local.iter().any(|r| r.address == address) || self.remote.iter().any(|r| r == address)
    }
}

/// One client's SMTP conversation.
pub struct Session {
    policy: Policy,
    client_ip: IpAddr,
    input: Vec<u8>,
    state: State,
    out: VecDeque<Event>,
    awaiting: Option<Awaiting>,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    /// The authenticated user id.
    user: Option<String>,
    transaction: Option<Transaction>,
    errors: u32,
    auth_failures: u32,
    /// Errors and failed logins not yet reported to the listener's offence count.
    offences: u32,
}

fn reply(code: u16, status: &str, text: &str) -> Event {
    Event::Reply(format!("{code} {status} {text}\r\n"))
}

impl Session {
    /// A new conversation; its first event is the greeting.
    pub fn new(policy: Policy, client_ip: IpAddr) -> Self {
        let greeting = Event::Reply(format!("220 {} ESMTP UMS\r\n", policy.hostname));
        Self {
            policy,
            client_ip,
            input: Vec::new(),
            state: State::Command(RequestReceiver::default()),
            out: VecDeque::from([greeting]),
            awaiting: None,
            helo: None,
            esmtp: false,
            tls: false,
            user: None,
            transaction: None,
            errors: 0,
            auth_failures: 0,
            offences: 0,
        }
    }

    /// A session on a connection that is TLS from its first byte (SMTPS): STARTTLS is
    /// neither offered nor accepted, AUTH is.
    pub fn new_encrypted(policy: Policy, client_ip: IpAddr) -> Self {
        Self { tls: true, ..Self::new(policy, client_ip) }
    }

    /// The client errors (bad commands, unknown recipients) and failed logins since the
    /// last call: what counts against its address (see [`crate::limits`]).
    pub fn take_offences(&mut self) -> u32 {
        std::mem::take(&mut self.offences)
    }

    /// Bytes read from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The service this session offers.
    pub fn mode(&self) -> Mode {
        self.policy.mode
    }

    /// Whether the client is inside DATA (for the caller's timeout message).
    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data { .. } | State::DataTooBig(_))
    }

    /// The next thing to do. Must not be called while an answer is owed.
    pub fn next_event(&mut self) -> Event {
        loop {
            if let Some(event) = self.out.pop_front() {
                return event;
            }
            assert!(self.awaiting.is_none(), "SMTP session: {:?} was not answered", self.awaiting);
            if matches!(self.state, State::Closed) {
                return Event::Close;
            }
            if !self.advance() {
                return Event::NeedInput;
            }
        }
    }

    /// Processes buffered input until an event is queued; false when more input is needed.
    fn advance(&mut self) -> bool {
        if matches!(self.state, State::AuthPlain | State::AuthLoginUser | State::AuthLoginPassword { .. }) {
            let Some(line) = take_line(&mut self.input, MAX_AUTH_LINE) else {
                return false;
            };
            self.on_auth_line(line);
            return true;
        }
        if matches!(self.state, State::Command(_)) && self.command_line_too_long() {
            self.state = State::SkipLine(DummyLineReceiver::default());
            self.error(500, "5.5.6", "Line too long");
            return true;
        }
        let mut bytes = self.input.iter();
        let step = match &mut self.state {
            State::Command(receiver) => match receiver.ingest(&mut bytes) {
                Err(ParseError::NeedsMoreData { .. }) => Step::NeedMore,
                parsed => Step::Parsed(parsed.map(Request::into_owned)),
            },
            State::SkipLine(receiver) => match receiver.ingest(&mut bytes) {
                true => Step::LineSkipped,
                false => Step::NeedMore,
            },
            State::Data { receiver, data } => {
                if receiver.ingest(&mut bytes, data) {
                    Step::DataEnded(std::mem::take(data))
                } else if data.len() > self.policy.max_message_bytes {
                    Step::DataTooBig(DummyDataReceiver::new_data(receiver))
                } else {
                    Step::NeedMore
                }
            }
            State::DataTooBig(receiver) => match receiver.ingest(&mut bytes) {
                true => Step::TooBigEnded,
                false => Step::NeedMore,
            },
            State::AuthPlain | State::AuthLoginUser | State::AuthLoginPassword { .. } | State::Closed => Step::NeedMore,
        };
        let consumed = self.input.len() - bytes.as_slice().len();
        self.input.drain(..consumed);
        match step {
            Step::NeedMore => return false,
            Step::Parsed(parsed) => self.on_parsed(parsed),
            Step::LineSkipped => self.state = State::Command(RequestReceiver::default()),
            Step::DataEnded(data) if data.len() > self.policy.max_message_bytes => self.refuse_too_big(),
            Step::DataEnded(mut data) => {
                self.state = State::Command(RequestReceiver::default());
                data.drain(..DATA_START.len());
                self.data_complete(data);
            }
            Step::DataTooBig(discard) => self.state = State::DataTooBig(discard),
            Step::TooBigEnded => self.refuse_too_big(),
        }
        true
    }

    /// Whether the next command line is longer than RFC 5321 allows (with slack for
    /// ESMTP parameters); the parser itself only limits lines split across reads.
    fn command_line_too_long(&self) -> bool {
        match self.input.iter().position(|&b| b == b'\n') {
            Some(end) => end > MAX_COMMAND_LINE,
            None => self.input.len() > MAX_COMMAND_LINE,
        }
    }

    fn refuse_too_big(&mut self) {
        self.state = State::Command(RequestReceiver::default());
        self.transaction = None;
        self.out.push_back(reply(552, "5.3.4", "Message size exceeds fixed maximum message size"));
    }

    fn on_parsed(&mut self, parsed: Result<Request<String>, ParseError>) {
        match parsed {
            Ok(request) => self.on_request(request),
            Err(ParseError::ResponseTooLong) => {
                self.state = State::SkipLine(DummyLineReceiver::default());
                self.error(500, "5.5.6", "Line too long");
            }
            Err(ParseError::UnknownCommand) => self.error(500, "5.5.1", "Command unrecognized"),
            Err(ParseError::InvalidSenderAddress) => self.error(501, "5.1.7", "Bad sender address syntax"),
            Err(ParseError::InvalidRecipientAddress) => self.error(501, "5.1.3", "Bad recipient address syntax"),
            Err(ParseError::UnsupportedParameter { param }) => {
                self.error(555, "5.5.4", &format!("Unsupported parameter {}", printable(&param)))
            }
            Err(ParseError::InvalidParameter { param }) => {
                self.error(501, "5.5.4", &format!("Invalid parameter {}", printable(param)))
            }
            Err(ParseError::SyntaxError { syntax }) => {
                self.error(501, "5.5.2", &format!("Syntax error, expected: {syntax}"))
            }
            Err(other) => self.error(500, "5.5.2", &format!("Syntax error: {other}")),
        }
    }

    /// A client error: reply, and hang up on a client that keeps making them.
    fn error(&mut self, code: u16, status: &str, text: &str) {
        self.errors += 1;
        self.offences += 1;
        if self.errors >= self.policy.max_errors {
            self.close_with(421, "4.7.0", "Too many errors, closing connection");
        } else {
            self.out.push_back(reply(code, status, text));
        }
    }

    fn close_with(&mut self, code: u16, status: &str, text: &str) {
        self.out.push_back(Event::Reply(format!("{code} {status} {} {text}\r\n", self.policy.hostname)));
        self.state = State::Closed;
    }

    fn on_request(&mut self, request: Request<String>) {
        match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::Mail { from } => self.mail(from.address, from.size, from.flags),
            Request::Rcpt { to } => self.rcpt(to.address),
            Request::Data => self.data(),
            Request::Rset => {
                self.transaction = None;
                self.out.push_back(reply(250, "2.0.0", "Ok"));
            }
            Request::Noop { .. } => self.out.push_back(reply(250, "2.0.0", "Ok")),
            Request::Quit => self.close_with(221, "2.0.0", "Bye"),
            Request::Vrfy { .. } => {
                self.out.push_back(reply(252, "2.5.0", "Cannot VRFY user, but will accept the message"))
            }
            Request::Help { .. } => self.out.push_back(reply(214, "2.0.0", "See RFC 5321")),
            Request::StartTls => self.starttls(),
            Request::Auth { mechanism, initial_response } => self.auth(mechanism, initial_response),
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Bdat { .. } => self.error(502, "5.5.1", "Command not implemented"),
        }
    }

    fn hello(&mut self, host: String, esmtp: bool) {
        self.transaction = None;
        self.helo = Some(host);
        self.esmtp = esmtp;
        let name = &self.policy.hostname;
        if !esmtp {
            self.out.push_back(Event::Reply(format!("250 {name}\r\n")));
            return;
        }
        let mut lines = vec![
            name.clone(),
            "PIPELINING".into(),
            "8BITMIME".into(),
            format!("SIZE {}", self.policy.max_message_bytes),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
        ];
        if self.policy.tls_available && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        let last = lines.len() - 1;
        let text: String = lines
            .iter()
            .enumerate()
            .map(|(i, line)| format!("250{}{line}\r\n", if i == last { ' ' } else { '-' }))
            .collect();
        self.out.push_back(Event::Reply(text));
    }

    /// AUTH is offered on submission, once the connection is encrypted (or in dev).
    fn auth_offered(&self) -> bool {
        self.policy.mode == Mode::Submission && self.user.is_none() && (self.tls || self.policy.allow_insecure_auth)
    }

    fn mail(&mut self, from: String, size: usize, flags: u64) {
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO or HELO first");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1", "Nested MAIL command");
        }
        if self.policy.mode == Mode::Submission {
            let Some(user) = &self.user else {
                return self.error(530, "5.7.0", "Authentication required");
            };
            // A user sends as themselves (bounces, with an empty path, are not ours to send).
            if !from.eq_ignore_ascii_case(user) {
                return self.error(553, "5.7.1", &format!("Sender address not owned by {user}"));
            }
        }
        if size > self.policy.max_message_bytes {
            return self.error(552, "5.3.4", "Message size exceeds fixed maximum message size");
        }
        if !from.is_ascii() && flags & MAIL_SMTPUTF8 == 0 {
            return self.error(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        }
        self.transaction = Some(Transaction { mail_from: from, ..Default::default() });
        self.out.push_back(reply(250, "2.1.0", "Ok"));
    }

    fn rcpt(&mut self, to: String) {
        let Some(transaction) = &self.transaction else {
            return self.error(503, "5.5.1", "Need MAIL command first");
        };
        if transaction.recipients() >= self.policy.max_recipients {
            self.out.push_back(reply(452, "4.5.3", "Too many recipients"));
            return;
        }
        let address = to.to_lowercase();
        let domain = match address.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => domain.to_string(),
            _ => return self.error(501, "5.1.3", "Bad recipient address syntax, expected user@domain"),
        };
        if transaction.has(&address) {
            self.out.push_back(reply(250, "2.1.5", "Ok"));
            return;
        }
        self.awaiting = Some(Awaiting::Recipient { address: address.clone() });
        self.out.push_back(Event::CheckRecipient { address, domain });
    }

    /// The caller's answer to [`Event::CheckRecipient`].
    pub fn recipient_checked(&mut self, verdict: Recipient) {
        let Some(Awaiting::Recipient { address }) = self.awaiting.take() else {
            panic!("SMTP session: recipient_checked without a pending recipient");
        };
        let transaction = self.transaction.as_mut().expect("RCPT is only checked inside a transaction");
        let ok = reply(250, "2.1.5", "Ok");
        match verdict {
            Recipient::Local { user_id } => {
                transaction.local.push(LocalRecipient { address, user_id });
                self.out.push_back(ok);
            }
            Recipient::Remote if self.policy.mode == Mode::Submission => {
                transaction.remote.push(address);
                self.out.push_back(ok);
            }
            Recipient::Remote => self.error(550, "5.7.1", "Relaying denied: we do not accept mail for that domain"),
            Recipient::Unknown => self.error(550, "5.1.1", "Mailbox unavailable: no such user here"),
            Recipient::BadAddress => self.error(501, "5.1.3", "Bad recipient address: not a deliverable domain"),
            Recipient::MailboxFull => {
                self.out.push_back(reply(452, "4.2.2", "Mailbox full: the recipient is over quota, try again later"))
            }
            Recipient::Unavailable => {
                self.out.push_back(reply(451, "4.4.3", "Directory temporarily unavailable, try again later"))
            }
        }
    }

    fn data(&mut self) {
        match &self.transaction {
            None => self.error(503, "5.5.1", "Need MAIL command first"),
            Some(t) if t.recipients() == 0 => self.error(554, "5.5.1", "No valid recipients"),
            Some(_) => {
                // The receiver recognises "." and ".." only after a line break; DATA's own
                // line ended in one, so start it as if it had just seen it.
                let (mut receiver, mut data) = (DataReceiver::new(), Vec::new());
                receiver.ingest(&mut DATA_START.iter(), &mut data);
                self.state = State::Data { receiver, data };
                self.out.push_back(reply(354, "2.0.0", "Start mail input; end with <CRLF>.<CRLF>"));
            }
        }
    }

    fn data_complete(&mut self, data: Vec<u8>) {
        let transaction = self.transaction.take().expect("DATA follows a transaction");
        let data = normalize_line_endings(data);
        if let (Mode::Submission, Some(user)) = (self.policy.mode, &self.user) {
            // The envelope sender was checked at MAIL; what recipients see is the header.
            match from_addresses(&data) {
                None => return self.out.push_back(reply(550, "5.6.0", "The message needs exactly one From: header")),
                Some(from) if from.iter().any(|a| !a.eq_ignore_ascii_case(user)) => {
                    let text = format!("From: must be your own address ({user})");
                    return self.out.push_back(reply(550, "5.7.1", &text));
                }
                Some(_) => {}
            }
        }
        let protocol = match (self.esmtp, self.tls, self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let trace = Trace {
            helo: self.helo.clone().unwrap_or_default(),
            client_ip: self.client_ip,
            protocol,
            authenticated: self.user.clone(),
        };
        self.awaiting = Some(Awaiting::Delivery);
        self.out.push_back(Event::Deliver(Envelope {
            mail_from: transaction.mail_from,
            local: transaction.local,
            remote: transaction.remote,
            data,
            trace,
        }));
    }

    /// The caller's answer to [`Event::Deliver`].
    pub fn delivered(&mut self, outcome: DeliveryOutcome) {
        assert!(
            matches!(self.awaiting.take(), Some(Awaiting::Delivery)),
            "SMTP session: delivered without a pending delivery"
        );
        self.out.push_back(match outcome {
            DeliveryOutcome::Done { id } => reply(250, "2.0.0", &format!("Ok: queued as {id}")),
            DeliveryOutcome::Failed { reason } => {
                reply(451, "4.3.0", &format!("Temporary failure ({reason}), try again later"))
            }
            DeliveryOutcome::MailboxFull { permanent: true } => {
                reply(552, "5.2.2", "Mailbox full: the message does not fit the recipient's quota")
            }
            DeliveryOutcome::MailboxFull { permanent: false } => {
                reply(452, "4.2.2", "Mailbox full: a recipient is over quota, try again later")
            }
            DeliveryOutcome::Refused { code, status, text } => reply(code, &status, &printable_reply(&text)),
        });
    }

    fn starttls(&mut self) {
        if self.tls {
            return self.error(503, "5.5.1", "Already in TLS");
        }
        if !self.policy.tls_available {
            return self.error(502, "5.5.1", "STARTTLS not available");
        }
        self.out.push_back(reply(220, "2.0.0", "Ready to start TLS"));
        self.out.push_back(Event::StartTls);
        self.awaiting = Some(Awaiting::Tls);
    }

    /// The connection is now encrypted: everything before is forgotten (RFC 3207),
    /// including input the client sent ahead of the handshake (command injection).
    pub fn tls_started(&mut self) {
        assert!(matches!(self.awaiting.take(), Some(Awaiting::Tls)), "SMTP session: tls_started without STARTTLS");
        self.tls = true;
        self.input.clear();
        self.helo = None;
        self.esmtp = false;
        self.transaction = None;
        self.state = State::Command(RequestReceiver::default());
    }

    fn auth(&mut self, mechanism: u64, initial: String) {
        if self.policy.mode != Mode::Submission {
            return self.error(502, "5.5.1", "AUTH not available on this port");
        }
        if self.user.is_some() {
            return self.error(503, "5.5.1", "Already authenticated");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1", "AUTH not allowed during a mail transaction");
        }
        if !self.tls && !self.policy.allow_insecure_auth {
            return self.error(538, "5.7.11", "Encryption required for requested authentication mechanism");
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.state = State::AuthPlain;
                self.out.push_back(Event::Reply("334 \r\n".into()));
            }
            AUTH_PLAIN => self.auth_plain(initial.as_bytes()),
            AUTH_LOGIN if initial.is_empty() => {
                self.state = State::AuthLoginUser;
                self.out.push_back(Event::Reply(format!("334 {}\r\n", BASE64.encode("Username:"))));
            }
            AUTH_LOGIN => self.auth_login_user(initial.as_bytes()),
            _ => self.error(504, "5.5.4", "Unrecognized authentication mechanism"),
        }
    }

    fn on_auth_line(&mut self, line: Result<Vec<u8>, ()>) {
        let state = std::mem::replace(&mut self.state, State::Command(RequestReceiver::default()));
        let Ok(line) = line else {
            return self.error(500, "5.5.6", "Authentication exchange line is too long");
        };
        if line == b"*" {
            return self.error(501, "5.0.0", "Authentication cancelled");
        }
        match state {
            State::AuthPlain => self.auth_plain(&line),
            State::AuthLoginUser => self.auth_login_user(&line),
            State::AuthLoginPassword { login } => match decode_base64_text(&line) {
                Some(password) => self.authenticate(login, password),
                None => self.error(501, "5.5.2", "Invalid base64"),
            },
            _ => unreachable!("only called in an AUTH state"),
        }
    }

    fn auth_plain(&mut self, response: &[u8]) {
        // authzid NUL authcid NUL password (RFC 4616); acting as another user is not offered.
        let decoded = BASE64.decode(response).ok().and_then(|bytes| String::from_utf8(bytes).ok());
        let Some(decoded) = decoded else {
            return self.error(501, "5.5.2", "Invalid base64");
        };
        let parts: Vec<&str> = decoded.split('\0').collect();
        match parts.as_slice() {
            [authzid, login, password] if authzid.is_empty() || authzid.eq_ignore_ascii_case(login) => {
                self.authenticate(login.to_string(), password.to_string())
            }
            [_, _, _] => self.error(535, "5.7.8", "Authorization identity differs from the login"),
            _ => self.error(501, "5.5.2", "Malformed PLAIN response"),
        }
    }

    fn auth_login_user(&mut self, response: &[u8]) {
        match decode_base64_text(response) {
            Some(login) => {
                self.state = State::AuthLoginPassword { login };
                self.out.push_back(Event::Reply(format!("334 {}\r\n", BASE64.encode("Password:"))));
            }
            None => self.error(501, "5.5.2", "Invalid base64"),
        }
    }

    fn authenticate(&mut self, login: String, password: String) {
        self.awaiting = Some(Awaiting::Login { login: login.clone() });
        self.out.push_back(Event::Authenticate { login, password });
    }

    /// The caller's answer to [`Event::Authenticate`]: the user id, `Ok(None)` for bad
    /// credentials, `Err` with a reason when the check could not be made (or is
    /// throttled).
    pub fn authenticated(&mut self, result: Result<Option<String>, String>) {
        let Some(Awaiting::Login { login }) = self.awaiting.take() else {
            panic!("SMTP session: authenticated without a pending login");
        };
        match result {
            Ok(Some(user)) => {
                self.user = Some(user);
                self.out.push_back(reply(235, "2.7.0", "Authentication successful"));
            }
            Ok(None) => {
                self.auth_failures += 1;
                self.offences += 1;
                if self.auth_failures >= self.policy.max_auth_failures {
                    self.close_with(421, "4.7.0", "Too many failed logins, closing connection");
                } else {
                    self.out.push_back(reply(
                        535,
                        "5.7.8",
                        &format!("Authentication credentials invalid for {}", printable(&login)),
                    ));
                }
            }
            Err(reason) => {
                self.out.push_back(reply(454, "4.7.0", &format!("Temporary authentication failure: {reason}")))
            }
        }
    }
}

/// Takes one CRLF- (or LF-) terminated line off the front of `input`: `None` when it is
/// incomplete, `Err` (and the line dropped) when it exceeds `max` bytes.
fn take_line(input: &mut Vec<u8>, max: usize) -> Option<Result<Vec<u8>, ()>> {
    match input.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line: Vec<u8> = input.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Some(if line.len() > max { Err(()) } else { Ok(line) })
        }
        None if input.len() > max => {
            input.clear();
            Some(Err(()))
        }
        None => None,
    }
}

fn decode_base64_text(bytes: &[u8]) -> Option<String> {
    BASE64.decode(bytes).ok().and_then(|decoded| String::from_utf8(decoded).ok())
}

/// Client-supplied text echoed in a reply: printable ASCII only, bounded.
fn printable(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(64).collect()
}

/// A reply text that may name what the message claims (a domain): one line of printable
/// ASCII, short enough for RFC 5321's 512-octet reply line.
fn printable_reply(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: Mode) -> Policy {
        Policy {
            hostname: "mx.test".into(),
            mode,
            max_message_bytes: 100,
            max_recipients: 2,
            tls_available: true,
            allow_insecure_auth: false,
            max_errors: 5,
            max_auth_failures: 2,
        }
    }

    fn ip() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    /// Feeds `input` and answers the session's requests like a directory in which the
    /// domain `local.test` has the user `a`; returns everything the session sent.
    fn converse(session: &mut Session, input: &str) -> String {
        session.receive(input.as_bytes());
        let mut sent = String::new();
        loop {
            match session.next_event() {
                Event::Reply(text) => sent.push_str(&text),
                Event::NeedInput => return sent,
                Event::Close => {
                    sent.push_str("<close>");
                    return sent;
                }
                Event::StartTls => {
                    sent.push_str("<tls>");
                    session.tls_started();
                }
                Event::CheckRecipient { address, domain } => {
                    session.recipient_checked(match (address.as_str(), domain.as_str()) {
                        ("a@local.test", _) => Recipient::Local { user_id: "a@local.test".into() },
                        (_, "local.test") => Recipient::Unknown,
                        (_, "down.test") => Recipient::Unavailable,
                        _ => Recipient::Remote,
                    })
                }
                Event::Authenticate { login, password } => {
                    session.authenticated(Ok((login == "a@local.test" && password == "secret").then(|| login.clone())))
                }
                Event::Deliver(envelope) => {
                    sent.push_str(&format!("<deliver {} bytes>\r\n", envelope.data.len()));
                    session.delivered(DeliveryOutcome::Done { id: "X1".into() })
                }
            }
        }
    }

    fn codes(sent: &str) -> Vec<&str> {
        sent.split("\r\n").filter(|l| l.len() >= 4 && &l[3..4] == " ").map(|l| &l[..3]).collect()
    }

    #[test]
    fn mx_accepts_mail_for_local_users_only() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        let sent = converse(
            &mut s,
            "EHLO client\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<A@local.test>\r\nRCPT TO:<nobody@local.test>\r\nRCPT TO:<z@elsewhere.test>\r\nDATA\r\n",
        );
        assert_eq!(codes(&sent), ["220", "250", "250", "250", "550", "550", "354"], "{sent}");
        assert!(sent.contains("550 5.1.1") && sent.contains("550 5.7.1"), "{sent}");
        assert!(
            sent.contains("PIPELINING")
                && sent.contains("SIZE 100")
                && sent.contains("STARTTLS")
                && !sent.contains("AUTH"),
            "{sent}"
        );
        let sent = converse(&mut s, "Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n");
        assert!(sent.starts_with("<deliver 21 bytes>\r\n250 2.0.0 Ok: queued as X1"), "{sent}");
        assert!(sent.ends_with("221 2.0.0 mx.test Bye\r\n<close>"), "{sent}");
    }

    #[test]
    fn the_envelope_keeps_the_message_byte_exact() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        converse(&mut s, "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@local.test>\r\nDATA\r\n");
        s.receive(b"A: b\r\n\r\nline\r\n..leading dot\r\n\xff8bit\r\n.\r\n");
        loop {
            match s.next_event() {
                Event::Deliver(envelope) => {
                    assert_eq!(envelope.data, b"A: b\r\n\r\nline\r\n.leading dot\r\n\xff8bit\r\n");
                    assert_eq!(envelope.mail_from, "");
                    assert_eq!(
                        envelope.local,
                        [LocalRecipient { address: "a@local.test".into(), user_id: "a@local.test".into() }]
                    );
                    assert_eq!(envelope.trace.protocol, "SMTP");
                    return;
                }
                Event::NeedInput => panic!("no delivery"),
                _ => {}
            }
        }
    }

    #[test]
    fn a_dot_on_the_first_line_ends_or_is_unstuffed() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        converse(&mut s, "EHLO c\r\nMAIL FROM:<x@y>\r\nRCPT TO:<a@local.test>\r\nDATA\r\n");
        let sent = converse(&mut s, ".\r\n");
        assert!(sent.starts_with("<deliver 0 bytes>"), "an empty message: {sent}");
        converse(&mut s, "MAIL FROM:<x@y>\r\nRCPT TO:<a@local.test>\r\nDATA\r\n");
        s.receive(b"..starts with a dot\r\n.\r\n");
        loop {
            match s.next_event() {
                Event::Deliver(envelope) => return assert_eq!(envelope.data, b".starts with a dot\r\n"),
                Event::NeedInput => panic!("no delivery"),
                _ => {}
            }
        }
    }

    #[test]
    fn order_of_commands_is_enforced() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        let sent = converse(
            &mut s,
            "MAIL FROM:<x@y>\r\nEHLO c\r\nRCPT TO:<a@local.test>\r\nDATA\r\nMAIL FROM:<x@y>\r\nMAIL FROM:<x@y>\r\nDATA\r\n",
        );
        assert_eq!(codes(&sent), ["220", "503", "250", "503", "503", "250", "503", "421"], "{sent}");
        assert!(sent.ends_with("<close>"), "five errors close the connection: {sent}");
    }

    #[test]
    fn size_limits_refuse_big_messages_but_keep_the_session() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        let sent = converse(
            &mut s,
            "EHLO c\r\nMAIL FROM:<x@y> SIZE=1000\r\nMAIL FROM:<x@y> SIZE=50\r\nRCPT TO:<a@local.test>\r\nDATA\r\n",
        );
        assert_eq!(codes(&sent), ["220", "250", "552", "250", "250", "354"], "{sent}");
        let body = "x".repeat(150);
        let sent = converse(&mut s, &format!("{body}\r\n{body}\r\n.\r\nNOOP\r\n"));
        assert_eq!(codes(&sent), ["552", "250"], "{sent}");
        assert!(!sent.contains("deliver"), "{sent}");
    }

    #[test]
    fn too_many_recipients_and_unavailable_directory_are_temporary() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        let sent = converse(
            &mut s,
            "EHLO c\r\nMAIL FROM:<x@y>\r\nRCPT TO:<q@down.test>\r\nRCPT TO:<a@local.test>\r\nRCPT TO:<a@local.test>\r\n",
        );
        assert_eq!(codes(&sent), ["220", "250", "250", "451", "250", "250"], "{sent}");
        let mut s = Session::new(Policy { max_recipients: 1, ..policy(Mode::Mx) }, ip());
        let sent =
            converse(&mut s, "EHLO c\r\nMAIL FROM:<x@y>\r\nRCPT TO:<a@local.test>\r\nRCPT TO:<b@local.test>\r\n");
        assert!(sent.ends_with("452 4.5.3 Too many recipients\r\n"), "{sent}");
    }

    #[test]
    fn an_over_long_line_is_refused_and_skipped() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        let long = format!("NOOP {}\r\nNOOP\r\n", "a".repeat(10_000));
        let sent = converse(&mut s, &long);
        assert_eq!(codes(&sent), ["220", "500", "250"], "{sent}");
    }

    #[test]
    fn garbage_gets_errors_not_a_crash() {
        let mut s = Session::new(Policy { max_errors: 100, ..policy(Mode::Mx) }, ip());
        let sent = converse(&mut s, "HELLO\r\n\0\0\0\r\nMAIL\r\nRCPT TO:<>\r\nEHLO\r\n\r\nMAIL FROM:<a b@c>\r\nÿþ\r\n");
        assert!(codes(&sent).iter().skip(1).all(|c| c.starts_with('5') || *c == "250"), "{sent}");
        assert!(!sent.contains("<close>"));
        let errors = codes(&sent).iter().filter(|c| c.starts_with('5')).count() as u32;
        assert_eq!(s.take_offences(), errors, "every error counts against the client's address: {sent}");
        assert_eq!(s.take_offences(), 0, "once");
        converse(&mut s, "EHLO c\r\nMAIL FROM:<x@y>\r\nRCPT TO:<nobody@local.test>\r\n");
        assert_eq!(s.take_offences(), 1, "an unknown recipient counts (directory harvesting)");
    }

    #[test]
    fn submission_requires_tls_then_auth_and_sends_anywhere_as_oneself() {
        let mut s = Session::new(policy(Mode::Submission), ip());
        let sent =
            converse(&mut s, "EHLO c\r\nAUTH PLAIN AGFAbG9jYWwudGVzdABzZWNyZXQ=\r\nMAIL FROM:<a@local.test>\r\n");
        assert_eq!(codes(&sent), ["220", "250", "538", "530"], "{sent}");
        assert!(!sent.contains("AUTH"), "AUTH is not offered before TLS: {sent}");
        let sent = converse(&mut s, "STARTTLS\r\nMAIL FROM:<a@local.test>\r\n");
        assert!(sent.starts_with("220 2.0.0 Ready to start TLS\r\n<tls>"), "{sent}");
        let sent = converse(&mut s, "EHLO c\r\n");
        assert!(sent.contains("AUTH PLAIN LOGIN") && !sent.contains("STARTTLS"), "{sent}");
        // "\0a@local.test\0wrong", then LOGIN with the right password.
        let wrong = BASE64.encode("\0a@local.test\0wrong");
        let sent = converse(&mut s, &format!("AUTH PLAIN {wrong}\r\nAUTH LOGIN\r\n"));
        assert_eq!(codes(&sent), ["535", "334"], "{sent}");
        let sent = converse(&mut s, &format!("{}\r\n{}\r\n", BASE64.encode("a@local.test"), BASE64.encode("secret")));
        assert_eq!(codes(&sent), ["334", "235"], "{sent}");
        let sent = converse(
            &mut s,
            "MAIL FROM:<b@local.test>\r\nMAIL FROM:<A@local.test>\r\nRCPT TO:<z@elsewhere.test>\r\nDATA\r\nFrom: Me <A@Local.test>\r\n\r\nhi\r\n.\r\n",
        );
        assert_eq!(codes(&sent), ["553", "250", "250", "354", "250"], "{sent}");
        // The From: header recipients see must be the sender's own address too.
        let transaction = "MAIL FROM:<a@local.test>\r\nRCPT TO:<z@elsewhere.test>\r\nDATA\r\n";
        let sent = converse(&mut s, &format!("{transaction}From: The Minister <b@local.test>\r\n\r\nhi\r\n.\r\n"));
        assert!(sent.ends_with("550 5.7.1 From: must be your own address (a@local.test)\r\n"), "{sent}");
        let sent = converse(&mut s, &format!("{transaction}Subject: no sender\r\n\r\nhi\r\n.\r\n"));
        assert!(sent.ends_with("550 5.6.0 The message needs exactly one From: header\r\n"), "{sent}");
        let sent =
            converse(&mut s, &format!("{transaction}From: a@local.test\r\nFrom: b@local.test\r\n\r\nhi\r\n.\r\n"));
        assert!(sent.contains("550 5.6.0"), "{sent}");
    }

    #[test]
    fn a_bare_line_feed_cannot_end_a_message_or_smuggle_another() {
        let mut s = Session::new(Policy { max_message_bytes: 10_000, ..policy(Mode::Mx) }, ip());
        converse(&mut s, "EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<a@local.test>\r\nDATA\r\n");
        s.receive(b"Subject: one\r\n\r\nhello\n.\nMAIL FROM:<ceo@local.test>\r\nRCPT TO:<a@local.test>\r\nDATA\r\nforged\r\n.\r\n");
        let mut deliveries = Vec::new();
        loop {
            match s.next_event() {
                Event::Deliver(envelope) => {
                    deliveries.push(envelope.data);
                    s.delivered(DeliveryOutcome::Done { id: "X1".into() });
                }
                Event::Reply(_) => {}
                Event::NeedInput => break,
                Event::CheckRecipient { .. } => {
                    s.recipient_checked(Recipient::Local { user_id: "a@local.test".into() })
                }
                _ => panic!("unexpected event"),
            }
        }
        assert_eq!(deliveries.len(), 1, "one message, not two");
        let expected = b"Subject: one\r\n\r\nhello\r\n.\r\nMAIL FROM:<ceo@local.test>\r\nRCPT TO:<a@local.test>\r\nDATA\r\nforged\r\n";
        assert_eq!(deliveries[0], expected, "stored with CRLF, so a relay dot-stuffs the inner dot");
    }

    #[test]
    fn failed_logins_close_the_connection() {
        let mut s = Session::new(Policy { allow_insecure_auth: true, ..policy(Mode::Submission) }, ip());
        let wrong = BASE64.encode("\0a@local.test\0wrong");
        let sent = converse(&mut s, &format!("EHLO c\r\nAUTH PLAIN {wrong}\r\nAUTH PLAIN\r\n{wrong}\r\n"));
        assert_eq!(codes(&sent), ["220", "250", "535", "334", "421"], "{sent}");
        assert!(sent.ends_with("<close>"));
    }

    #[test]
    fn input_sent_ahead_of_the_tls_handshake_is_discarded() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        let sent = converse(&mut s, "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@x>\r\n");
        assert!(sent.ends_with("<tls>"), "{sent}");
        let sent = converse(&mut s, "MAIL FROM:<x@y>\r\n");
        assert!(sent.starts_with("503"), "EHLO is needed again after STARTTLS: {sent}");
    }

    #[test]
    fn delivery_failure_is_a_temporary_error() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        converse(&mut s, "EHLO c\r\nMAIL FROM:<x@y>\r\nRCPT TO:<a@local.test>\r\nDATA\r\n");
        s.receive(b"hi\r\n.\r\n");
        assert!(matches!(s.next_event(), Event::Deliver(_)));
        s.delivered(DeliveryOutcome::Failed { reason: "no leader".into() });
        assert_eq!(s.next_event(), Event::Reply("451 4.3.0 Temporary failure (no leader), try again later\r\n".into()));
        // The transaction is over: RCPT needs a new MAIL.
        let sent = converse(&mut s, "RCPT TO:<a@local.test>\r\n");
        assert!(sent.starts_with("503"), "{sent}");
    }

    #[test]
    fn a_refused_message_gets_the_refusal_and_the_session_goes_on() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        assert_eq!(s.mode(), Mode::Mx);
        converse(&mut s, "EHLO c\r\nMAIL FROM:<x@y>\r\nRCPT TO:<a@local.test>\r\nDATA\r\n");
        s.receive(b"hi\r\n.\r\n");
        assert!(matches!(s.next_event(), Event::Deliver(_)));
        let text = "Rejected per the DMARC policy of y\r\n250 injected".to_string();
        s.delivered(DeliveryOutcome::Refused { code: 550, status: "5.7.1".into(), text });
        assert_eq!(s.next_event(), Event::Reply("550 5.7.1 Rejected per the DMARC policy of y250 injected\r\n".into()));
        let sent = converse(&mut s, "MAIL FROM:<x@y>\r\n");
        assert!(sent.starts_with("250"), "a new transaction may start: {sent}");
    }

    #[test]
    fn a_full_mailbox_is_452_at_rcpt_and_a_message_too_big_for_it_552() {
        let mut s = Session::new(policy(Mode::Mx), ip());
        converse(&mut s, "EHLO c\r\nMAIL FROM:<x@y>\r\n");
        s.receive(b"RCPT TO:<a@local.test>\r\n");
        assert!(matches!(s.next_event(), Event::CheckRecipient { .. }));
        s.recipient_checked(Recipient::MailboxFull);
        assert_eq!(
            s.next_event(),
            Event::Reply("452 4.2.2 Mailbox full: the recipient is over quota, try again later\r\n".into())
        );
        for (permanent, expected) in [
            (true, "552 5.2.2 Mailbox full: the message does not fit the recipient's quota\r\n"),
            (false, "452 4.2.2 Mailbox full: a recipient is over quota, try again later\r\n"),
        ] {
            converse(&mut s, "RSET\r\nMAIL FROM:<x@y>\r\nRCPT TO:<a@local.test>\r\nDATA\r\n");
            s.receive(b"hi\r\n.\r\n");
            assert!(matches!(s.next_event(), Event::Deliver(_)));
            s.delivered(DeliveryOutcome::MailboxFull { permanent });
            assert_eq!(s.next_event(), Event::Reply(expected.into()));
        }
    }
}
