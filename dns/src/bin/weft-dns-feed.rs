//! weft-dns-feed: send feed changes by hand (one JSON change per stdin line, one ack printed
//! per line), staying connected until stdin closes. For operators and the tests that kill a
//! feeder mid-flight.

use std::path::PathBuf;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

use weft_dns::feed::FeedConnection;
use weft_dns::model::Change;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The server's feed socket.
    #[arg(long, default_value = "/run/weft/dns.sock")]
    feed: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conn = FeedConnection::connect(&args.feed).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let change: Change = serde_json::from_str(&line)?;
        conn.send(&change).await?;
        println!("applied");
    }
    Ok(())
}
