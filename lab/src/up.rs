//! `weft-lab up`: API server, underlay and nodes, controller and agents, `examples/`, two
//! containers on the overlay — each recorded in the state file before it is made.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Api;
use serde_json::{Value, json};
use weft_api::ContainerEndpoint;
use weft_e2e::cluster::reachable_from;
use weft_e2e::daemon::free_port;
use weft_e2e::netns::{self, sh};
use weft_e2e::objects::read_examples;
use weft_e2e::topology;

use crate::api::{apply, client_for, object_ref};
use crate::apiserver::{apiserver_tools, start_apiserver};
use crate::checkout::{binaries, examples_dir};
use crate::down::down;
use crate::lab::{absolute, find_in_path};
use crate::process::tail;
use crate::state::{Process, StartedApiServer, State};
use crate::{ENDPOINT_NAMESPACE, Lab, NETWORK, node_name};

/// What to install when a tool is missing (Debian/Ubuntu).
const PACKAGES: &str = "apt-get install -y iproute2 nftables iputils-ping";

/// Options of `weft-lab up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub nodes: usize,
    pub no_build: bool,
}

fn check_prerequisites() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .context("no Uid in /proc/self/status")?;
    if euid != "0" {
        bail!("weft-lab must run as root (it creates network namespaces): try `sudo weft-lab up`");
    }
    let missing: Vec<&str> = ["ip", "nft", "ping"]
        .into_iter()
        .filter(|t| find_in_path(t).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {}: install them with `{PACKAGES}`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// What an `up` in progress holds on to.
struct Run<'a> {
    lab: &'a Lab,
    state: State,
    /// Children started by this run, to notice one dying early.
    children: Vec<(String, Child)>,
}

impl Run<'_> {
    fn save(&self) -> Result<()> {
        self.lab.save(&self.state)
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        sh(&["ip", "netns", "add", name])?;
        self.state.namespaces.push(name.to_string());
        self.save()?;
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]).map(drop)
    }

    fn spawn(
        &mut self,
        name: &str,
        node: Option<String>,
        binary: &Path,
        args: &[String],
        metrics_port: u16,
    ) -> Result<()> {
        let log = self.lab.log_dir().join(format!("{name}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let kubeconfig = self.state.kubeconfig.clone().unwrap_or_default();
        let child = Command::new(binary)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("log file")?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.state.processes.push(Process {
            name: name.to_string(),
            node,
            pid: child.id(),
            binary: binary.to_path_buf(),
            metrics_port,
            log,
        });
        self.children.push((name.to_string(), child));
        self.save()
    }

    /// Fail if a daemon started by this run has exited, with the end of its log.
    fn check_children(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.lab.log_dir().join(format!("{name}.log"));
                bail!(
                    "{name} exited ({status}); the end of {}:\n{}",
                    log.display(),
                    tail(&log, 15)
                );
            }
        }
        Ok(())
    }
}

/// `weft-lab up`. Prints what it made and how to use it.
pub async fn up(lab: &Lab, opts: &UpOptions) -> Result<()> {
    let started = Instant::now();
    check_prerequisites()?;
    if opts.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if let Some(state) = lab.load()? {
        if state.processes.iter().any(Process::alive) {
            bail!(
                "a lab is already up in {}; run `{}` or `{}`",
                lab.state_dir.display(),
                lab.command("status"),
                lab.command("down")
            );
        }
        println!(
            "a stopped lab is left in {}; removing it first",
            lab.state_dir.display()
        );
        down(lab).await?;
    }
    let leftovers: Vec<String> = netns::list()?
        .into_iter()
        .filter(|n| lab.owns_namespace(n))
        .collect();
    if !leftovers.is_empty() {
        bail!(
            "network namespaces {} already exist; run `{}` first",
            leftovers.join(", "),
            lab.command("down")
        );
    }
    let examples = read_examples(&examples_dir()?)?;
    // Decide on the API server before anything is created.
    let external = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(value) => {
            let paths: Vec<PathBuf> = std::env::split_paths(&value)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| absolute(&p))
                .collect::<Result<_>>()?;
            let joined = std::env::join_paths(&paths).context("KUBECONFIG")?;
            Some(joined.to_string_lossy().into_owned())
        }
        None => None,
    };
    let tools = match external {
        Some(_) => None,
        None => Some(apiserver_tools()?),
    };

    let (agent_bin, controller_bin) = binaries(opts.no_build)?;

    std::fs::create_dir_all(lab.log_dir())
        .with_context(|| format!("creating {}", lab.log_dir().display()))?;
    let mut run = Run {
        lab,
        state: State {
            prefix: lab.prefix.clone(),
            nodes: opts.nodes,
            ..State::default()
        },
        children: Vec::new(),
    };
    run.save()?;

    let inputs = Inputs {
        agent_bin,
        controller_bin,
        examples,
        external,
        tools,
        started,
    };
    bring_up(&mut run, opts, inputs).await.context(LeftBehind)
}

