//! `weft-agent`: the node agent (work in progress: see docs/ARCHITECTURE.md).

fn main() {
    eprintln!(
        "weft-agent {}: the node agent is not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
