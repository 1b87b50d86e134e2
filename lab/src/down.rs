//! `weft-lab down`: removes everything the lab recorded, and any namespace of its prefix.

use std::process::Command;

use anyhow::{Context, Result, bail};
use weft_e2e::netns;

use crate::api::{delete_objects, reachable_client};
use crate::process::stop_processes;
use crate::state::ObjectRef;
use crate::{Lab, node_name};

/// `weft-lab down`: removes everything the lab recorded, and any namespace of its prefix.
pub async fn down(lab: &Lab) -> Result<()> {
    let state = lab.load()?;
    let mut did_something = false;
    if let Some(state) = &state {
        // Objects first, while the controller and agents still run to clean up after them.
        let client = match &state.kubeconfig {
            Some(kc) => reachable_client(kc).await,
            None => None,
        };
        match &client {
            Some(client) if !state.objects.is_empty() => {
                for line in delete_objects(client, &state.objects).await {
                    println!("{line}");
                }
                println!("deleted {} object(s) the lab applied", state.objects.len());
            }
            None if !state.objects.is_empty() && state.apiserver.is_none() => {
                println!("API server not reachable: not deleting the lab's objects");
            }
            _ => {}
        }
        for line in stop_processes(&state.processes) {
            println!("{line}");
            did_something = true;
        }
        // The agents are gone: their NetworkNodes can go too.
        if let Some(client) = &client {
            let nodes: Vec<ObjectRef> = (1..=state.nodes)
                .map(|i| ObjectRef {
                    kind: "NetworkNode".into(),
                    namespace: None,
                    name: node_name(i),
                })
                .collect();
            for line in delete_objects(client, &nodes).await {
                println!("{line}");
            }
        }
    }
    let mut namespaces: Vec<String> = state
        .as_ref()
        .map(|s| s.namespaces.clone())
        .unwrap_or_default();
    for ns in netns::list()? {
        if lab.owns_namespace(&ns) && !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
    }
    // Containers and nodes before the underlay.
    namespaces.reverse();
    for ns in &namespaces {
        if netns::exists(ns) {
            netns::delete(ns).with_context(|| format!("deleting network namespace {ns}"))?;
            println!("deleted network namespace {ns}");
            did_something = true;
        }
    }
    if let Some(api) = state.as_ref().and_then(|s| s.apiserver.as_ref()) {
        let down_sh = api.tools.join("down.sh");
        let status = Command::new(&down_sh)
            .arg(&api.dir)
            .arg("--purge")
            .status()
            .with_context(|| format!("running {}", down_sh.display()))?;
        if !status.success() {
            bail!(
                "{} {} --purge failed ({status})",
                down_sh.display(),
                api.dir.display()
            );
        }
        let _ = std::fs::remove_dir_all(&api.dir);
        println!("stopped the API server in {}", api.dir.display());
        did_something = true;
    }
    if state.is_some() {
        remove_state_dir(lab, state.as_ref().map_or(0, |s| s.nodes))?;
        println!("removed {}", lab.state_dir.display());
        did_something = true;
    }
    if !did_something {
        println!(
            "nothing to do: no lab {} is up (state dir {})",
            lab.prefix,
            lab.state_dir.display()
        );
    } else {
        println!("lab {} is down", lab.prefix);
    }
    Ok(())
}

/// Remove what the lab put into its state directory, then the directory if it is empty
/// (never anything else a user may keep there).
fn remove_state_dir(lab: &Lab, nodes: usize) -> Result<()> {
    let dir = &lab.state_dir;
    let mut subdirs = vec![dir.join("logs"), dir.join("apiserver")];
    subdirs.extend((1..=nodes).map(|i| dir.join(format!("n{i}"))));
    for sub in subdirs {
        if sub.exists() {
            std::fs::remove_dir_all(&sub).with_context(|| format!("removing {}", sub.display()))?;
        }
    }
    for file in ["state.json", "state.json.tmp"] {
        let path = dir.join(file);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
