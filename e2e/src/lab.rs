//! `weft-lab`: a Weft playground on one Linux machine. `up` builds the daemons, finds or starts
//! an API server, makes N "nodes" (network namespaces on a shared underlay bridge, each with
//! its own `weft-agent`), one `weft-controller`, applies `examples/` and attaches two
//! "containers" to the overlay network `app`. Everything it creates is recorded in
//! `<state-dir>/state.json` as it goes, so `down` can remove it even after a failed `up`.
//!
//! Names (with the default prefix `weft-lab`): underlay namespace `weft-lab-ul` with bridge
//! `ul0` 192.0.2.1/24; node i is namespace `weft-lab-n<i>` with `eth0` 192.0.2.(10+i)/24 and
//! NetworkNode `lab-node-<i>`; containers are `weft-lab-c1` and `weft-lab-c2`, endpoints
//! `default/c1` and `default/c2`.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weft_api::{ContainerEndpoint, ContainerNetwork, NetworkNode};

use crate::netns::sh;

/// Field manager of everything the lab applies.
pub const MANAGER: &str = "weft-lab";
/// Default for `--prefix`.
pub const DEFAULT_PREFIX: &str = "weft-lab";
/// The overlay network the two containers join (from `examples/overlay.yaml`).
pub const NETWORK: &str = "app";
/// Namespace of the lab's ContainerEndpoints.
pub const ENDPOINT_NAMESPACE: &str = "default";
/// The underlay bridge's address: the nodes' default gateway.
pub const UNDERLAY_GATEWAY: &str = "192.0.2.1";
/// What to install when a tool is missing (Debian/Ubuntu).
const PACKAGES: &str = "apt-get install -y iproute2 nftables iputils-ping";

/// Where a lab lives: its name prefix and its state directory.
#[derive(Clone, Debug)]
pub struct Lab {
    pub prefix: String,
    pub state_dir: PathBuf,
    /// Whether `--state-dir` was given (only to repeat it in printed commands).
    explicit_state_dir: bool,
}

/// What `state.json` holds: everything a lab created, written after every step.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct State {
    pub prefix: String,
    pub nodes: usize,
    /// The KUBECONFIG value the daemons use (absolute paths).
    pub kubeconfig: Option<String>,
    /// Set when the lab started its own API server (so `down` stops only that one).
    pub apiserver: Option<StartedApiServer>,
    /// Network namespaces created, in order.
    pub namespaces: Vec<String>,
    pub processes: Vec<Process>,
    /// Objects applied to the API server, in order.
    pub objects: Vec<ObjectRef>,
    /// `up` finished.
    pub complete: bool,
}

/// An API server started with `<tools>/up.sh <dir>`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StartedApiServer {
    pub tools: PathBuf,
    pub dir: PathBuf,
}

/// A detached daemon.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Process {
    pub name: String,
    /// The NetworkNode an agent serves.
    pub node: Option<String>,
    pub pid: u32,
    /// Canonical path of the executable, to recognize the process (never kill a reused pid).
    pub binary: PathBuf,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Process {
    /// Running, and still the program that was started.
    pub fn alive(&self) -> bool {
        process_is(self.pid, &self.binary)
    }
}

/// One object the lab applied.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Lab {
    pub fn new(prefix: &str, state_dir: Option<PathBuf>) -> Result<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !prefix.starts_with('-');
        if !valid {
            bail!("--prefix {prefix:?}: use 1 to 40 lowercase letters, digits and '-' (not first)");
        }
        let explicit_state_dir = state_dir.is_some();
        let state_dir = match state_dir {
            Some(dir) => absolute(&dir)?,
            None => PathBuf::from("/var/lib").join(prefix),
        };
        Ok(Self {
            prefix: prefix.to_string(),
            state_dir,
            explicit_state_dir,
        })
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    pub fn underlay_ns(&self) -> String {
        format!("{}-ul", self.prefix)
    }

    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    pub fn container_ns(&self, i: usize) -> String {
        format!("{}-c{i}", self.prefix)
    }

    /// Whether `name` is one of the namespaces a lab with this prefix makes.
    pub fn owns_namespace(&self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('-'))
        else {
            return false;
        };
        if rest == "ul" {
            return true;
        }
        let mut chars = rest.chars();
        matches!(chars.next(), Some('n' | 'c'))
            && !chars.as_str().is_empty()
            && chars.all(|c| c.is_ascii_digit())
    }

    /// The state of this lab, if there is one.
    pub fn load(&self) -> Result<Option<State>> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a weft-lab state file", path.display()))?;
        Ok(Some(state))
    }

    fn save(&self, state: &State) -> Result<()> {
        let path = self.state_file();
        let tmp = self.state_dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(state).context("serializing the lab state")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// A `weft-lab` command line that reaches this lab (repeats non-default flags).
    pub fn command(&self, sub: &str) -> String {
        let mut cmd = format!("{} {sub}", self_command());
        if self.prefix != DEFAULT_PREFIX {
            cmd.push_str(&format!(" --prefix {}", self.prefix));
        }
        if self.explicit_state_dir {
            cmd.push_str(&format!(" --state-dir {}", self.state_dir.display()));
        }
        cmd
    }
}