/// `up` failed after it had started creating things: `down` removes them.
#[derive(Debug)]
pub struct LeftBehind;

impl std::fmt::Display for LeftBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the lab is only partly up")
    }
}

/// What `up` found before creating anything.
struct Inputs {
    agent_bin: PathBuf,
    controller_bin: PathBuf,
    examples: Vec<Value>,
    /// KUBECONFIG (absolute paths), when set.
    external: Option<String>,
    /// The apiserver tools, when KUBECONFIG is not set.
    tools: Option<PathBuf>,
    started: Instant,
}

async fn bring_up(run: &mut Run<'_>, opts: &UpOptions, inputs: Inputs) -> Result<()> {
    let lab = run.lab;
    let Inputs {
        agent_bin,
        controller_bin,
        examples,
        external,
        tools,
        started,
    } = inputs;
    // API server.
    let kubeconfig = match (external, tools) {
        (Some(kubeconfig), _) => {
            println!("using the API server of KUBECONFIG={kubeconfig}");
            kubeconfig
        }
        (None, tools) => {
            let tools = tools.context("no apiserver tools")?;
            println!(
                "KUBECONFIG is not set: starting the CRD API server from {}",
                tools.display()
            );
            run.state.apiserver = Some(StartedApiServer {
                tools: tools.clone(),
                dir: lab.state_dir.join("apiserver"),
            });
            run.save()?;
            start_apiserver(lab, &tools)?.display().to_string()
        }
    };
    run.state.kubeconfig = Some(kubeconfig.clone());
    run.save()?;
    let client = client_for(&kubeconfig).await?;
    weft_e2e::install_crds(&client)
        .await
        .context("installing Weft's CRDs")?;

    // Underlay and nodes.
    let ul = lab.underlay_ns();
    run.add_netns(&ul)?;
    topology::build_underlay(&ul)?;
    for i in 1..=opts.nodes {
        let ns = lab.node_ns(i);
        run.add_netns(&ns)?;
        topology::join_underlay(&ul, i, &ns)?;
    }

    // Daemons.
    let port = free_port()?;
    run.spawn(
        "weft-controller",
        None,
        &controller_bin,
        &[
            "--node-grace-period".into(),
            "10s".into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{port}"),
        ],
        port,
    )?;
    for i in 1..=opts.nodes {
        let node_dir = lab.state_dir.join(format!("n{i}"));
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("creating {}", node_dir.display()))?;
        let port = free_port()?;
        let node = node_name(i);
        run.spawn(
            &format!("weft-agent-n{i}"),
            Some(node.clone()),
            &agent_bin,
            &[
                "--node-name".into(),
                node,
                "--netns".into(),
                format!("/var/run/netns/{}", lab.node_ns(i)),
                "--metrics-addr".into(),
                format!("127.0.0.1:{port}"),
                "--state-dir".into(),
                node_dir.display().to_string(),
                "--cni-socket".into(),
                node_dir.join("cni.sock").display().to_string(),
                // The lab runs no weft-dns: no names, and no nameserver told to sandboxes.
                "--dns-feed=".into(),
            ],
            port,
        )?;
    }

    // Examples.
    for value in &examples {
        let obj = object_ref(value)?;
        run.state.objects.push(obj.clone());
        run.save()?;
        apply(&client, &obj, value).await?;
    }

    // Two containers on the overlay.
    let second_node = if opts.nodes >= 2 { 2 } else { 1 };
    for (c, node) in [(1, 1), (2, second_node)] {
        let ns = lab.container_ns(c);
        run.add_netns(&ns)?;
        let ep = json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "ContainerEndpoint",
            "metadata": {"name": format!("c{c}"), "namespace": ENDPOINT_NAMESPACE},
            "spec": {"network": NETWORK, "node": node_name(node),
                     "sandbox": format!("/var/run/netns/{ns}")},
        });
        let obj = object_ref(&ep)?;
        run.state.objects.push(obj.clone());
        run.save()?;
        apply(&client, &obj, &ep).await?;
    }
    let eps: Api<ContainerEndpoint> = Api::namespaced(client.clone(), ENDPOINT_NAMESPACE);
    let mut addresses = Vec::new();
    for c in ["c1", "c2"] {
        addresses.push(wait_endpoint(run, &eps, c, Duration::from_secs(30)).await?);
    }
    let target = addresses[1]
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let c1 = lab.container_ns(1);
    if !reachable_from(&c1, &target, Duration::from_secs(10)).await {
        bail!("{c1} cannot ping c2 at {target} (10 s of tries)");
    }
    run.state.complete = true;
    run.save()?;
    let elapsed = started.elapsed();

    // What to do now.
    let nodes: Vec<String> = (1..=opts.nodes).map(|i| lab.node_ns(i)).collect();
    println!();
    println!(
        "weft-lab is up: {} node(s), c1 ({}) pings c2 ({}) over the overlay network `{NETWORK}`.",
        opts.nodes, addresses[0], addresses[1]
    );
    println!();
    println!("  kubeconfig:  {kubeconfig}");
    println!(
        "  nodes:       {} (underlay {ul}, bridge {} {}/24)",
        nodes.join(", "),
        topology::BRIDGE,
        topology::GATEWAY
    );
    println!(
        "  containers:  {} {}",
        lab.container_ns(1),
        lab.container_ns(2)
    );
    println!("  logs:        {}", lab.log_dir().display());
    println!();
    println!("Try:");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get cnet");
    println!("  kubectl get networknodes");
    println!("  kubectl get containerendpoints");
    println!("  ip netns exec {c1} ping -c3 {target}");
    println!("  ip netns exec {} ip -d link show", lab.node_ns(1));
    println!("  {}", lab.command("status"));
    println!("  {}", lab.command("down"));
    println!();
    println!("up took {:.1} s", elapsed.as_secs_f64());
    Ok(())
}

/// Wait until endpoint `name` is Ready with an address; returns the address.
async fn wait_endpoint(
    run: &mut Run<'_>,
    api: &Api<ContainerEndpoint>,
    name: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no status yet");
    loop {
        run.check_children()?;
        match api.get_opt(name).await {
            Ok(Some(ep)) => {
                if let Some(status) = &ep.status {
                    let ready = weft_api::condition::find(&status.conditions, "Ready");
                    if let (Some(c), Some(addr)) = (ready, &status.address)
                        && c.status == "True"
                    {
                        return Ok(addr.clone());
                    }
                    if let Some(c) = ready {
                        last = format!("Ready={} {}: {}", c.status, c.reason, c.message);
                    }
                }
            }
            Ok(None) => last = "not found".into(),
            Err(e) => last = format!("API error: {e}"),
        }
        if Instant::now() >= deadline {
            bail!(
                "endpoint {ENDPOINT_NAMESPACE}/{name} is not Ready after {} s ({last}); \
                 the agents' logs are in {}",
                timeout.as_secs(),
                run.lab.log_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
