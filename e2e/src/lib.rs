//! Test harness for Weft: everything a test needs to talk to a real Kubernetes API server.
//!
//! Tests take the API server from `KUBECONFIG` (CI provisions the upstream CRD API server
//! from `../shared/tools/apiserver/`; on a laptop any kind/k3d cluster works). Without it
//! they fail loudly instead of passing silently.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use weft_api::{AddressPool, ContainerEndpoint, ContainerNetwork, NetworkAllocation, NetworkNode};

pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod daemon;
pub mod names;
pub mod netns;
pub mod objects;
pub mod outage;
pub mod podman;
pub mod stats;
pub mod topology;

/// Field manager the harness applies objects with.
pub const TEST_MANAGER: &str = "weft-e2e";

/// A client for the API server named by `KUBECONFIG`, with Weft's CRDs installed and Established.
pub async fn connect() -> Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!(
            "KUBECONFIG is not set: these tests need a real Kubernetes API server. \
             Run `bash .ci/run`, or export KUBECONFIG=$(../shared/tools/apiserver/up.sh /tmp/k8s)"
        );
    }
    let client = Client::try_default()
        .await
        .context("building a client from KUBECONFIG")?;
    install_crds(&client).await?;
    Ok(client)
}

/// Server-side apply every CRD and wait until the API server serves them.
pub async fn install_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(TEST_MANAGER).force();
    for (_, crd) in weft_api::all_crds() {
        let name = crd.name_any();
        crds.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    for (_, crd) in weft_api::all_crds() {
        let name = crd.name_any();
        wait_for(Duration::from_secs(30), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            }
        })
        .await
        .with_context(|| format!("waiting for CRD {name} to be Established"))?;
    }
    Ok(())
}

/// Delete every Weft object, stripping finalizers, so each test starts from an empty cluster.
/// Tests that touch the API server run one at a time (see `.config/nextest.toml`).
pub async fn reset(client: &Client) -> Result<()> {
    purge_endpoints(client).await?;
    purge_services(client).await?;
    purge::<ContainerNetwork>(client).await?;
    purge::<NetworkAllocation>(client).await?;
    purge::<AddressPool>(client).await?;
    purge::<NetworkNode>(client).await?;
    Ok(())
}

/// Delete every ContainerEndpoint in every namespace, stripping finalizers.
async fn purge_endpoints(client: &Client) -> Result<()> {
    let all: Api<ContainerEndpoint> = Api::all(client.clone());
    for ep in all.list(&ListParams::default()).await? {
        let ns = ep.namespace().unwrap_or_default();
        let api: Api<ContainerEndpoint> = Api::namespaced(client.clone(), &ns);
        let name = ep.name_any();
        if !ep.finalizers().is_empty() {
            let patch = json!({"metadata": {"finalizers": null}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .ok();
        }
        api.delete(&name, &DeleteParams::default()).await.ok();
    }
    Ok(())
}

/// Delete every ContainerService in every namespace (they carry no finalizers).
async fn purge_services(client: &Client) -> Result<()> {
    let all: Api<weft_api::ContainerService> = Api::all(client.clone());
    for svc in all.list(&ListParams::default()).await? {
        let ns = svc.namespace().unwrap_or_default();
        let api: Api<weft_api::ContainerService> = Api::namespaced(client.clone(), &ns);
        api.delete(&svc.name_any(), &DeleteParams::default())
            .await
            .ok();
    }
    Ok(())
}

async fn purge<K>(client: &Client) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    for obj in api.list(&ListParams::default()).await? {
        let name = obj.name_any();
        if !obj.finalizers().is_empty() {
            let patch = json!({"metadata": {"finalizers": null}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .ok();
        }
        api.delete(&name, &DeleteParams::default()).await.ok();
    }
    wait_for(Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            Ok(api
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        }
    })
    .await
    .context("waiting for Weft objects to disappear")
}

/// `timeout` times `WEFT_TEST_PATIENCE` (a whole factor, default 1). The VM tier sets it: under
/// software emulation daemons start and react several times slower, and waiting for them is
/// not what the tests run there assert. Every wait of the harness goes through here.
pub fn patience(timeout: Duration) -> Duration {
    let factor = std::env::var("WEFT_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|f| *f >= 1)
        .unwrap_or(1);
    timeout * factor
}

/// Poll `check` every 20 ms until it returns `Some`, or fail after `timeout` (times
/// [`patience`]).
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let timeout = patience(timeout);
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            match last_err {
                Some(e) => bail!("timed out after {timeout:?}; last error: {e:#}"),
                None => bail!("timed out after {timeout:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Send a raw object (exactly this JSON, no Rust types in between) to the API server.
/// Returns the stored object, or the API server's error message on refusal.
pub async fn create_raw<K>(
    client: &Client,
    value: serde_json::Value,
) -> Result<DynamicObject, String>
where
    K: Resource<DynamicType = ()>,
{
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<K>(&()));
    let obj: DynamicObject =
        serde_json::from_value(value).map_err(|e| format!("test object does not parse: {e}"))?;
    api.create(&Default::default(), &obj)
        .await
        .map_err(api_error_text)
}

/// Like [`create_raw`] for a namespaced kind (the test API server needs no Namespace object).
pub async fn create_raw_namespaced<K>(
    client: &Client,
    namespace: &str,
    value: serde_json::Value,
) -> Result<DynamicObject, String>
where
    K: Resource<DynamicType = ()>,
{
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<K>(&()));
    let obj: DynamicObject =
        serde_json::from_value(value).map_err(|e| format!("test object does not parse: {e}"))?;
    api.create(&Default::default(), &obj)
        .await
        .map_err(api_error_text)
}

/// Like [`patch_spec_raw`] for a namespaced kind.
pub async fn patch_spec_raw_namespaced<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<DynamicObject, String>
where
    K: Resource<DynamicType = ()>,
{
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<K>(&()));
    let patch = json!({"spec": spec});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_error_text)
}

/// Replace an object's spec with exactly this JSON; returns the API server's error message on refusal.
pub async fn patch_spec_raw<K>(
    client: &Client,
    name: &str,
    spec: serde_json::Value,
) -> Result<DynamicObject, String>
where
    K: Resource<DynamicType = ()>,
{
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<K>(&()));
    let patch = json!({"spec": spec});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_error_text)
}

/// The message a person would read from `kubectl`, for an API error.
pub fn api_error_text(e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}