/// `weft-lab` if that is what PATH finds, else the full path of this executable.
fn self_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "weft-lab".into();
    };
    let on_path = find_in_path("weft-lab")
        .and_then(|p| p.canonicalize().ok())
        .zip(exe.canonicalize().ok())
        .is_some_and(|(a, b)| a == b);
    if on_path {
        "weft-lab".into()
    } else {
        exe.display().to_string()
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("current directory")?
            .join(path))
    }
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

// ------------------------------------------------------------------ processes ----

/// Whether `pid` runs and its executable is `binary` (a zombie or a reused pid is not).
pub fn process_is(pid: u32, binary: &Path) -> bool {
    if !pid_running(pid) {
        return false;
    }
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let exe = exe.to_string_lossy();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
    Path::new(exe) == binary
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X' | 'x'))
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, then SIGKILL after 3 s, to every process still ours.
fn stop_processes(processes: &[Process]) -> Vec<String> {
    let mut report = Vec::new();
    let ours: Vec<&Process> = processes.iter().filter(|p| p.alive()).collect();
    for p in &ours {
        signal(p.pid, "-TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while ours.iter().any(|p| p.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &ours {
        if p.alive() {
            signal(p.pid, "-KILL");
            report.push(format!("killed {} (pid {}, SIGKILL)", p.name, p.pid));
        } else {
            report.push(format!("stopped {} (pid {})", p.name, p.pid));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while ours.iter().any(|p| p.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    report
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ------------------------------------------------------------------ namespaces ----

/// Names of all network namespaces (`ip netns list`).
fn netns_list() -> Result<Vec<String>> {
    Ok(sh(&["ip", "netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

pub fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

/// Kill every process inside `name`, then delete it.
fn delete_netns(name: &str) -> Result<()> {
    if let Ok(pids) = sh(&["ip", "netns", "pids", name]) {
        for pid in pids.split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                signal(pid, "-KILL");
            }
        }
    }
    sh(&["ip", "netns", "del", name]).map(drop)
}

// ------------------------------------------------------------------ API ----

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
async fn reachable_client(kubeconfig: &str) -> Option<Client> {
    let client = client_for(kubeconfig).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
        Ok(Ok(_)) => Some(client),
        _ => None,
    }
}

/// Weft's kinds: kind → (resource, namespaced), from the CRDs this binary carries.
fn weft_kind(kind: &str) -> Option<(ApiResource, bool)> {
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

/// What to record for an object before applying it (so `down` finds it even if `up` stops
/// right after the API server stored it).
fn object_ref(value: &Value) -> Result<ObjectRef> {
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
async fn apply(client: &Client, obj: &ObjectRef, value: &Value) -> Result<()> {
    let api = dynamic_api(client, &obj.kind, obj.namespace.as_deref())?;
    api.patch(
        &obj.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(|e| anyhow::anyhow!(crate::api_error_text(e)))
    .with_context(|| format!("applying {} {}", obj.kind, obj.name))?;
    Ok(())
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
                    "{}: {kind:?} is not a Weft kind (weft-lab applies only weft.dev objects)",
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

/// Delete the recorded objects (last applied first); strip finalizers of what is still
/// there after a few seconds.
async fn delete_objects(client: &Client, objects: &[ObjectRef]) -> Vec<String> {
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

// ------------------------------------------------------------------ up ----

/// Options of `weft-lab up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub nodes: usize,
    pub no_build: bool,
}

/// The workspace this binary was built from, if it is still there.
pub fn source_checkout() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = dir.canonicalize().ok()?;
    dir.join("Cargo.toml").is_file().then_some(dir)
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

/// Build the daemons (from a source checkout) and find them.
fn binaries(no_build: bool) -> Result<(PathBuf, PathBuf)> {
    let checkout = source_checkout();
    let mut built = false;
    if let (false, Some(ws)) = (no_build, &checkout) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!(
            "building weft-agent and weft-controller (release) in {}",
            ws.display()
        );
        let mut build = Command::new(&cargo);
        // What `cargo run` sets for the program it runs: build scripts that watch these
        // (ring's does) would rebuild, and everything above them, whenever the daemons
        // are built from here rather than from a shell — two minutes on every `up`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref())
            {
                build.env_remove(key.as_ref());
            }
        }
        let status = build
            .args([
                "build",
                "--release",
                "--bin",
                "weft-agent",
                "--bin",
                "weft-controller",
            ])
            .current_dir(ws)
            .status()
            .with_context(|| format!("running {} build", cargo.to_string_lossy()))?;
        if !status.success() {
            bail!("`cargo build --release` failed ({status})");
        }
        built = true;
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let release_dir = checkout.map(|ws| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(|t| ws.join(t))
            .unwrap_or_else(|| ws.join("target"))
            .join("release")
    });
    // After a build the release binaries are the fresh ones; otherwise take the ones next to
    // this executable (`cargo test` puts everything in target/debug).
    let dirs: Vec<PathBuf> = if built {
        [release_dir, exe_dir].into_iter().flatten().collect()
    } else {
        [exe_dir, release_dir].into_iter().flatten().collect()
    };
    for dir in &dirs {
        let agent = dir.join("weft-agent");
        let controller = dir.join("weft-controller");
        if agent.is_file() && controller.is_file() {
            let agent = agent
                .canonicalize()
                .with_context(|| format!("resolving {}", agent.display()))?;
            let controller = controller
                .canonicalize()
                .with_context(|| format!("resolving {}", controller.display()))?;
            return Ok((agent, controller));
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "weft-agent and weft-controller not found in {}: build them with \
         `cargo build --release --bin weft-agent --bin weft-controller`",
        looked.join(" or ")
    )
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

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("finding a free port")?
        .local_addr()?
        .port())
}

/// Start an API server with the tools in `<workspace>/../shared/tools/apiserver` (or
/// `WEFT_LAB_APISERVER_TOOLS`); returns its kubeconfig.
fn start_apiserver(lab: &Lab, tools: &Path) -> Result<PathBuf> {
    let dir = lab.state_dir.join("apiserver");
    let setup = tools.join("setup.sh");
    let status = Command::new(&setup)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", setup.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", setup.display());
    }
    let up = tools.join("up.sh");
    let out = Command::new(&up)
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", up.display()))?;
    if !out.status.success() {
        bail!("{} {} failed ({})", up.display(), dir.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .with_context(|| format!("{} printed no kubeconfig path", up.display()))?;
    if !kubeconfig.is_file() {
        bail!(
            "{} printed {}, which is not a file",
            up.display(),
            kubeconfig.display()
        );
    }
    Ok(kubeconfig)
}

fn apiserver_tools() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_LAB_APISERVER_TOOLS") {
        return Ok(PathBuf::from(dir));
    }
    let ws = source_checkout().context(
        "KUBECONFIG is not set and this is not a source checkout: set KUBECONFIG to a cluster \
         (kind, k3d, …) or WEFT_LAB_APISERVER_TOOLS to the apiserver tools directory",
    )?;
    let tools = ws.join("../shared/tools/apiserver");
    if !tools.join("up.sh").is_file() {
        bail!(
            "KUBECONFIG is not set and {} has no up.sh: set KUBECONFIG to a cluster (kind, k3d, …) \
             or WEFT_LAB_APISERVER_TOOLS to the apiserver tools directory",
            tools.display()
        );
    }
    tools
        .canonicalize()
        .with_context(|| format!("resolving {}", tools.display()))
}

fn examples_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("WEFT_LAB_EXAMPLES") {
        Some(d) => PathBuf::from(d),
        None => source_checkout()
            .map(|ws| ws.join("examples"))
            .context("no examples/ directory: set WEFT_LAB_EXAMPLES to one")?,
    };
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(dir)
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
    let leftovers: Vec<String> = netns_list()?
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
    crate::install_crds(&client)
        .await
        .context("installing Weft's CRDs")?;

    // Underlay and nodes.
    let ul = lab.underlay_ns();
    run.add_netns(&ul)?;
    sh(&["ip", "-n", &ul, "link", "add", "ul0", "type", "bridge"])?;
    sh(&["ip", "-n", &ul, "addr", "add", "192.0.2.1/24", "dev", "ul0"])?;
    sh(&["ip", "-n", &ul, "link", "set", "ul0", "up"])?;
    for i in 1..=opts.nodes {
        let ns = lab.node_ns(i);
        run.add_netns(&ns)?;
        let port = format!("ul-{i}");
        sh(&[
            "ip", "-n", &ul, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        sh(&["ip", "-n", &ul, "link", "set", &port, "master", "ul0", "up"])?;
        let address = format!("192.0.2.{}/24", 10 + i);
        sh(&["ip", "-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        sh(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            UNDERLAY_GATEWAY,
        ])?;
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if sh(&["ip", "netns", "exec", &c1, "ping", "-c1", "-W1", &target]).is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            bail!("{c1} cannot ping c2 at {target} (10 s of tries)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
        "  nodes:       {} (underlay {ul}, bridge ul0 {UNDERLAY_GATEWAY}/24)",
        nodes.join(", ")
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

/// The NetworkNode name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("lab-node-{i}")
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

// ------------------------------------------------------------------ status ----

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
        let exists = netns_exists(ns);
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

// ------------------------------------------------------------------ down ----

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
    for ns in netns_list()? {
        if lab.owns_namespace(&ns) && !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
    }
    // Containers and nodes before the underlay.
    namespaces.reverse();
    for ns in &namespaces {
        if netns_exists(ns) {
            delete_netns(ns).with_context(|| format!("deleting network namespace {ns}"))?;
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
