//! The lab's daemons: detached processes recognized by pid and executable, stopped politely
//! and then not.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::state::Process;

impl Process {
    /// Running, and still the program that was started.
    pub fn alive(&self) -> bool {
        process_is(self.pid, &self.binary)
    }
}

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
pub fn stop_processes(processes: &[Process]) -> Vec<String> {
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
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
