//! Log setup: `RUST_LOG` if set, else `info` with kube's own chatter at `warn`.

use clap::ValueEnum;

/// `--log-format`.
#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Install the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
