//! The VM tier: Weft's real-kernel tests inside Debian 12's stock kernel under QEMU, for what
//! the host's kernel lacks (802.1Q, ipvlan, WireGuard, ...).
//!
//! One boot runs a whole plan of tests (`GuestTest`s, in order, one at a time) and each
//! host-side test reports one of them as its own result: the first host test to ask boots
//! the VM under a file lock and stores every result in a run directory named after the
//! nextest run; the others read them. A guest test that failed, timed out, never ran, or
//! printed `SKIP` (the VM's kernel has everything the plan's tests probe for) is a failure;
//! without QEMU the tier is a visible SKIP, or a failure where `WEFT_VM_REQUIRED=1` (CI).
//!
//! Parts: `image.sh` builds the cached guest image, `init.sh` is the guest's /init,
//! `binaries` finds the test executables, `guest` lays out the shared folder and boots.

mod binaries;
mod guest;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// One test run inside the VM: `binary` is nextest's binary id (`weft-agent::kernel`),
/// `test` the libtest name inside it.
#[derive(Clone, Copy, Debug)]
pub struct GuestTest {
    pub id: &'static str,
    pub binary: &'static str,
    pub test: &'static str,
}

/// What became of one guest test.
#[derive(Debug)]
pub enum Outcome {
    Passed { log: String },
    Failed { why: String, log: String },
    Skipped { why: String },
}

/// The outcome of the plan's test `id`, running the whole plan in the VM first unless this
/// test run already did.
pub fn outcome(plan: &[GuestTest], id: &str) -> Outcome {
    let run = match run_once(plan) {
        Ok(run) => run,
        Err(e) => {
            return Outcome::Failed {
                why: format!("the VM tier could not run: {e:#}"),
                log: String::new(),
            };
        }
    };
    run.outcome(id)
}

/// Where a test run's results live: `<target>/weft-vm/runs/<run id>`.
struct Run {
    dir: PathBuf,
}

/// `status` in a run directory: `ok`, `skip <why>` or `error <why>`.
const STATUS: &str = "status";
/// `left_out` in a run directory: the ids `WEFT_VM_ONLY` left out, one a line.
const LEFT_OUT: &str = "left_out";

/// `WEFT_VM_ONLY=a,b`: run only the plan's tests whose id contains `a` or `b` (a developer's
/// shortcut; the others are a visible SKIP, never a pass).
fn selected(plan: &[GuestTest], only: Option<&str>) -> (Vec<GuestTest>, Vec<&'static str>) {
    let Some(only) = only.filter(|o| !o.trim().is_empty()) else {
        return (plan.to_vec(), Vec::new());
    };
    let wanted: Vec<&str> = only
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    let (run, left): (Vec<GuestTest>, Vec<GuestTest>) = plan
        .iter()
        .partition(|t| wanted.iter().any(|w| t.id.contains(w)));
    (run, left.into_iter().map(|t| t.id).collect())
}

fn run_once(plan: &[GuestTest]) -> Result<Run> {
    let root = target_dir()?.join("weft-vm");
    fs::create_dir_all(root.join("runs")).context("creating the VM tier's directory")?;
    let lock = File::create(root.join("lock")).context("creating the VM tier's lock")?;
    lock.lock().context("locking the VM tier")?;
    // nextest runs each test in its own process; they share the run id. Under `cargo test`
    // one process runs them all.
    let id =
        std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
    let run = Run {
        dir: root.join("runs").join(id),
    };
    if !run.dir.join(STATUS).exists() {
        forget_old_runs(&root.join("runs"));
        fs::create_dir_all(&run.dir).context("creating the run directory")?;
        let (plan, left_out) = selected(plan, std::env::var("WEFT_VM_ONLY").ok().as_deref());
        fs::write(run.dir.join(LEFT_OUT), left_out.join("\n"))
            .context("writing the tests left out")?;
        let status = match guest::run(&plan, &run.dir) {
            Ok(()) => "ok".to_string(),
            Err(guest::Error::Unavailable(why)) if !required() => format!("skip {why}"),
            Err(guest::Error::Unavailable(why)) => {
                format!("error {why} (WEFT_VM_REQUIRED=1: the VM tier must run here)")
            }
            Err(guest::Error::Failed(e)) => format!("error {e:#}"),
        };
        fs::write(run.dir.join(STATUS), status).context("writing the run's status")?;
    }
    Ok(run)
}

