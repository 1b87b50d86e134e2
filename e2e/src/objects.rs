//! Weft's kinds as dynamic APIs, and the example objects of `examples/`: what the tests and
//! `weft-lab` both apply as plain JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::Value;

/// Weft's kinds: kind → (resource, namespaced), from the CRDs this binary carries.
pub fn weft_kind(kind: &str) -> Option<(ApiResource, bool)> {
    weft_api::all_crds().into_iter().find_map(|(_, crd)| {
        (crd.spec.names.kind == kind).then(|| {
            let version = crd
                .spec
                .versions
                .iter()
                .find(|v| v.storage)
                .or(crd.spec.versions.first())
                .map(|v| v.name.clone())
                .unwrap_or_default();
            let ar = ApiResource {
                group: crd.spec.group.clone(),
                api_version: format!("{}/{version}", crd.spec.group),
                version,
                kind: crd.spec.names.kind.clone(),
                plural: crd.spec.names.plural.clone(),
            };
            (ar, crd.spec.scope == "Namespaced")
        })
    })
}

/// A dynamic API for a Weft kind (namespace `default` for namespaced kinds unless given).
pub fn dynamic_api(
    client: &Client,
    kind: &str,
    namespace: Option<&str>,
) -> Result<Api<DynamicObject>> {
    let (ar, namespaced) = weft_kind(kind).with_context(|| format!("{kind} is not a Weft kind"))?;
    Ok(match (namespaced, namespace) {
        (true, ns) => Api::namespaced_with(client.clone(), ns.unwrap_or("default"), &ar),
        (false, _) => Api::all_with(client.clone(), &ar),
    })
}

/// Every object in the YAML files of `dir` (multi-document files allowed), pools first.
pub fn read_examples(dir: &Path) -> Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", file.display()))?;
        for doc in docs.into_iter().filter(Value::is_object) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if weft_kind(kind).is_none() {
                bail!(
                    "{}: {kind:?} is not a Weft kind (only weft.dev objects are applied)",
                    file.display()
                );
            }
            if doc["metadata"]["name"].as_str().is_none() {
                bail!("{}: a {kind} without metadata.name", file.display());
            }
            objects.push(doc);
        }
    }
    // AddressPools first: networks that take their subnet from a pool need it.
    objects.sort_by_key(|o| match o["kind"].as_str() {
        Some("AddressPool") => 0,
        Some("ContainerNetwork") => 1,
        _ => 2,
    });
    Ok(objects)
}
