//! The seam between the agent and the server: a unix socket carrying one JSON [`Change`] per
//! line, each answered by one JSON [`Ack`] line once the change is visible to queries.
//!
//! The agent sends a snapshot whenever it (re)connects, then deltas. When the agent goes away
//! (SIGKILL, upgrade, API outage) the server keeps answering from the last data it had;
//! the next snapshot replaces it. [`Feeder`] is the agent's side: it keeps its own copy of the
//! data, so it can send that snapshot (and its services, which a snapshot leaves alone) again
//! after the server restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::model::{Change, Data, Endpoint, Network};
use crate::services::Service;

/// Longest line accepted: a snapshot of 100,000 endpoints fits with room to spare.
pub const MAX_LINE: u64 = 256 << 20;

/// The server's answer to one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    /// Applied: queries see it from now on.
    Applied,
    /// Refused whole (nothing of it applied), with the reason.
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("feed socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("feed line is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the server closed the feed")]
    Closed,
    #[error("the server refused the change: {0}")]
    Invalid(String),
}

/// Read one line of at most [`MAX_LINE`] bytes; `None` at end of stream.
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Vec<u8>>, FeedError> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_LINE + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(FeedError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "feed line too long or cut short",
        )));
    }
    Ok(Some(line))
}

/// One connection to the server, one change at a time.
pub struct FeedConnection {
    stream: BufReader<UnixStream>,
}

impl FeedConnection {
    pub async fn connect(path: &Path) -> Result<Self, FeedError> {
        Ok(Self {
            stream: BufReader::new(UnixStream::connect(path).await?),
        })
    }

    /// Wait until the server closes the connection (it sends nothing unasked: anything it
    /// does send is taken as the end too). Cancel-safe, for a `select!` with the next change.
    pub async fn closed(&mut self) {
        let _ = self.stream.fill_buf().await;
    }

    /// Send `change` and wait until the server has applied it.
    pub async fn send(&mut self, change: &Change) -> Result<(), FeedError> {
        let mut line = serde_json::to_vec(change)?;
        line.push(b'\n');
        self.stream.get_mut().write_all(&line).await?;
        let reply = read_line(&mut self.stream)
            .await?
            .ok_or(FeedError::Closed)?;
        match serde_json::from_slice(&reply)? {
            Ack::Applied => Ok(()),
            Ack::Invalid(why) => Err(FeedError::Invalid(why)),
        }
    }
}

/// The agent's side: changes go into its copy of the data at once and reach the server
/// whenever it is up; every (re)connection starts with a snapshot of that copy, and its
/// services. It connects only once it has been given something (the first change, normally
/// `replace_all`), and resends only the parts it has been given (names, services), so a
/// starting agent never blanks the server. Clones share one connection: the agent's network
/// pass feeds names, its services loop the services.
#[derive(Clone)]
pub struct Feeder {
    tx: mpsc::UnboundedSender<Change>,
    synced: Arc<tokio::sync::watch::Sender<u64>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

/// Wait between connection attempts while the server is away.
const RECONNECT: Duration = Duration::from_millis(200);

impl Feeder {
    /// Start feeding the server at `path` (from a tokio runtime).
    pub fn spawn(path: PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (synced, _) = tokio::sync::watch::channel(0);
        let synced = Arc::new(synced);
        tokio::spawn(feed_loop(path, rx, synced.clone()));
        Self {
            tx,
            synced,
            sent: Arc::default(),
        }
    }

    fn push(&self, change: Change) {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // The loop lives as long as any Feeder: a send error cannot happen while we exist.
        let _ = self.tx.send(change);
    }

    pub fn replace_all(&self, networks: Vec<Network>, endpoints: Vec<Endpoint>) {
        self.push(Change::Snapshot {
            networks,
            endpoints,
        });
    }
    pub fn upsert_network(&self, network: Network) {
        self.push(Change::UpsertNetwork(network));
    }
    pub fn remove_network(&self, name: &str) {
        self.push(Change::RemoveNetwork { name: name.into() });
    }
    pub fn upsert_endpoint(&self, endpoint: Endpoint) {
        self.push(Change::UpsertEndpoint(endpoint));
    }
    pub fn remove_endpoint(&self, id: &str) {
        self.push(Change::RemoveEndpoint { id: id.into() });
    }
    pub fn replace_services(&self, services: Vec<Service>) {
        self.push(Change::ReplaceServices { services });
    }
    pub fn upsert_service(&self, service: Service) {
        self.push(Change::UpsertService(service));
    }
    pub fn remove_service(&self, id: &str) {
        self.push(Change::RemoveService { id: id.into() });
    }

    /// Wait until the server has every change pushed so far.
    pub async fn synced(&self) {
        let want = self.sent.load(std::sync::atomic::Ordering::SeqCst);
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|done| *done >= want).await;
    }
}

/// The parts of the data the feeder has been given so far: only those are resent on a
/// (re)connection (a snapshot of names never given would blank the last agent's).
#[derive(Default)]
struct Given {
    names: bool,
    services: bool,
}

impl Given {
    fn take(&mut self, data: &mut Data, change: Change) {
        match &change {
            Change::ReplaceServices { .. }
            | Change::UpsertService(_)
            | Change::RemoveService { .. } => self.services = true,
            _ => self.names = true,
        }
        // Our copy takes only what the server would: `apply` is all or nothing.
        let _ = data.apply(change);
    }

    /// What brings a (re)started server up to date with `data`.
    fn resend(&self, data: &Data) -> Vec<Change> {
        let mut out = Vec::new();
        if self.names {
            out.push(data.snapshot());
        }
        if self.services {
            out.push(Change::ReplaceServices {
                services: data.services.values().cloned().collect(),
            });
        }
        out
    }
}

async fn feed_loop(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Change>,
    synced: Arc<tokio::sync::watch::Sender<u64>>,
) {
    let mut data = Data::default();
    let mut given = Given::default();
    let mut taken = 0u64;
    // Nothing is sent before the first change: a snapshot of nothing would wipe what the
    // server answers from (the last agent's data) while the new agent is still starting.
    match rx.recv().await {
        Some(change) => {
            given.take(&mut data, change);
            taken += 1;
        }
        None => return,
    }
    'connect: loop {
        // Take in whatever is waiting, then bring the server up to date with one snapshot.
        while let Ok(change) = rx.try_recv() {
            given.take(&mut data, change);
            taken += 1;
        }
        let mut conn = match FeedConnection::connect(&path).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        while let Ok(change) = rx.try_recv() {
            given.take(&mut data, change);
            taken += 1;
        }
        for change in given.resend(&data) {
            match conn.send(&change).await {
                Ok(()) | Err(FeedError::Invalid(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "dns feed: snapshot failed, reconnecting");
                    tokio::time::sleep(RECONNECT).await;
                    continue 'connect;
                }
            }
        }
        synced.send_replace(taken);
        loop {
            // An idle feed still notices the server going away: its successor is resent the
            // data at once (its state file has no services), not at the next change.
            let change = tokio::select! {
                change = rx.recv() => match change {
                    Some(change) => change,
                    None => return,
                },
                () = conn.closed() => {
                    tracing::warn!("dns feed: server went away, reconnecting");
                    continue 'connect;
                }
            };
            given.take(&mut data, change.clone());
            taken += 1;
            match conn.send(&change).await {
                Ok(()) | Err(FeedError::Invalid(_)) => {
                    synced.send_replace(taken);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dns feed: server went away, reconnecting");
                    break;
                }
            }
        }
    }
}
