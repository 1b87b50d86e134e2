//! A cluster on one machine: N "nodes", each a network namespace on a shared underlay
//! bridge with its own address and its own `weft-agent` process, one `weft-controller`, and
//! "containers" as further namespaces. Everything is removed on drop (namespaces with the
//! processes inside them, agent state directories), also when a test fails.
//!
//! Underlay: see [`crate::topology`] — namespace `ul` with bridge `ul0` 192.0.2.1/24 (the
//! "outside" host); node i (1-based) has `eth0` 192.0.2.(10+i)/24.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use weft_api::ContainerEndpoint;

use crate::daemon::{Daemon, free_port};
use crate::names::NameServer;
use crate::netns::{Netns, sh, workspace_binary};
use crate::{TEST_MANAGER, topology, wait_for};

/// The outside host's address on the underlay.
pub const OUTSIDE: &str = topology::GATEWAY;

pub struct Node {
    pub name: String,
    pub ns: Netns,
    /// Underlay address, without prefix.
    pub address: String,
    pub metrics_port: u16,
    agent: Option<Daemon>,
    /// The node's weft-dns, once [`Cluster::start_names`] started it.
    names: Option<NameServer>,
}

impl Node {
    pub fn cni_socket(&self) -> PathBuf {
        self.ns.state_dir().join("cni.sock")
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().and_then(Daemon::pid)
    }
}

pub struct Cluster {
    pub client: Client,
    pub underlay: Netns,
    pub nodes: Vec<Node>,
    controller: Option<Daemon>,
    agent_binary: PathBuf,
    controller_binary: PathBuf,
    /// When set, daemons started from now on reach the API server through this kubeconfig
    /// (an [`crate::outage::ApiProxy`]'s), so a test can cut them off.
    pub kubeconfig_override: Option<PathBuf>,
}

impl Cluster {
    /// Reset the API server's Weft objects and start the underlay, `n` nodes with agents,
    /// and the controller.
    pub async fn start(n: usize) -> Result<Cluster> {
        let client = crate::connect().await?;
        crate::reset(&client).await?;
        let underlay = Netns::new("ul")?;
        topology::build_underlay(underlay.name())?;
        let mut cluster = Cluster {
            client,
            underlay,
            nodes: Vec::new(),
            controller: None,
            agent_binary: workspace_binary("weft-agent")?,
            controller_binary: workspace_binary("weft-controller")?,
            kubeconfig_override: None,
        };
        cluster.start_controller()?;
        for _ in 0..n {
            cluster.add_node()?;
        }
        cluster.wait_registered().await?;
        Ok(cluster)
    }

    /// Until every node's agent has registered its `NetworkNode`: it has probed the kernel
    /// by then (throwaway links a test would otherwise see come and go).
    pub async fn wait_registered(&self) -> Result<()> {
        let api: Api<weft_api::NetworkNode> = Api::all(self.client.clone());
        for node in &self.nodes {
            wait_for(Duration::from_secs(30), || {
                let api = api.clone();
                async move { Ok(api.get_opt(&node.name).await?.map(|_| ())) }
            })
            .await
            .with_context(|| format!("{} never registered", node.name))?;
        }
        Ok(())
    }

    pub fn start_controller(&mut self) -> Result<()> {
        self.controller = Some(Daemon::start_with_env(
            &self.controller_binary,
            &["--node-grace-period", "2s", "--rollup-interval", "100ms"],
            &self.daemon_env(),
        )?);
        Ok(())
    }

    fn daemon_env(&self) -> Vec<(&str, &str)> {
        self.kubeconfig_override
            .as_deref()
            .and_then(|p| p.to_str())
            .map(|p| vec![("KUBECONFIG", p)])
            .unwrap_or_default()
    }

