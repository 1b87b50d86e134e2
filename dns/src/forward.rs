//! Queries that are not Weft names go to upstream resolvers, each from its own socket (a
//! fresh random port per query, answers only from the resolver asked), at most
//! `max` at a time: beyond that the query gets SERVFAIL rather than a growing queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

use crate::answer::{server_failure, truncated};

/// How long one resolver gets before the next one is asked.
const PER_RESOLVER: Duration = Duration::from_secs(2);
/// Longest upstream answer taken over UDP (dnsmasq's old default `edns-packet-max`).
const UDP_ANSWER: usize = 4096;
/// Resolvers asked per query at most (resolv.conf's own limit).
const MAX_TRIES: usize = 3;

#[derive(Clone)]
pub struct Forwarder {
    slots: Arc<Semaphore>,
}

impl Forwarder {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    /// A slot for one forwarded query, or `None` when `max` are already waiting.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// The first resolver's answer to `query`, or SERVFAIL when none answers.
pub async fn resolve(query: &[u8], resolvers: &[SocketAddr], tcp: bool) -> Option<Vec<u8>> {
    for r in resolvers.iter().take(MAX_TRIES) {
        let asked = if tcp {
            timeout(PER_RESOLVER, over_tcp(query, *r)).await
        } else {
            timeout(PER_RESOLVER, over_udp(query, *r)).await
        };
        match asked {
            Ok(Ok(answer)) if answers(query, &answer) => return Some(answer),
            Ok(Ok(_)) => tracing::debug!(resolver = %r, "answer does not match the query"),
            Ok(Err(e)) => tracing::debug!(resolver = %r, error = %e, "resolver failed"),
            Err(_) => tracing::debug!(resolver = %r, "resolver timed out"),
        }
    }
    server_failure(query)
}

/// Same id, and a response.
fn answers(query: &[u8], answer: &[u8]) -> bool {
    answer.len() >= 12 && answer[..2] == query[..2] && answer[2] & 0x80 != 0
}

async fn over_udp(query: &[u8], resolver: SocketAddr) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if resolver.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(std::io::Error::other)?;
    let sock = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone but the resolver.
    sock.connect(resolver).await?;
    sock.send(query).await?;
    // 1,024 waiting forwards hold 4 MiB, not 64; a longer answer is cut by the kernel and
    // replaced by a truncated one, so the client asks again over TCP.
    let mut buf = vec![0u8; UDP_ANSWER];
    let n = sock.recv(&mut buf).await?;
    if n == UDP_ANSWER {
        return truncated(query).ok_or_else(|| std::io::Error::other("unreadable query"));
    }
    buf.truncate(n);
    Ok(buf)
}

async fn over_tcp(query: &[u8], resolver: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(resolver).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}
