//! The node's record of its attachments: one small JSON file per endpoint under
//! `<state-dir>/endpoints/`, written (temp file + rename, so never half) before the kernel
//! is touched and removed after the endpoint is gone. Like the CNI `host-local` plugin's
//! files, it lets a restarted agent know every address it handed out, including those whose
//! ContainerEndpoint had not reached the API yet.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Attachment, EndpointId};

pub struct Journal {
    dir: PathBuf,
}

/// A CNI DEL's record until the endpoint's object has left the API: which endpoint, and the
/// address its object still shows, held until then (the file of an earlier version, the
/// id alone, reads as holding nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneRecord {
    #[serde(flatten)]
    pub id: EndpointId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldAddress>,
}

/// An address kept from other endpoints for a detached one whose object still shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldAddress {
    pub network: String,
    pub network_uid: String,
    pub address: std::net::IpAddr,
}

impl Journal {
    /// Opens (and creates) `<state_dir>/endpoints`.
    pub fn open(state_dir: &Path) -> std::io::Result<Journal> {
        let dir = state_dir.join("endpoints");
        std::fs::create_dir_all(&dir)?;
        Ok(Journal { dir })
    }

    fn path(&self, id: &EndpointId) -> PathBuf {
        // Namespaces and names are DNS labels/subdomains; anything else is escaped so a
        // name can never leave the directory.
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') {
                        c.to_string()
                    } else {
                        format!("%{:02x}", u32::from(c))
                    }
                })
                .collect()
        };
        self.dir
            .join(format!("{}_{}.json", clean(&id.namespace), clean(&id.name)))
    }

    pub fn save(&self, att: &Attachment) -> std::io::Result<()> {
        let path = self.path(&att.id);
        let tmp = path.with_extension("tmp");
        let data = serde_json::to_vec(att).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        drop(f);
        std::fs::rename(&tmp, &path)
    }

    pub fn remove(&self, id: &EndpointId) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Remember that an endpoint was detached through CNI until its ContainerEndpoint has
    /// left the API, so a restarted agent does not attach it again from the object, nor
    /// give the address the object still shows to another endpoint.
    pub fn save_tombstone(&self, record: &TombstoneRecord) -> std::io::Result<()> {
        let path = self.path(&record.id).with_extension("deleted");
        let data = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        std::fs::write(path, data)
    }

    pub fn remove_tombstone(&self, id: &EndpointId) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id).with_extension("deleted")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    pub fn load_tombstones(&self) -> Vec<TombstoneRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("deleted"))
            .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
            .collect()
    }

    /// Every readable record; unreadable files are reported and skipped (the API status
    /// still has those endpoints).
    pub fn load(&self) -> Vec<Attachment> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Attachment>(&b).map_err(|e| e.to_string()))
            {
                Ok(a) => out.push(a),
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "skipping unreadable endpoint record")
                }
            }
        }
        out.sort_by_key(|a| a.since);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mac;

    fn attachment(name: &str, since: u64) -> Attachment {
        Attachment {
            id: EndpointId {
                namespace: "default".into(),
                name: name.into(),
            },
            network: "n".into(),
            network_uid: "u".into(),
            sandbox: "/var/run/netns/x".into(),
            if_name: "eth0".into(),
            address: Some("10.0.0.2/24".parse().expect("net")),
            gateway: None,
            mac: Some(Mac([2, 0x42, 10, 0, 0, 2])),
            publish: Vec::new(),
            cni: None,
            since,
            requested_address: None,
            requested_mac: None,
            in_api: true,
            gw_priority: 0,
            replace_default_route: false,
            mirror: None,
            names: Default::default(),
        }
    }

    #[test]
    fn save_load_remove() {
        let dir = std::env::temp_dir().join(format!("weft-journal-{}", std::process::id()));
        let j = Journal::open(&dir).expect("open");
        j.save(&attachment("b", 2)).expect("save");
        j.save(&attachment("a/../../x", 1)).expect("save odd name");
        let loaded = j.load();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0], attachment("a/../../x", 1));
        std::fs::write(dir.join("endpoints/broken.json"), b"{").expect("write");
        assert_eq!(j.load().len(), 2);
        j.remove(&attachment("b", 2).id).expect("remove");
        j.remove(&attachment("b", 2).id).expect("remove twice");
        assert_eq!(j.load().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
