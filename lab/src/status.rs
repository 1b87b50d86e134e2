//! `weft-lab status`: the lab's processes, namespaces and API objects.

use anyhow::{Context, Result};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use weft_api::{ContainerEndpoint, ContainerNetwork, NetworkNode};
use weft_e2e::netns;

use crate::Lab;
use crate::api::reachable_client;

/// `weft-lab status`: prints what runs; `Ok(false)` when the lab is not (fully) up.
pub async fn status(lab: &Lab) -> Result<bool> {
    let Some(state) = lab.load()? else {
        println!(
            "no lab in {} (start one with `{}`)",
            lab.state_dir.display(),
            lab.command("up")
        );
        return Ok(false);
    };
    let mut up = state.complete;
    println!("lab {} in {}", state.prefix, lab.state_dir.display());
    if !state.complete {
        println!("  `up` did not finish");
    }
    println!("processes:");
    for p in &state.processes {
        let alive = p.alive();
        up &= alive;
        let what = match &p.node {
            Some(node) => format!("{} ({node})", p.name),
            None => p.name.clone(),
        };
        println!(
            "  {what:<32} pid {:<8} {}  metrics 127.0.0.1:{}  log {}",
            p.pid,
            if alive { "running" } else { "NOT RUNNING" },
            p.metrics_port,
            p.log.display()
        );
    }
    println!("namespaces:");
    for ns in &state.namespaces {
        let exists = netns::exists(ns);
        up &= exists;
        println!("  {ns:<32} {}", if exists { "present" } else { "MISSING" });
    }
    match &state.apiserver {
        Some(a) => println!("API server: started by weft-lab in {}", a.dir.display()),
        None => println!("API server: from KUBECONFIG"),
    }
    let Some(kubeconfig) = &state.kubeconfig else {
        println!("  no kubeconfig recorded");
        return Ok(false);
    };
    println!("  export KUBECONFIG={kubeconfig}");
    let Some(client) = reachable_client(kubeconfig).await else {
        println!("  NOT REACHABLE");
        return Ok(false);
    };
    println!("  reachable");
    print_api(&client).await?;
    Ok(up)
}

fn condition_text(conditions: &[weft_api::condition::Condition]) -> String {
    match weft_api::condition::find(conditions, "Ready") {
        Some(c) if c.status == "True" => "True".into(),
        Some(c) => format!("{} ({})", c.status, c.reason),
        None => "-".into(),
    }
}

async fn print_api(client: &Client) -> Result<()> {
    let lp = ListParams::default();
    let nodes: Api<NetworkNode> = Api::all(client.clone());
    let nodes = nodes.list(&lp).await.context("listing NetworkNodes")?;
    println!("NetworkNodes:");
    for n in &nodes {
        println!("  {}", n.name_any());
    }
    let nets: Api<ContainerNetwork> = Api::all(client.clone());
    let nets = nets.list(&lp).await.context("listing ContainerNetworks")?;
    println!("ContainerNetworks:");
    println!(
        "  {:<12} {:<9} {:<16} {:<6} READY",
        "NAME", "DRIVER", "SUBNET", "NODES"
    );
    for n in &nets {
        let driver = serde_json::to_value(n.spec.driver)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let status = n.status.clone().unwrap_or_default();
        println!(
            "  {:<12} {:<9} {:<16} {:<6} {}",
            n.name_any(),
            driver,
            status.subnets.first().map(String::as_str).unwrap_or("-"),
            status.nodes.as_deref().unwrap_or("-"),
            condition_text(&status.conditions)
        );
    }
    let eps: Api<ContainerEndpoint> = Api::all(client.clone());
    let eps = eps.list(&lp).await.context("listing ContainerEndpoints")?;
    println!("ContainerEndpoints:");
    println!(
        "  {:<16} {:<10} {:<12} {:<18} READY",
        "NAME", "NETWORK", "NODE", "ADDRESS"
    );
    for e in &eps {
        let status = e.status.clone().unwrap_or_default();
        println!(
            "  {:<16} {:<10} {:<12} {:<18} {}",
            format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any()),
            e.spec.network,
            e.spec.node,
            status.address.as_deref().unwrap_or("-"),
            condition_text(&status.conditions)
        );
    }
    Ok(())
}
