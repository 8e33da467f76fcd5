//! The receiving end of outbound webhooks in drills and tests: a small HTTP server on
//! loopback that records every POST (its `Idempotency-Key` and body) and answers 200,
//! after an optional delay (a slow receiver). It stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest request body accepted (webhook payloads here are short).
const MAX_BODY: usize = 1024 * 1024;
/// How long a request may take to arrive once its connection is open.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One webhook call as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub idempotency_key: String,
    pub body: String,
}

pub struct WebhookSink {
    /// Where to send the webhooks.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl WebhookSink {
    /// Listens on a free loopback port; each answer waits `delay` first.
    pub fn start(delay: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/webhook", listener.local_addr()?);
        let (received, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (recorded, stopping) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || serve(stream, delay, &recorded));
            }
        });
        Ok(Self { url, received, stop })
    }

    /// Every call received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("sink lock").clone()
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        if let Some(address) = self.url.strip_prefix("http://").and_then(|rest| rest.split('/').next()) {
            let _ = TcpStream::connect(address);
        }
    }
}

/// Reads one request, records it, and answers (one request per connection, so a
/// sender never reuses a connection the sink has let go).
fn serve(stream: TcpStream, delay: Duration, recorded: &Mutex<Vec<Received>>) {
    let Some(received) = read_request(&stream) else { return };
    recorded.lock().expect("sink lock").push(received);
    std::thread::sleep(delay);
    let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(stream);
    let (mut idempotency_key, mut length) = (String::new(), 0usize);
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    loop {
        line.clear();
        reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "idempotency-key" => idempotency_key = value.trim().to_string(),
                "content-length" => length = value.trim().parse().ok().filter(|&n| n <= MAX_BODY)?,
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received { idempotency_key, body: String::from_utf8_lossy(&body).into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_each_call_with_its_key() {
        let sink = WebhookSink::start(Duration::ZERO).unwrap();
        for (key, body) in [("k1", "first"), ("k2", "second")] {
            let response = ureq::post(&sink.url).set("Idempotency-Key", key).send_string(body).unwrap();
            assert_eq!(response.status(), 200);
        }
        let expected = [("k1", "first"), ("k2", "second")]
            .map(|(k, b)| Received { idempotency_key: k.into(), body: b.into() })
            .to_vec();
        assert_eq!(sink.received(), expected);
    }
}
