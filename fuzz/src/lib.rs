//! What the fuzz targets share: the IMAP server's framing without its socket (the same
//! `Fragmentizer` steps and literal limits as `gateways::imap::server`), a runtime for
//! the IMAP session's futures, a mailbox of real MIME messages to drive the session over,
//! and a check that what the server sends is well-formed IMAP.

use std::future::Future;
use std::sync::mpsc;

use gateways::fuzzing::decode_imap_command;
use gateways::fuzzing::imap_codec::ResponseCodec;
use gateways::fuzzing::imap_codec::decode::Decoder;
use gateways::fuzzing::imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LiteralAnnouncement};
use gateways::fuzzing::imap_types::command::Command;
use gateways::fuzzing::imap_types::core::LiteralMode;
use gateways::imap::extended::Extension;

/// The server's size limits, scaled down so that inputs of a few KiB reach every one of
/// them (the server allows 35 MB literals after login and 8 KiB of command before).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest literal after login.
    pub max_literal: u32,
    /// Largest command, literals included, before login.
    pub max_preauth: u32,
}

impl Limits {
    pub const SCALED: Limits = Limits { max_literal: 4096, max_preauth: 1024 };

    /// What the fragmentizer keeps of one message (the server: the literal limit plus
    /// 64 KiB for the command lines around it).
    fn max_message(&self) -> u32 {
        self.max_literal + 1024
    }
}

/// What the server does with the next complete message.
#[derive(Debug)]
pub enum Framed {
    /// The message is complete: decode it (as a command, or as AUTHENTICATE's or IDLE's
    /// continuation) from [`Framer::fragmentizer`].
    Complete,
    /// A synchronizing literal over the limit: the server answers `NO [TOOBIG]` with this
    /// tag and skips the command (the client sends no literal without its go-ahead).
    TooBig { tag: String },
}

/// The server's read loop over bytes given in advance: `Fragmentizer` progress, more
/// bytes when it needs them (in the chunk sizes given), the literal limits, and the end
/// of input or the server hanging up as `None`.
pub struct Framer<'a> {
    fragmentizer: Fragmentizer,
    limits: Limits,
    input: &'a [u8],
    /// Sizes of the reads the input arrives in, cycled (as TCP may cut it anywhere).
    chunks: &'a [u8],
    read: usize,
}

impl<'a> Framer<'a> {
    /// Frames `input`, read in pieces of the sizes in `chunks` (all at once when empty).
    pub fn new(input: &'a [u8], chunks: &'a [u8], limits: Limits) -> Self {
        Self { fragmentizer: Fragmentizer::new(limits.max_message()), limits, input, chunks, read: 0 }
    }

    pub fn fragmentizer(&self) -> &Fragmentizer {
        &self.fragmentizer
    }

    /// The next message, as the server frames it for a client logged in or not.
    pub fn next(&mut self, authenticated: bool) -> Option<Framed> {
        loop {
            let Some(info) = self.fragmentizer.progress() else {
                // Before login a client gets little room: the server hangs up.
                if !authenticated && self.fragmentizer.message_bytes().len() > self.limits.max_preauth as usize {
                    return None;
                }
                if self.input.is_empty() {
                    return None;
                }
                let size = match self.chunks {
                    [] => self.input.len(),
                    sizes => usize::from(sizes[self.read % sizes.len()]).max(1).min(self.input.len()),
                };
                let (piece, rest) = self.input.split_at(size);
                self.fragmentizer.enqueue_bytes(piece);
                self.input = rest;
                self.read += 1;
                continue;
            };
            if let FragmentInfo::Line { announcement: Some(LiteralAnnouncement { mode, length }), .. } = info {
                let max_literal = if authenticated { self.limits.max_literal } else { self.limits.max_preauth };
                if length > max_literal {
                    let tag = self.fragmentizer.decode_tag().map(|t| t.as_ref().to_string());
                    return match (tag, mode) {
                        (Some(tag), LiteralMode::Sync) => {
                            self.fragmentizer.skip_message();
                            Some(Framed::TooBig { tag })
                        }
                        // A non-synchronizing literal is on its way already: the server
                        // hangs up rather than read it as commands.
                        _ => None,
                    };
                }
                continue;
            }
            if self.fragmentizer.is_message_complete() {
                return Some(Framed::Complete);
            }
        }
    }

    /// The complete message decoded as a command, as the server does it; `Err` with the
    /// tag it could read for a command the server answers `BAD`.
    pub fn command(&self) -> Result<(Command<'static>, Extension), Option<String>> {
        decode_imap_command(&self.fragmentizer)
            .map_err(|()| self.fragmentizer.decode_tag().map(|t| t.as_ref().to_string()))
    }
}