    pub async fn kill_controller(&mut self) -> Result<()> {
        if let Some(c) = self.controller.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// One more node (namespace + underlay link + agent). Returns its index.
    pub fn add_node(&mut self) -> Result<usize> {
        let i = self.nodes.len() + 1;
        let name = format!("node-{i}");
        let ns = Netns::new(&format!("n{i}"))?;
        let address = topology::join_underlay(self.underlay.name(), i, ns.name())?;
        self.nodes.push(Node {
            name,
            ns,
            address,
            metrics_port: free_port()?,
            agent: None,
            names: None,
        });
        self.start_agent(i - 1)?;
        Ok(i - 1)
    }

    pub fn start_agent(&mut self, index: usize) -> Result<()> {
        self.start_agent_with(index, &[])
    }

    /// [`Self::start_agent`] with extra agent arguments (e.g. `--teardown-quiet 2s`).
    pub fn start_agent_with(&mut self, index: usize, extra: &[&str]) -> Result<()> {
        let binary = self.agent_binary.clone();
        let env: Vec<(String, String)> = self
            .daemon_env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let node = self.nodes.get_mut(index).context("no such node")?;
        let mut args = vec![
            "--node-name".to_string(),
            node.name.clone(),
            "--netns".into(),
            node.ns.path().display().to_string(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{}", node.metrics_port),
            "--resync-period".into(),
            "5s".into(),
        ];
        args.extend(node.ns.agent_state_args());
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        node.agent = Some(Daemon::start_with_env(&binary, &args, &env)?);
        Ok(())
    }

    /// Start weft-dns on node `index`, fed by its agent (`--dns-feed` of
    /// [`Netns::agent_state_args`]); names not Weft's go to the outside host.
    pub async fn start_names(&mut self, index: usize) -> Result<()> {
        let binary = workspace_binary("weft-dns")?;
        let node = self.nodes.get_mut(index).context("no such node")?;
        let dir = node.ns.state_dir();
        node.names = Some(
            NameServer::start(&binary, &node.ns, &dir, &format!("nameserver {OUTSIDE}\n")).await?,
        );
        Ok(())
    }

    /// SIGKILL the node's weft-dns and start a new one (from its state file; its agent's
    /// feed reconnects on its own).
    pub async fn restart_names(&mut self, index: usize) -> Result<()> {
        let node = self.nodes.get_mut(index).context("no such node")?;
        if let Some(names) = node.names.take() {
            names.kill().await?;
        }
        self.start_names(index).await
    }

    /// The node leaves for good: its agent dies and its `NetworkNode` is deleted, as when a
    /// machine is decommissioned. Returns it (its namespace goes when the value drops).
    pub async fn remove_node(&mut self, index: usize) -> Result<Node> {
        self.kill_agent(index).await?;
        let node = self.nodes.remove(index);
        let api: Api<weft_api::NetworkNode> = Api::all(self.client.clone());
        match api.delete(&node.name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).context("deleting the NetworkNode"),
        }
        Ok(node)
    }

    /// Delete a ContainerEndpoint in namespace `default`.
    pub async fn detach(&self, name: &str) -> Result<()> {
        let api: Api<ContainerEndpoint> = Api::namespaced(self.client.clone(), "default");
        api.delete(name, &Default::default())
            .await
            .with_context(|| format!("deleting endpoint {name}"))?;
        Ok(())
    }

    /// SIGKILL the node's agent (the dataplane stays as it is).
    pub async fn kill_agent(&mut self, index: usize) -> Result<()> {
        if let Some(a) = self.nodes.get_mut(index).and_then(|n| n.agent.take()) {
            a.kill().await?;
        }
        Ok(())
    }

    /// Server-side apply any Weft object given as JSON.
    pub async fn apply(&self, value: Value) -> Result<()> {
        let kind = value["kind"].as_str().context("kind")?.to_string();
        let name = value["metadata"]["name"]
            .as_str()
            .context("name")?
            .to_string();
        let namespace = value["metadata"]["namespace"].as_str();
        self.dynamic_api(&kind, namespace)?
            .patch(
                &name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&value),
            )
            .await
            .with_context(|| format!("applying {kind} {name}"))?;
        Ok(())
    }

    /// A Weft object as the API server has it (JSON), namespace `default` for endpoints.
    pub async fn get_raw(&self, kind: &str, name: &str) -> Result<Value> {
        let obj = self
            .dynamic_api(kind, None)?
            .get(name)
            .await
            .with_context(|| format!("getting {kind} {name}"))?;
        Ok(serde_json::to_value(obj)?)
    }

    fn dynamic_api(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<kube::api::DynamicObject>> {
        crate::objects::dynamic_api(&self.client, kind, namespace)
    }

    /// A ContainerNetwork.
    pub async fn network(&self, name: &str, spec: Value) -> Result<()> {
        self.apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerNetwork",
            "metadata": {"name": name}, "spec": spec}),
        )
        .await
    }

    /// A "container": a fresh namespace with loopback up.
    pub fn container(&self, prefix: &str) -> Result<Netns> {
        Netns::new(prefix)
    }

    /// Attach `sandbox` on node `index` to `network` through a ContainerEndpoint (namespace
    /// `default`); `extra` is merged into the spec (address, publish…).
    pub async fn attach(
        &self,
        name: &str,
        network: &str,
        index: usize,
        sandbox: &Netns,
        extra: Value,
    ) -> Result<()> {
        let node = self.nodes.get(index).context("no such node")?;
        let mut spec = json!({"network": network, "node": node.name,
            "sandbox": sandbox.path().display().to_string()});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        self.apply(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .await
    }

    /// Wait until the endpoint's Ready condition has `status`; returns the object.
    pub async fn wait_endpoint(
        &self,
        name: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<ContainerEndpoint> {
        let api: Api<ContainerEndpoint> = Api::namespaced(self.client.clone(), "default");
        wait_for(timeout, || {
            let api = api.clone();
            let name = name.to_string();
            let status = status.to_string();
            async move {
                let Some(cep) = api.get_opt(&name).await? else {
                    return Ok(None);
                };
                let ready = cep
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == status);
                Ok(ready.then_some(cep))
            }
        })
        .await
        .with_context(|| format!("endpoint {name} never became Ready={status}"))
    }

    /// The address (without prefix) an endpoint got.
    pub async fn endpoint_address(&self, name: &str) -> Result<String> {
        let cep = self
            .wait_endpoint(name, "True", Duration::from_secs(20))
            .await?;
        let addr = cep
            .status
            .and_then(|s| s.address)
            .context("no address in status")?;
        Ok(addr.split('/').next().unwrap_or_default().to_string())
    }
}

