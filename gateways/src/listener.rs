//! The accept loop every protocol listener runs: per-IP admission, one task per admitted
//! connection, and for a client over its limit the protocol's own "come back later"
//! line (SMTP `421`, IMAP `* BYE`) before the connection closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::limits::{IpLimiter, Refusal};

/// Why a client is turned away, in words for the refusal line.
pub fn refusal_text(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::TooManyConnections => "Too many connections from your address, try again later",
        Refusal::TooManyNewConnections => "Too many new connections from your address, try again later",
        Refusal::Misbehaving => "Too many failed commands or logins from your address, try again later",
        Refusal::Busy => "Too many connections, try again later",
        Refusal::Banned => "Your address is banned for abuse, try again later",
    }
}

/// Accepts connections forever: `serve` runs for each admitted one (its slot is freed
/// when it returns); a refused client gets `refusal_line` and is closed. The limiter is
/// the protocol's, shared with its sessions, which report offences to it.
pub async fn accept_loop<S, F, R>(
    listener: TcpListener,
    limiter: Arc<IpLimiter>,
    protocol: &'static str,
    refusal_line: R,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
    R: Fn(Refusal) -> Vec<u8>,
{
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: back off instead of spinning.
                warn!(protocol, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match limiter.admit(peer.ip(), Instant::now()) {
            Ok(permit) => {
                metrics::counter!("ums_gateway_connections_total", "protocol" => protocol).increment(1);
                let connection = serve(stream, peer);
                tokio::spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(refusal) => {
                metrics::counter!("ums_gateway_connections_refused_total", "protocol" => protocol).increment(1);
                debug!(protocol, %peer, ?refusal, "connection refused");
                let line = refusal_line(refusal);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&line)).await;
                });
            }
        }
    }
}
