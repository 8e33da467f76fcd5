//! The receiving end of the drill's outbound items: a small HTTP server on loopback that
//! records every webhook delivery (its `Idempotency-Key` and its payload, the item's
//! reference) and answers 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outbound::Delivery;

/// Largest request accepted (the drill's payloads are short references).
const MAX_REQUEST: u64 = 64 * 1024;

pub struct Sink {
    pub url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/drill-webhook", listener.local_addr()?);
        let (deliveries, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (recorded, stopping) = (Arc::clone(&deliveries), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || {
                    if let Some(delivery) = serve(stream) {
                        recorded.lock().unwrap().push(delivery);
                    }
                });
            }
        });
        Ok(Self { url, deliveries, stop })
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        if let Some(address) = self.url.strip_prefix("http://").and_then(|rest| rest.split('/').next()) {
            let _ = TcpStream::connect(address);
        }
    }
}

/// Reads one request and answers it; the delivery if it was a well-formed POST.
fn serve(stream: TcpStream) -> Option<Delivery> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?.take(MAX_REQUEST));
    let (mut key, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "idempotency-key" => key = value.trim().to_string(),
                "content-length" => length = value.trim().parse().ok()?,
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(Delivery { client_ref: String::from_utf8_lossy(&body).into_owned(), idempotency_key: key })
}
