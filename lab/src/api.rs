//! The API server as the lab sees it: a client for a KUBECONFIG, and the objects it applies
//! (recorded before they are applied) and deletes again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use weft_e2e::objects::{dynamic_api, weft_kind};

use crate::MANAGER;
use crate::state::ObjectRef;

/// A client for this KUBECONFIG value (one path or a list), with short timeouts.
pub async fn client_for(kubeconfig: &str) -> Result<Client> {
    let paths: Vec<PathBuf> = std::env::split_paths(kubeconfig)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    if paths.is_empty() {
        bail!("empty KUBECONFIG");
    }
    let mut merged = Kubeconfig::default();
    for p in &paths {
        let kc = Kubeconfig::read_from(p)
            .with_context(|| format!("reading kubeconfig {}", p.display()))?;
        merged = merged.merge(kc).context("merging kubeconfigs")?;
    }
    let mut config = Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {kubeconfig}"))?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(15));
    Client::try_from(config).context("building a Kubernetes client")
}

/// A client, if the API server answers within a few seconds.
pub async fn reachable_client(kubeconfig: &str) -> Option<Client> {
    let client = client_for(kubeconfig).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
        Ok(Ok(_)) => Some(client),
        _ => None,
    }
}

/// What to record for an object before applying it (so `down` finds it even if `up` stops
/// right after the API server stored it).
pub fn object_ref(value: &Value) -> Result<ObjectRef> {
    let kind = value["kind"].as_str().context("object without kind")?;
    let name = value["metadata"]["name"]
        .as_str()
        .context("object without metadata.name")?;
    let (_, namespaced) = weft_kind(kind).with_context(|| format!("{kind} is not a Weft kind"))?;
    let namespace = namespaced.then(|| {
        value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    });
    Ok(ObjectRef {
        kind: kind.to_string(),
        namespace,
        name: name.to_string(),
    })
}

/// Server-side apply one object given as JSON.
pub async fn apply(client: &Client, obj: &ObjectRef, value: &Value) -> Result<()> {
    let api = dynamic_api(client, &obj.kind, obj.namespace.as_deref())?;
    api.patch(
        &obj.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(|e| anyhow::anyhow!(weft_e2e::api_error_text(e)))
    .with_context(|| format!("applying {} {}", obj.kind, obj.name))?;
    Ok(())
}

/// Delete the recorded objects (last applied first); strip finalizers of what is still
/// there after a few seconds.
pub async fn delete_objects(client: &Client, objects: &[ObjectRef]) -> Vec<String> {
    let mut report = Vec::new();
    let mut pending = Vec::new();
    for obj in objects.iter().rev() {
        let Ok(api) = dynamic_api(client, &obj.kind, obj.namespace.as_deref()) else {
            continue;
        };
        match api.delete(&obj.name, &DeleteParams::default()).await {
            Ok(_) => pending.push((api, obj)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => report.push(format!("could not delete {} {}: {e}", obj.kind, obj.name)),
        }
    }
    for round in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(if round == 0 { 5 } else { 3 });
        loop {
            let mut left = Vec::new();
            for (api, obj) in pending {
                if matches!(api.get_opt(&obj.name).await, Ok(Some(_))) {
                    left.push((api, obj));
                }
            }
            pending = left;
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if pending.is_empty() || round == 1 {
            break;
        }
        for (api, obj) in &pending {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(&obj.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            report.push(format!(
                "removed the finalizers of {} {}",
                obj.kind, obj.name
            ));
        }
    }
    for (_, obj) in &pending {
        report.push(format!("{} {} is still there", obj.kind, obj.name));
    }
    report
}
