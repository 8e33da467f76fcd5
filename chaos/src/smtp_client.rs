//! A minimal SMTP client for the drill workload, which must tell apart what a library
//! hides: a failure before the final dot (nothing can have been stored), a 250 (stored
//! exactly once), and silence after the dot (the message may or may not be stored).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::history::Outcome;

/// An open SMTP session with one node.
pub struct SmtpClient {
    node: u64,
    reader: BufReader<TcpStream>,
}

impl SmtpClient {
    /// Connects and greets; fails if the node does not answer like an SMTP server.
    pub fn connect(node: u64, address: &str) -> std::io::Result<Self> {
        let address = address.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::other("no address"))?;
        let stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut client = Self { node, reader: BufReader::new(stream) };
        client.expect(220)?;
        client.command("EHLO chaos.example", 250)?;
        Ok(client)
    }

    pub fn node(&self) -> u64 {
        self.node
    }

    /// One transaction; the session stays usable only after [`Outcome::Accepted`].
    pub fn send(&mut self, from: &str, to: &str, message: &str) -> Outcome {
        let before_data = self
            .command(&format!("MAIL FROM:<{from}>"), 250)
            .and_then(|_| self.command(&format!("RCPT TO:<{to}>"), 250))
            .and_then(|_| self.command("DATA", 354));
        if let Err(e) = before_data {
            return Outcome::Failed { reason: format!("SMTP before DATA: {e}") };
        }
        // The message has no line starting with a dot, so it needs no dot-stuffing.
        if let Err(e) = self.reader.get_mut().write_all(format!("{message}.\r\n").as_bytes()) {
            return Outcome::Unknown { reason: format!("SMTP while sending the message: {e}") };
        }
        match self.reply() {
            Ok((250, _)) => Outcome::Accepted,
            Ok((code, text)) if code >= 500 => Outcome::Failed { reason: format!("SMTP {code} {text}") },
            // 4xx: a delivery that timed out may still commit; the client would retry.
            Ok((code, text)) => Outcome::Unknown { reason: format!("SMTP {code} {text}") },
            Err(e) => Outcome::Unknown { reason: format!("SMTP after the message: {e}") },
        }
    }

    fn command(&mut self, line: &str, expected: u16) -> std::io::Result<()> {
        self.reader.get_mut().write_all(format!("{line}\r\n").as_bytes())?;
        self.expect(expected)
    }

    fn expect(&mut self, expected: u16) -> std::io::Result<()> {
        match self.reply()? {
            (code, _) if code == expected => Ok(()),
            (code, text) => Err(std::io::Error::other(format!("{code} {text}"))),
        }
    }

    /// One (possibly multi-line) reply: its code and last line's text.
    fn reply(&mut self) -> std::io::Result<(u16, String)> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad reply: {line:?}")))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line.get(4..).unwrap_or_default().trim().to_string()));
            }
        }
    }
}