/// The stack a tokio worker thread has (tokio's default), on which the servers run the
/// sessions: recursion that fits the fuzzer's main thread (8 MiB) may not fit there.
const WORKER_STACK_BYTES: usize = 2 * 1024 * 1024;

/// What the signal handler runs on when the worker's stack is used up.
const SIGNAL_STACK_BYTES: usize = 256 * 1024;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A thread with a tokio worker's stack, and the channels to hand it work and hear back.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<()>,
}

thread_local! {
    static WORKER: Worker = Worker::start();
}

impl Worker {
    fn start() -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel();
        let thread = std::thread::Builder::new().name("worker".into()).stack_size(WORKER_STACK_BYTES);
        thread
            .spawn(move || {
                report_stack_overflows();
                for job in queue {
                    job();
                    let _ = finished.send(());
                }
            })
            .expect("a worker thread");
        Self { jobs, done }
    }
}

/// Runs `work` on a thread with a tokio worker's stack, so that a stack overflow the
/// server would suffer (and die of) is a crash here too. One thread serves every input
/// (a thread per input would cost more than most inputs take).
pub fn on_worker_stack<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let mut result = None;
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(|| result = Some(work()));
    // SAFETY: the job borrows `work`'s captures and `result`, which live until this
    // function returns or unwinds. It does so only once the worker said the job is done,
    // or once the worker's end of `done` is gone: a job that panics (if libFuzzer's panic
    // hook did not abort the process first) takes the worker thread down, and the
    // thread's sender is dropped only after the job was. No borrow outlives its owner.
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
    WORKER.with(|worker| {
        worker.jobs.send(job).expect("the worker runs as long as the process");
        worker.done.recv().expect("the worker finishes each job");
    });
    result.expect("the job ran")
}

/// Makes a stack overflow on this thread a crash libFuzzer reports and saves the input
/// of: without a Rust runtime of its own (`main` is libFuzzer's), nothing installs the
/// alternate stack that a SIGSEGV handler needs when the stack is exhausted, and the
/// process would die without a word. AddressSanitizer brings its own alternate stacks
/// (and frees them itself), which are left alone.
fn report_stack_overflows() {
    // SAFETY: plain libc calls on memory this function owns; the signal stack is leaked,
    // so it lives as long as the thread may use it.
    unsafe {
        let mut current: libc::stack_t = std::mem::zeroed();
        let no_signal_stack =
            libc::sigaltstack(std::ptr::null(), &mut current) == 0 && current.ss_flags & libc::SS_DISABLE != 0;
        if no_signal_stack {
            let signal_stack = Box::leak(vec![0u8; SIGNAL_STACK_BYTES].into_boxed_slice());
            let stack =
                libc::stack_t { ss_sp: signal_stack.as_mut_ptr().cast(), ss_flags: 0, ss_size: SIGNAL_STACK_BYTES };
            libc::sigaltstack(&stack, std::ptr::null_mut());
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut action) == 0 && action.sa_flags & libc::SA_ONSTACK == 0
        {
            action.sa_flags |= libc::SA_ONSTACK;
            libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
        }
    }
}

thread_local! {
    /// One runtime per thread, reused by every input (building one costs more than most
    /// inputs take). Timers are enabled: a failed login waits out its delay on one.
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime");
}

/// Runs a future of the IMAP session to its end.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// What the session appends to a LIST response for RECURSIVEMATCH (RFC 5258 3.5).
const CHILDINFO: &[u8] = b" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n";