/// Can this kernel create links of `kind` (vlan, ipvlan…)? Probed in a scratch namespace.
pub fn kernel_has(kind: &str) -> bool {
    let Ok(ns) = Netns::new("probe") else {
        return false;
    };
    match kind {
        "vlan" => {
            ns.try_exec(&[
                "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1",
            ]) && ns.try_exec(&[
                "ip", "link", "add", "link", "p0", "name", "p0.10", "type", "vlan", "id", "10",
            ])
        }
        "ipvlan" | "macvlan" => {
            ns.try_exec(&[
                "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1",
            ]) && ns.try_exec(&[
                "ip", "link", "add", "link", "p0", "name", "c0", "type", kind,
            ])
        }
        other => ns.try_exec(&["ip", "link", "add", "x0", "type", other]),
    }
}

/// A continuous ping (every 20 ms for `seconds`) from `ns` to `target`, running in the
/// background while a test disturbs the cluster.
pub struct Pinger {
    child: std::process::Child,
}

impl Pinger {
    pub fn start(ns: &Netns, target: &str, seconds: u32) -> Result<Self> {
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "ping", "-n", "-q", "-i", "0.02"])
            .args(["-w", &seconds.to_string(), target])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting ping")?;
        Ok(Self { child })
    }

    /// Wait for the end and return (sent, received).
    pub fn finish(self) -> Result<(u64, u64)> {
        let out = self.child.wait_with_output().context("waiting for ping")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .with_context(|| format!("no ping summary in {text:?}"))?;
        let number = |word: &str| -> Result<u64> {
            let before = line.split(word).next().unwrap_or_default();
            let n = before.split_whitespace().last().unwrap_or_default();
            n.parse().with_context(|| format!("parsing {line:?}"))
        };
        Ok((number("packets transmitted")?, number("received")?))
    }
}

/// `ping -c1 -W1 target` from inside `ns`, retried for up to `within`.
pub async fn reachable(ns: &Netns, target: &str, within: Duration) -> bool {
    reachable_from(ns.name(), target, within).await
}

/// [`reachable`] from a namespace known by its name only.
pub async fn reachable_from(ns: &str, target: &str, within: Duration) -> bool {
    ping_until(
        ns,
        target,
        std::time::Instant::now() + crate::patience(within),
    )
    .await
}

/// No ping from `ns` reaches `target` for `during` — not stretched by [`crate::patience`]:
/// a slow machine makes waiting for something longer, not the proof that it never comes
/// (the positive checks before it have already waited for the dataplane to settle).
pub async fn stays_unreachable(ns: &Netns, target: &str, during: Duration) -> bool {
    !ping_until(ns.name(), target, std::time::Instant::now() + during).await
}

/// `ping -c1 -W1 target` from inside `ns` every 200 ms until one answers (true) or
/// `deadline` has passed (false).
async fn ping_until(ns: &str, target: &str, deadline: std::time::Instant) -> bool {
    let ping = ["ip", "netns", "exec", ns, "ping", "-c1", "-W1", target];
    loop {
        if sh(&ping).is_ok() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Start a tiny HTTP server on `port` inside `ns` that answers with `body` (python3's
/// http.server; killed with the namespace).
pub fn http_server(ns: &Netns, port: u16, body: &str) -> Result<()> {
    let dir = ns.state_dir().join("www");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), body)?;
    std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "python3", "-m", "http.server"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting python3 -m http.server")?;
    Ok(())
}

/// `curl` from inside `ns` (at most 2 s); the body, or `None` if nothing answered.
pub fn http_get(ns: &Netns, url: &str) -> Option<String> {
    ns.exec(&["curl", "-s", "--max-time", "2", url]).ok()
}

impl Cluster {
    /// Assert that `url`, a port published on node `node` by `server`, answers `body` from
    /// outside the node (the underlay), from the node itself, from `server` to its own
    /// published port and from `neighbour` on the same bridge (both hairpin through the node).
    pub async fn assert_published(
        &self,
        node: usize,
        url: &str,
        body: &str,
        server: &Netns,
        neighbour: &Netns,
        within: Duration,
    ) {
        let from_outside = http_get_within(&self.underlay, url, within).await;
        assert_eq!(from_outside.as_deref(), Some(body), "{url} from outside");
        let from = [
            ("the node", &self.nodes[node].ns),
            ("the container itself (hairpin)", server),
            ("a neighbour (hairpin)", neighbour),
        ];
        for (who, ns) in from {
            assert_eq!(http_get(ns, url).as_deref(), Some(body), "{url} from {who}");
        }
    }
}

/// Like [`http_get`], retried for up to `within`.
pub async fn http_get_within(ns: &Netns, url: &str, within: Duration) -> Option<String> {
    let deadline = std::time::Instant::now() + crate::patience(within);
    loop {
        if let Some(body) = http_get(ns, url) {
            return Some(body);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
