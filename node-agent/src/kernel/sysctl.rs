//! Per-namespace sysctls under `/proc/sys`, e.g. `net/ipv4/ip_forward`.
//!
//! Keys use `/` separators (not dots) because interface names may contain dots (`eth0.10`).
//! The files are opened from a thread inside the target netns: `/proc/sys/net` resolves
//! against the namespace of the opener.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::kernel::error::KernelError;
use crate::kernel::netns;
use crate::model::{Link, LinkKind, route_localnet_key};

/// Keys observed on every pass (the ones every Weft node needs).
pub const DEFAULT_KEYS: [&str; 2] = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"];

/// Per-interface keys observed on every pass for the owned links that may carry them (a
/// bridge's `route_localnet`), so an agent that restarts sees them set and writes nothing.
pub fn link_keys(owned: &BTreeMap<String, Link>) -> impl Iterator<Item = String> + '_ {
    owned
        .values()
        .filter(|l| l.kind == LinkKind::Bridge)
        .map(|l| route_localnet_key(&l.name))
}

/// Refuse keys that could escape `/proc/sys` or are not plain sysctl paths.
fn file_of(key: &str) -> Result<PathBuf, KernelError> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.' | '@' | ':'));
    if ok {
        Ok(Path::new("/proc/sys").join(key))
    } else {
        Err(KernelError::Invalid(format!(
            "sysctl key {key:?} is not a plain path under /proc/sys"
        )))
    }
}

/// Read the given keys; a key that does not exist (e.g. a per-interface key of a missing
/// link) is simply absent from the answer, so the diff sets it once the link exists.
pub(crate) async fn read(
    ns: Option<&Path>,
    keys: Vec<String>,
) -> Result<Vec<(String, String)>, KernelError> {
    netns::run_in(ns, move || {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let path = file_of(&key)?;
            match std::fs::read_to_string(&path) {
                Ok(v) => out.push((key, v.trim().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(KernelError::Sysctl {
                        key,
                        source: source.into(),
                    });
                }
            }
        }
        Ok(out)
    })
    .await
}

/// Write keys, all from one thread in the namespace (a thread per key made a thousand
/// bridges' `route_localnet` cost over a second of the cold start). One result per key, in
/// order.
pub(crate) async fn write(
    ns: Option<&Path>,
    settings: Vec<(String, String)>,
) -> Vec<Result<(), KernelError>> {
    let n = settings.len();
    let written = netns::run_in(ns, move || {
        Ok(settings
            .into_iter()
            .map(|(key, value)| {
                let path = file_of(&key)?;
                std::fs::write(&path, value.as_bytes()).map_err(|source| KernelError::Sysctl {
                    key,
                    source: source.into(),
                })
            })
            .collect::<Vec<_>>())
    })
    .await;
    match written {
        Ok(results) => results,
        Err(e) => vec![Err(e); n],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_proc_sys() {
        assert!(file_of("net/ipv4/ip_forward").is_ok());
        assert!(file_of("net/ipv4/conf/eth0.10/forwarding").is_ok());
        assert!(file_of("../etc/passwd").is_err());
        assert!(file_of("net/../../etc").is_err());
        assert!(file_of("/net/ipv4/ip_forward").is_err());
        assert!(file_of("net//ipv4").is_err());
        assert!(file_of("").is_err());
    }
}
