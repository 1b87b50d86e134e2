//! The node's own resolvers, read from a resolv.conf (re-read when it changes).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// `nameserver` lines of a resolv.conf, as port-53 addresses (bad lines are skipped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped v6 address (`fe80::1%eth0`) names an interface we cannot use from here.
            let addr: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(addr, 53))
        })
        .collect()
}

/// The node's resolvers, kept current by [`NodeResolvers::watch`].
#[derive(Clone, Default)]
pub struct NodeResolvers(Arc<RwLock<Vec<SocketAddr>>>);

const RECHECK: Duration = Duration::from_secs(2);

impl NodeResolvers {
    pub fn get(&self) -> Vec<SocketAddr> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Read `path` now and again whenever its modification time changes.
    pub fn watch(path: PathBuf) -> Self {
        let me = Self::default();
        let mut seen: Option<SystemTime> = None;
        let reload = {
            let me = me.clone();
            move |seen: &mut Option<SystemTime>| {
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if modified.is_some() && modified == *seen {
                    return;
                }
                *seen = modified;
                let found = std::fs::read_to_string(&path)
                    .map(|t| parse_resolv_conf(&t))
                    .unwrap_or_default();
                if found.is_empty() {
                    tracing::warn!(path = %path.display(), "no nameserver to forward to");
                }
                *me.0.write().unwrap_or_else(|p| p.into_inner()) = found;
            }
        };
        reload(&mut seen);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECHECK).await;
                reload(&mut seen);
            }
        });
        me
    }
}
