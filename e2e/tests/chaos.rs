//! The chaos suite (`weft_e2e::chaos`): a short seeded run is part of the normal test
//! command; the long soak is `--ignored`:
//!
//! ```sh
//! WEFT_CHAOS_OPS=10000 WEFT_CHAOS_SEED=42 cargo nextest run -p weft-e2e --test chaos \
//!     --run-ignored only --no-capture
//! ```
//!
//! A violation prints `CHAOS VIOLATION: seed S after operation I: …`; the same
//! `WEFT_CHAOS_SEED` (and `WEFT_CHAOS_OPS` ≥ I + 1) replays the same operations.

use weft_e2e::chaos::{ChaosConfig, ChaosReport, run};

fn print(report: &ChaosReport) {
    println!(
        "chaos: seed {}, {} operations ({} faults), {} quiet points ({} Ready endpoints checked), {} violations, {:.1} s",
        report.seed,
        report.ops,
        report.faults(),
        report.quiet_points,
        report.checked,
        report.violations.len(),
        report.elapsed.as_secs_f64()
    );
    println!("chaos: operations by kind: {:?}", report.done);
    for v in &report.violations {
        println!("chaos: {v}");
    }
}

async fn chaos(default_ops: usize) {
    let cfg = ChaosConfig::from_env(default_ops);
    println!(
        "chaos: seed {} ({} operations); replay with WEFT_CHAOS_SEED={}",
        cfg.seed, cfg.ops, cfg.seed
    );
    let report = run(&cfg)
        .await
        .unwrap_or_else(|e| panic!("chaos run (seed {}) failed: {e:#}", cfg.seed));
    print(&report);
    assert!(
        report.violations.is_empty(),
        "seed {}: {} violations: {:#?}",
        report.seed,
        report.violations.len(),
        report.violations
    );
}

/// A few hundred operations, a few minutes at most.
#[tokio::test]
async fn chaos_short_run_keeps_every_invariant() {
    chaos(200).await;
}

/// The soak: `WEFT_CHAOS_OPS` operations (default 10,000).
#[tokio::test]
#[ignore]
async fn chaos_soak() {
    chaos(10_000).await;
}
