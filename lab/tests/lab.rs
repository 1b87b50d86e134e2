//! `weft-lab` end to end: up (2 nodes) → status → ping between the containers → down, and
//! nothing left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube::Api;
use weft_api::ContainerEndpoint;
use weft_e2e::netns::{self, sh, workspace_binary};
use weft_lab::{Lab, pid_running};

fn run(lab: &Path, args: &[String]) -> Output {
    let out = Command::new(lab)
        .args(args)
        .output()
        .expect("weft-lab runs");
    eprintln!(
        "$ weft-lab {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `weft-lab down` if the test ends early, so a failure leaves nothing behind.
struct Cleanup {
    lab: PathBuf,
    args: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new(&self.lab)
                .arg("down")
                .args(&self.args)
                .status();
        }
    }
}

fn lab_namespaces(prefix: &str) -> Vec<String> {
    netns::list()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

#[tokio::test]
async fn lab_up_status_ping_down() {
    let client = weft_e2e::connect().await.expect("API server (KUBECONFIG)");
    weft_e2e::reset(&client).await.expect("reset");
    let bin = workspace_binary("weft-lab").expect("weft-lab is built");
    let prefix = format!("wlt-{}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    let common = [
        "--prefix".to_string(),
        prefix.clone(),
        "--state-dir".to_string(),
        dir.display().to_string(),
    ];
    let _cleanup = Cleanup {
        lab: bin.clone(),
        args: common.to_vec(),
    };
    let with = |sub: &[&str]| -> Vec<String> {
        sub.iter()
            .map(|s| s.to_string())
            .chain(common.iter().cloned())
            .collect()
    };

    let up = run(&bin, &with(&["up", "--nodes", "2", "--no-build"]));
    assert!(up.status.success(), "weft-lab up failed");
    let up_text = String::from_utf8_lossy(&up.stdout);
    assert!(
        up_text.contains("kubectl get cnet"),
        "up prints what to try"
    );

    let status = run(&bin, &with(&["status"]));
    assert!(
        status.status.success(),
        "weft-lab status says the lab is not up"
    );
    let status_text = String::from_utf8_lossy(&status.stdout);
    for node in ["lab-node-1", "lab-node-2"] {
        assert!(status_text.contains(node), "status mentions {node}");
    }

    let eps: Api<ContainerEndpoint> = Api::namespaced(client.clone(), "default");
    let c2 = eps.get("c2").await.expect("endpoint c2");
    let c2_addr = c2
        .status
        .and_then(|s| s.address)
        .expect("c2 has an address");
    let c2_addr = c2_addr.split('/').next().unwrap_or_default().to_string();
    sh(&[
        "ip",
        "netns",
        "exec",
        &format!("{prefix}-c1"),
        "ping",
        "-c1",
        "-W1",
        &c2_addr,
    ])
    .expect("c1 pings c2 over the overlay");

    let state = Lab::new(&prefix, Some(dir.clone()))
        .expect("lab")
        .load()
        .expect("state.json reads")
        .expect("state.json exists");
    assert_eq!(state.processes.len(), 3, "a controller and two agents");

    let down = run(&bin, &with(&["down"]));
    assert!(down.status.success(), "weft-lab down failed");
    assert_eq!(
        lab_namespaces(&prefix),
        Vec::<String>::new(),
        "namespaces left"
    );
    for p in &state.processes {
        assert!(!pid_running(p.pid), "{} (pid {}) still runs", p.name, p.pid);
    }
    assert!(!dir.join("state.json").exists(), "state file left");
    assert!(
        eps.get_opt("c1").await.expect("API").is_none(),
        "endpoint c1 left"
    );

    let again = run(&bin, &with(&["down"]));
    assert!(again.status.success(), "a second down fails");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
        "a second down says there was nothing to do"
    );
}