/// How deep parentheses nest in `line` (strings and literals are not told apart: this
/// only needs to be an upper bound).
fn nesting(line: &[u8]) -> usize {
    let mut depth: usize = 0;
    let mut deepest = 0;
    for &byte in line {
        match byte {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    deepest
}

/// Checks that `out`, what the IMAP server sends, is a sequence of responses that
/// imap-codec reads back: no bare CR or LF inside a line, no literal that lies about its
/// length, no atom a client cannot parse. What imap-types has no form for is checked as
/// far as it can be: the lines the session writes itself (`ESEARCH`, `THREAD`) for being
/// lines, a LIST with CHILDINFO without it. A FETCH with partial BINARY items
/// (`BINARY[1]<0> {3}`, spliced in after encoding) ends the check when `partial_binary`,
/// as the literal that follows cannot be found without parsing it, and so does a FETCH
/// nested deeper than imap-codec reads.
///
/// # Panics
///
/// On the first response that does not parse, showing it.
pub fn assert_well_formed_responses(out: &[u8], partial_binary: bool) {
    let mut rest = out;
    while !rest.is_empty() {
        let error = match ResponseCodec::default().decode(rest) {
            Ok((after, _)) => {
                rest = after;
                continue;
            }
            Err(error) => error,
        };
        let line_end = rest.windows(2).position(|w| w == b"\r\n").map(|p| p + 2);
        let line = &rest[..line_end.unwrap_or(rest.len())];
        let hand_made = line.starts_with(b"* ESEARCH ") || line.starts_with(b"* THREAD ");
        // LIST-EXTENDED's CHILDINFO, appended to a LIST response imap-codec encoded.
        if let Some(list) = line.strip_suffix(CHILDINFO) {
            let plain = [list, b"\r\n"].concat();
            assert!(
                matches!(ResponseCodec::default().decode(&plain), Ok((b"", _))),
                "the server sent a LIST response imap-codec cannot read: {:?}",
                String::from_utf8_lossy(line)
            );
            rest = &rest[line.len()..];
            continue;
        }
        let fetch = line.starts_with(b"* ") && line.windows(8).any(|w| w == b" FETCH (");
        // imap-codec reads BODYSTRUCTURE only 6 deep (a client's limit, not IMAP's; the
        // session describes 32 levels).
        if fetch && (partial_binary || nesting(line) > 7) {
            return;
        }
        match line_end {
            Some(end) if hand_made && !line[..end - 2].iter().any(|&b| b == b'\r' || b == b'\n') => rest = &rest[end..],
            _ => panic!(
                "the server sent a response imap-codec cannot read ({error:?}): {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(600)])
            ),
        }
    }
}

/// The user the IMAP session is logged in as, and a second one.
pub const USER: &str = "ana@health.go.ke";
pub const PASSWORD: &str = "correct horse";
pub const OTHER_USER: &str = "ben@health.go.ke";

/// The messages in the user's INBOX, with their flags: plain text; a reply in a thread
/// (References, In-Reply-To, a list tag and `Re:`); encoded words and groups; multipart
/// with base64, quoted-printable and a NUL byte (literal8 for BINARY); an attached
/// message that is itself multipart beside a nested multipart.
pub const MESSAGES: &[(&str, &[&str])] = &[
    (
        "Date: Tue, 3 Mar 2026 09:15:00 +0300\r\nFrom: Ben <ben@health.go.ke>\r\nTo: ana@health.go.ke\r\n\
Subject: Clinic rota\r\nMessage-ID: <rota-1@health.go.ke>\r\n\r\nHello Ana,\r\nthe rota is attached.\r\n",
        &["\\Seen"],
    ),
    (
        "Date: Wed, 4 Mar 2026 10:00:00 +0000\r\nFrom: ana@health.go.ke\r\nTo: Ben <ben@health.go.ke>\r\n\
Cc: team: c@health.go.ke, \"D\" <d@health.go.ke>;, e@example.org\r\nSubject: Re: [rota] Fwd: Clinic rota (fwd)\r\n\
Message-ID: <rota-2@health.go.ke>\r\nIn-Reply-To: <rota-1@health.go.ke>\r\n\
References: <rota-0@health.go.ke>\r\n <rota-1@health.go.ke>\r\n\r\nThanks!\r\n",
        &["\\Answered", "$Forwarded"],
    ),
    (
        "Date: Thu, 5 Mar 2026 23:59:59 -1200\r\nFrom: =?UTF-8?B?QWNoaWVuZyDDmA==?= <achieng@example.org>\r\n\
To: undisclosed-recipients:;\r\nSubject: =?ISO-8859-1?Q?caf=E9?= menu\r\nX-Priority: 1\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\npreamble\r\n--outer\r\n\
Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
caf=E9 =\r\nau lait=3D1\r\n--alt\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n\
PHA+Y2Fmw6k8L3A+\r\n--alt--\r\n--outer\r\nContent-Type: application/octet-stream; name=\"zero.bin\"\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"zero.bin\"\r\n\r\nAAEC/w==\r\n\
--outer\r\nContent-Type: application/x-odd\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644\r\n\
--outer--\r\nepilogue\r\n",
        &["\\Flagged", "urgent"],
    ),
    (
        "From: a@x.org\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=\"A\"\r\n\r\n--A\r\n\
Content-Type: message/rfc822\r\n\r\nFrom: b@y.org\r\nSubject: inner\r\nX-Inner: 1\r\n\
Content-Type: multipart/alternative; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n\
--B\r\nContent-Type: text/html\r\n\r\n<p>inner html</p>\r\n--B--\r\n--A\r\n\
Content-Type: multipart/related; boundary=\"C\"\r\n\r\n--C\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<p>related</p>\r\n--C\r\nContent-Type: image/png\r\n\r\nPNG\0\r\n--C--\r\n--A--\r\n",
        &["\\Deleted"],
    ),
    ("Subject: no date, bare LF\n\nbody\n", &[]),
];
