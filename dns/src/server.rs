//! The sockets: UDP and TCP listeners on every gateway address of the data (and at
//! 127.0.0.11 inside sandboxes that have a namespace path), opened and closed as the data
//! changes.
//!
//! Every socket is bound with IP_FREEBIND (an address the agent has not configured yet still
//! binds; packets arrive once it exists) and SO_REUSEPORT (a new server process binds beside
//! the old one, so an upgrade never leaves the port closed).
//!
//! A server told to go ([`Server::retirer`]) first leaves its UDP sockets' SO_REUSEPORT
//! groups, by connecting each socket to its own address: the kernel never picks a connected
//! socket for another peer's datagram, so new queries go to the successor bound beside it,
//! while the ones already queued here are still read and answered. Closing at once would
//! drop that queue (a query lost per upgrade, now and then).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::answer::{Outcome, Reply, respond, respond_into};
use crate::batch::{BATCH, Batch};
use crate::forward::{Forwarder, resolve};
use crate::model::Via;
use crate::store::Store;
use crate::upstream::NodeResolvers;

/// The address Docker answers at inside a sandbox.
pub const IN_SANDBOX: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));

#[derive(Clone, Debug)]
pub struct Limits {
    pub port: u16,
    pub ttl: u32,
    /// TCP connections open at once; more are closed at once.
    pub max_tcp: usize,
    /// A TCP connection idle this long (or slow to send a whole query) is closed.
    pub tcp_idle: Duration,
}

/// Everything a listener needs to answer.
#[derive(Clone)]
pub struct Server {
    pub store: Arc<Store>,
    pub limits: Limits,
    pub node_resolvers: NodeResolvers,
    pub forwarder: Forwarder,
    tcp_slots: Arc<Semaphore>,
    /// `true` once the process is going: see the module's comment.
    retiring: Arc<watch::Sender<bool>>,
}

/// Queries one TCP connection may carry before it is closed.
const QUERIES_PER_TCP: usize = 100;
/// Retry listeners that failed to open (a namespace not there yet) this often.
const RETRY: Duration = Duration::from_secs(5);

pub fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    Ok(bound(addr, Type::DGRAM, Protocol::UDP)?.into())
}

pub fn tcp_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = bound(addr, Type::STREAM, Protocol::TCP)?;
    s.listen(128)?;
    Ok(s.into())
}

