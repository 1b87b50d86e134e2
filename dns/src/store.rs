//! The server's side of the feed: the fed [`Data`], the [`Index`] queries read, and the
//! state file that lets a new server process answer before the agent reconnects to it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::feed::{Ack, read_line};
use crate::model::{Change, Data, Index};

pub struct Store {
    data: Mutex<Data>,
    index: RwLock<Arc<Index>>,
    /// Bumped after each applied change (listeners and the state file follow it).
    version: watch::Sender<u64>,
}

impl Store {
    pub fn new(data: Data) -> Arc<Self> {
        let index = Index::build(&data);
        Arc::new(Self {
            data: Mutex::new(data),
            index: RwLock::new(Arc::new(index)),
            version: watch::channel(0).0,
        })
    }

    /// The current index; a query keeps the version it started with.
    pub fn index(&self) -> Arc<Index> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Apply one change whole and publish the new index, or refuse it whole.
    pub fn apply(&self, change: Change) -> Ack {
        let mut data = self.data.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = data.apply(change) {
            return Ack::Invalid(e.to_string());
        }
        let index = Arc::new(Index::build(&data));
        drop(data);
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
        self.version.send_modify(|v| *v += 1);
        Ack::Applied
    }

    fn snapshot(&self) -> Change {
        self.data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot()
    }
}

/// Return the heap freed by the old index and the parsed change to the system: glibc keeps
/// it otherwise, and the node's memory figure would count two indexes for ever.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Accept agents on `listener` for ever; each connection is a snapshot then deltas. The
/// connections end with this future.
pub async fn serve_feed(listener: UnixListener, store: Arc<Store>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        // Reap the finished ones, so a feeder reconnecting for days grows nothing.
        while connections.try_join_next().is_some() {}
        let store = store.clone();
        connections.spawn(async move {
            let mut stream = BufReader::new(stream);
            // A broken or closed feed ends here; the data stays as it was.
            while let Ok(Some(line)) = read_line(&mut stream).await {
                let ack = match serde_json::from_slice::<Change>(&line) {
                    // Built off the runtime's one thread, which keeps answering meanwhile
                    // (10,000 endpoints take tens of ms).
                    Ok(change) => {
                        let store = store.clone();
                        match tokio::task::spawn_blocking(move || store.apply(change)).await {
                            Ok(ack) => ack,
                            Err(e) => Ack::Invalid(format!("applying failed: {e}")),
                        }
                    }
                    Err(e) => Ack::Invalid(e.to_string()),
                };
                let Ok(mut reply) = serde_json::to_vec(&ack) else {
                    break;
                };
                reply.push(b'\n');
                drop(line);
                give_back_freed_memory();
                if stream.get_mut().write_all(&reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Load a state file written by [`persist`]; a missing one is empty data.
pub fn load(path: &Path) -> anyhow::Result<Data> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Data::default()),
        Err(e) => return Err(e.into()),
    };
    let mut data = Data::default();
    data.apply(serde_json::from_slice(&bytes)?)?;
    Ok(data)
}

/// At most this often the state file is rewritten (changes in between are coalesced).
const PERSIST_EVERY: Duration = Duration::from_millis(500);

/// Keep `path` holding the latest data (written aside, then renamed: never half a file).
pub async fn persist(store: Arc<Store>, path: PathBuf) {
    let mut changes = store.subscribe();
    while changes.changed().await.is_ok() {
        tokio::time::sleep(PERSIST_EVERY).await;
        changes.borrow_and_update();
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&store.snapshot())
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the state file");
        }
    }
}
