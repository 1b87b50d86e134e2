//! Benchmark: N ContainerNetworks (default 1,000) created at once → all Ready, on the real
//! API server named by KUBECONFIG, with the real weft-controller binary.
//!
//!     KUBECONFIG=... cargo bench -p weft-controller --bench scale [-- 1000]
//!
//! Prints wall time from the first create to the last Ready, and the controller's peak RSS
//! (VmHWM). It deletes every Weft object in the cluster first and last.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use weft_api::condition::is_true;
use weft_api::{AddressPool, ContainerNetwork};
use weft_e2e::daemon::Daemon;
use weft_e2e::{connect, reset, wait_for};

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let client = connect().await?;
    reset(&client).await?;
    let pools: Api<AddressPool> = Api::all(client.clone());
    pools
        .patch(
            "bench",
            &PatchParams::apply("bench").force(),
            &Patch::Apply(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "AddressPool",
                "metadata": {"name": "bench"}, "spec": {"cidrs": ["10.0.0.0/8"], "prefixLength": 24, "default": true}})),
        )
        .await?;
    let ctl = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_weft-controller")),
        &["--concurrency", "32"],
    )?;
    let pid = ctl
        .pid()
        .ok_or_else(|| anyhow::anyhow!("controller has no pid"))?;
    wait_for(Duration::from_secs(30), || {
        let pools = pools.clone();
        async move {
            Ok(pools
                .get("bench")
                .await?
                .status
                .filter(|s| !s.conditions.is_empty())
                .map(|_| ()))
        }
    })
    .await?;
    let rss_idle = peak_rss_kib(pid).unwrap_or_default();

    let api: Api<ContainerNetwork> = Api::all(client.clone());
    let start = Instant::now();
    let created: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let net: ContainerNetwork = serde_json::from_value(json!({"apiVersion": "weft.dev/v1alpha1",
                    "kind": "ContainerNetwork", "metadata": {"name": format!("bench-{i:04}")}, "spec": {"driver": "bridge"}}))?;
                api.create(&PostParams::default(), &net).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in created {
        r?;
    }
    let create_time = start.elapsed();
    let ready = |n: &ContainerNetwork| {
        n.status
            .as_ref()
            .is_some_and(|s| is_true(&s.conditions, "Ready"))
    };
    // Poll gently: listing 1,000 objects is itself load on the API server under test.
    let all_ready = loop {
        let list = api.list(&ListParams::default()).await?.items;
        if list.len() == n && list.iter().all(ready) {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("not all Ready after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let rss_peak = peak_rss_kib(pid).unwrap_or_default();
    ctl.kill().await?;

    println!(
        "controller: {n} ContainerNetworks created at once (64 in flight): creates took {:.2} s",
        create_time.as_secs_f64()
    );
    println!(
        "controller: first create → all {n} Ready: {:.2} s",
        all_ready.as_secs_f64()
    );
    println!(
        "controller: peak RSS {:.1} MiB (idle before the burst {:.1} MiB)",
        rss_peak as f64 / 1024.0,
        rss_idle as f64 / 1024.0
    );
    reset(&client).await?;
    Ok(())
}
