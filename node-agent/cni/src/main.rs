//! `weft-cni`: the runtime runs this once per CNI call. Everything happens in
//! [`weft_cni::run`]; this only hands it the process's environment and stdin.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Variables that are not UTF-8 cannot be CNI's; skip them instead of panicking.
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    // A person typing `CNI_COMMAND=VERSION weft-cni` gets an answer instead of a wait.
    let stdin = std::io::stdin();
    let outcome = if stdin.is_terminal() {
        weft_cni::run(&env, std::io::empty())
    } else {
        weft_cni::run(&env, stdin.lock())
    };
    if !outcome.stdout.is_empty() {
        // Nothing useful is left to do if the runtime closed stdout; the exit code still tells.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", outcome.stdout).and_then(|()| stdout.flush());
    }
    ExitCode::from(outcome.exit_code)
}