impl Run {
    fn outcome(&self, id: &str) -> Outcome {
        let status = fs::read_to_string(self.dir.join(STATUS)).unwrap_or_default();
        let left_out = fs::read_to_string(self.dir.join(LEFT_OUT)).unwrap_or_default();
        if left_out.lines().any(|l| l == id) {
            return Outcome::Skipped {
                why: "left out of this run by WEFT_VM_ONLY".into(),
            };
        }
        if let Some(why) = status.strip_prefix("skip ") {
            return Outcome::Skipped { why: why.into() };
        }
        if let Some(why) = status.strip_prefix("error ") {
            return Outcome::Failed {
                why: why.into(),
                log: guest::console_tail(&self.dir),
            };
        }
        let results = self.dir.join("results");
        let log = fs::read_to_string(results.join(format!("{id}.log"))).unwrap_or_default();
        let rc = fs::read_to_string(results.join(format!("{id}.rc")));
        let why = match rc.as_deref().map(str::trim) {
            Ok("0") => match log.lines().find(|l| l.contains("SKIP")) {
                None => return Outcome::Passed { log },
                Some(line) => {
                    format!("it skipped in the VM, whose kernel should have what it needs: {line}")
                }
            },
            Ok("124") => format!(
                "timed out in the VM after {} s",
                guest::TEST_TIMEOUT.as_secs()
            ),
            Ok(rc) => format!("failed in the VM (exit code {rc})"),
            Err(_) => format!(
                "never finished in the VM; console:\n{}",
                guest::console_tail(&self.dir)
            ),
        };
        Outcome::Failed { why, log }
    }
}

fn required() -> bool {
    std::env::var("WEFT_VM_REQUIRED").is_ok_and(|v| v == "1")
}

/// The cargo target directory this test executable lives in (`target/debug/deps/x` → `target`).
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this test executable")?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("test executable has no target directory")
}

/// Results of earlier test runs older than a day are of no use to anyone.
fn forget_old_runs(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    let day_ago = SystemTime::now() - Duration::from_secs(24 * 3600);
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < day_ago);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory with `status` and, per test, an exit code and a log.
    fn run_dir(status: &str, results: &[(&str, Option<&str>, &str)]) -> (Run, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "weft-vm-unit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir_all(dir.join("results")).unwrap();
        fs::write(dir.join(STATUS), status).unwrap();
        for (id, rc, log) in results {
            if let Some(rc) = rc {
                fs::write(dir.join("results").join(format!("{id}.rc")), rc).unwrap();
            }
            fs::write(dir.join("results").join(format!("{id}.log")), log).unwrap();
        }
        (Run { dir: dir.clone() }, dir)
    }

    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn why(outcome: Outcome) -> String {
        match outcome {
            Outcome::Failed { why, .. } => why,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn only_a_clean_exit_without_skip_passes() {
        let (r, dir) = run_dir(
            "ok",
            &[
                ("good", Some("0\n"), "test t ... ok"),
                (
                    "skipped",
                    Some("0\n"),
                    "SKIP: t: this kernel has no ipvlan support",
                ),
                ("failed", Some("101\n"), "panicked"),
                ("slow", Some("124\n"), ""),
                ("never", None, ""),
            ],
        );
        assert!(matches!(r.outcome("good"), Outcome::Passed { .. }));
        assert!(why(r.outcome("skipped")).contains("skipped in the VM"));
        assert!(why(r.outcome("failed")).contains("exit code 101"));
        assert!(why(r.outcome("slow")).contains("timed out"));
        assert!(why(r.outcome("never")).contains("never finished"));
        assert!(why(r.outcome("not-in-the-plan")).contains("never finished"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn weft_vm_only_runs_the_named_tests_and_skips_the_others_visibly() {
        const PLAN: &[GuestTest] = &[
            GuestTest {
                id: "vm_a_one",
                binary: "b",
                test: "t1",
            },
            GuestTest {
                id: "vm_b_two",
                binary: "b",
                test: "t2",
            },
            GuestTest {
                id: "vm_c_three",
                binary: "b",
                test: "t3",
            },
        ];
        let ids = |p: &[GuestTest]| p.iter().map(|t| t.id).collect::<Vec<_>>();
        let (run, left) = selected(PLAN, None);
        assert_eq!((ids(&run).len(), left.len()), (3, 0));
        let (run, left) = selected(PLAN, Some(" "));
        assert_eq!((ids(&run).len(), left.len()), (3, 0));
        let (run, left) = selected(PLAN, Some("two, three"));
        assert_eq!(ids(&run), ["vm_b_two", "vm_c_three"]);
        assert_eq!(left, ["vm_a_one"]);

        let (r, dir) = run_dir("ok", &[("vm_b_two", Some("0"), "ok")]);
        fs::write(dir.join(LEFT_OUT), "vm_a_one").unwrap();
        assert!(matches!(r.outcome("vm_a_one"), Outcome::Skipped { .. }));
        assert!(matches!(r.outcome("vm_b_two"), Outcome::Passed { .. }));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_run_that_could_not_start_skips_or_fails_every_test() {
        let (r, dir) = run_dir("skip qemu-system-x86_64 not found", &[]);
        assert!(
            matches!(r.outcome("any"), Outcome::Skipped { why } if why == "qemu-system-x86_64 not found")
        );
        fs::remove_dir_all(dir).unwrap();
        let (r, dir) = run_dir("error image.sh failed", &[("t", Some("0"), "ok")]);
        assert!(why(r.outcome("t")).contains("image.sh failed"));
        fs::remove_dir_all(dir).unwrap();
    }
}