fn bound(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

impl Server {
    pub fn new(
        store: Arc<Store>,
        limits: Limits,
        node_resolvers: NodeResolvers,
        max_forwards: usize,
    ) -> Self {
        Self {
            tcp_slots: Arc::new(Semaphore::new(limits.max_tcp)),
            store,
            limits,
            node_resolvers,
            forwarder: Forwarder::new(max_forwards),
            retiring: Arc::new(watch::Sender::new(false)),
        }
    }

    /// What tells the listeners the process is going (send `true`, then give the queued
    /// queries a moment before exiting).
    pub fn retirer(&self) -> Arc<watch::Sender<bool>> {
        self.retiring.clone()
    }

    /// Keep one listener pair per wanted address for ever, following the data.
    /// `cluster`: addresses for cluster DNS ([`Via::Cluster`]).
    pub async fn run(self, cluster: Vec<IpAddr>) {
        let mut open: HashMap<Via, JoinSet<()>> = HashMap::new();
        let mut changes = self.store.subscribe();
        loop {
            let index = self.store.index();
            let mut wanted: HashMap<Via, Option<std::path::PathBuf>> = index
                .gateway_addresses()
                .map(|a| (Via::Gateway(a), None))
                .chain(cluster.iter().map(|a| (Via::Cluster(*a), None)))
                .collect();
            for (sandbox, path) in &index.sandbox_netns {
                wanted.insert(Via::Sandbox(sandbox.clone()), Some(path.clone()));
            }
            // Not kept across the wait below: a superseded index would stay in memory.
            drop(index);
            // Dropping a JoinSet aborts its tasks, which closes their sockets.
            open.retain(|via, _| wanted.contains_key(via));
            for (via, netns) in wanted {
                if open.contains_key(&via) {
                    continue;
                }
                match self.open(&via, netns.as_deref()) {
                    Ok(tasks) => {
                        tracing::info!(?via, "listening");
                        open.insert(via, tasks);
                    }
                    Err(e) => tracing::warn!(?via, error = %e, "cannot listen (will retry)"),
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    fn open(&self, via: &Via, netns: Option<&std::path::Path>) -> std::io::Result<JoinSet<()>> {
        let (udp, tcp) = match (via, netns) {
            (Via::Gateway(a) | Via::Cluster(a), _) => {
                let addr = SocketAddr::new(*a, self.limits.port);
                (udp_socket(addr)?, tcp_socket(addr)?)
            }
            (Via::Sandbox(_), Some(path)) => {
                crate::netns::bind_inside(path, SocketAddr::new(IN_SANDBOX, self.limits.port))?
            }
            (Via::Sandbox(_), None) => return Err(std::io::Error::other("no namespace path")),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(
            self.clone()
                .serve_udp(UdpSocket::from_std(udp)?, via.clone()),
        );
        tasks.spawn(
            self.clone()
                .serve_tcp(TcpListener::from_std(tcp)?, via.clone()),
        );
        Ok(tasks)
    }

    async fn serve_udp(self, sock: UdpSocket, via: Via) {
        let sock = Arc::new(sock);
        // A sandbox's own listener hears one sandbox: a few at a time is plenty, and a node
        // may have hundreds of them.
        let mut batch = Batch::new(match via {
            Via::Sandbox(_) => 4,
            Via::Gateway(_) | Via::Cluster(_) => BATCH,
        });
        let mut retiring = self.retiring.subscribe();
        let mut retired = false;
        loop {
            let received = tokio::select! {
                received = sock.async_io(Interest::READABLE, || batch.receive(sock.as_fd())) => received,
                _ = retiring.changed(), if !retired => {
                    retired = true;
                    leave_reuseport_group(&sock, &via).await;
                    continue;
                }
            };
            let Ok(received) = received else {
                continue;
            };
            // One index for the whole batch: a change lands between batches.
            let index = self.store.index();
            for i in 0..received {
                let mut answer = std::mem::take(&mut batch.answers[i]);
                let (packet, peer) = batch.query(i);
                let Some(peer) = peer else { continue };
                let outcome = respond_into(
                    &index,
                    &via,
                    peer.ip(),
                    packet,
                    self.limits.ttl,
                    false,
                    &mut answer,
                );
                if let Outcome::Forward(resolvers) = outcome {
                    answer.clear();
                    self.forward(&sock, packet, peer, resolvers);
                } else if outcome == Outcome::Drop {
                    answer.clear();
                }
                batch.answers[i] = answer;
            }
            drop(index);
            let mut done = 0;
            while done < received {
                match sock
                    .async_io(Interest::WRITABLE, || batch.send(sock.as_fd(), done))
                    .await
                {
                    Ok(sent) => done += sent,
                    // This answer's destination failed (unreachable, say): skip it.
                    Err(_) => done += 1,
                }
            }
        }
    }

    /// Forward `packet` in a task of its own, or answer SERVFAIL when too many are waiting.
    fn forward(
        &self,
        sock: &Arc<UdpSocket>,
        packet: &[u8],
        peer: SocketAddr,
        resolvers: Option<Vec<SocketAddr>>,
    ) {
        let Some(slot) = self.forwarder.slot() else {
            if let Some(fail) = crate::answer::server_failure(packet) {
                let _ = sock.try_send_to(&fail, peer);
            }
            return;
        };
        let resolvers = resolvers.unwrap_or_else(|| self.node_resolvers.get());
        let (sock, query) = (sock.clone(), packet.to_vec());
        tokio::spawn(async move {
            if let Some(answer) = resolve(&query, &resolvers, false).await {
                let _ = sock.send_to(&answer, peer).await;
            }
            drop(slot);
        });
    }

    async fn serve_tcp(self, listener: TcpListener, via: Via) {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                // Out of descriptors, say: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // Full: close at once rather than queue (a flood of idle connections costs nothing).
            let Ok(slot) = self.tcp_slots.clone().try_acquire_owned() else {
                continue;
            };
            let (me, via) = (self.clone(), via.clone());
            tokio::spawn(async move {
                let _ = me.serve_connection(stream, peer.ip(), &via).await;
                drop(slot);
            });
        }
    }

    async fn serve_connection(
        &self,
        mut stream: TcpStream,
        peer: IpAddr,
        via: &Via,
    ) -> std::io::Result<()> {
        for _ in 0..QUERIES_PER_TCP {
            let idle = self.limits.tcp_idle;
            let Ok(len) = timeout(idle, stream.read_u16()).await else {
                return Ok(());
            };
            let mut query = vec![0u8; usize::from(len?)];
            // A query cut short (or dribbled out) is dropped with the connection.
            timeout(idle, stream.read_exact(&mut query))
                .await
                .map_err(std::io::Error::other)??;
            let reply = respond(
                &self.store.index(),
                via,
                peer,
                &query,
                self.limits.ttl,
                true,
            );
            let answer = match reply {
                Reply::Answer(bytes) => bytes,
                Reply::Forward(resolvers) => {
                    let resolvers = resolvers.unwrap_or_else(|| self.node_resolvers.get());
                    let answer = match self.forwarder.slot() {
                        Some(_slot) => resolve(&query, &resolvers, true).await,
                        None => crate::answer::server_failure(&query),
                    };
                    let Some(answer) = answer else { return Ok(()) };
                    answer
                }
                Reply::Drop => return Ok(()),
            };
            let len = u16::try_from(answer.len()).map_err(std::io::Error::other)?;
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            timeout(idle, stream.write_all(&framed))
                .await
                .map_err(std::io::Error::other)??;
        }
        Ok(())
    }
}

/// Connect `sock` to its own address: it stays open for what is queued, and the kernel's
/// SO_REUSEPORT lookup passes it over for every other peer from now on.
async fn leave_reuseport_group(sock: &UdpSocket, via: &Via) {
    let left = match sock.local_addr() {
        Ok(own) => sock.connect(own).await,
        Err(e) => Err(e),
    };
    match left {
        Ok(()) => tracing::debug!(?via, "retiring: new queries go to the successor"),
        Err(e) => tracing::warn!(?via, error = %e, "retiring: cannot leave the port group"),
    }
}
