//! `weft-lab`: a 3-node Weft playground on one Linux machine, in one command.
//!
//! `weft-lab up` builds the daemons, starts (or reuses, via KUBECONFIG) an API server, makes
//! the nodes as network namespaces, starts a controller and one agent per node, applies
//! `examples/` and attaches two containers to the overlay network `app`. `weft-lab status`
//! shows what runs; `weft-lab down` removes all of it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_lab::up::{self, LeftBehind, UpOptions};
use weft_lab::{DEFAULT_PREFIX, Lab, down, status};

/// A Weft playground: N nodes as network namespaces on one machine.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
    /// Name prefix of the lab's network namespaces (<prefix>-ul, <prefix>-n1, <prefix>-c1…).
    #[arg(long, global = true, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// Where the lab keeps its state, logs and API server (default: /var/lib/<prefix>).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a lab: API server, nodes, controller, agents, examples, two containers.
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
        nodes: u16,
        /// Do not run `cargo build`; use the binaries already built.
        #[arg(long)]
        no_build: bool,
    },
    /// Show what runs; exits non-zero when the lab is not up.
    Status,
    /// Stop and remove everything the lab created.
    Down,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let lab = match Lab::new(&args.prefix, args.state_dir) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("weft-lab: {e:#}");
            return ExitCode::from(2);
        }
    };
    match args.command {
        Cmd::Up { nodes, no_build } => {
            let opts = UpOptions {
                nodes: usize::from(nodes),
                no_build,
            };
            match up::up(&lab, &opts).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weft-lab up failed: {e:#}");
                    if e.downcast_ref::<LeftBehind>().is_some() {
                        eprintln!("run `{}` to clean up", lab.command("down"));
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Status => match status::status(&lab).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                println!("the lab is not up");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("weft-lab status: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Down => match down::down(&lab).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft-lab down failed: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
