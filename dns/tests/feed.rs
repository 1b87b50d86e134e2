//! The agent's side of the seam: [`Feeder`] sends a snapshot on every (re)connection, so a
//! restarted server is brought back up to date without the agent doing anything.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use weft_dns::feed::{FeedConnection, FeedError, Feeder};
use weft_dns::model::{Change, Endpoint, Network};
use weft_dns::store::{Store, serve_feed};

fn blue() -> Network {
    Network {
        name: "blue".into(),
        internal: false,
        gateways: vec!["10.1.0.1".parse().unwrap()],
        upstreams: None,
        zone: None,
    }
}

fn endpoint(id: &str, addr: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        network: "blue".into(),
        sandbox: None,
        addresses: vec![addr.parse().unwrap()],
        names: vec![id.into()],
        netns: None,
    }
}

/// A server's feed side on `path`; dropping the handle stops it (as a killed server would).
fn serve(path: &std::path::Path) -> (Arc<Store>, tokio::task::JoinHandle<()>) {
    let _ = std::fs::remove_file(path);
    let store = Store::new(Default::default());
    let task = tokio::spawn(serve_feed(UnixListener::bind(path).unwrap(), store.clone()));
    (store, task)
}

fn names(store: &Store) -> Vec<String> {
    let ix = store.index();
    let mut all: Vec<String> = ix
        .networks
        .iter()
        .flat_map(|n| n.names.keys().map(|k| k.to_string()))
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn a_restarted_server_gets_the_feeders_whole_data_again() {
    let dir = std::env::temp_dir().join(format!("weft-dns-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dns.sock");

    // The feeder starts before any server: changes wait in its copy.
    let feeder = Feeder::spawn(path.clone());
    feeder.upsert_network(blue());
    feeder.upsert_endpoint(endpoint("alpha", "10.1.0.2"));
    let (first, task) = serve(&path);
    feeder.upsert_endpoint(endpoint("bravo", "10.1.0.3"));
    tokio::time::timeout(Duration::from_secs(5), feeder.synced())
        .await
        .unwrap();
    assert_eq!(names(&first), ["alpha", "bravo"]);

    // The server goes away; changes made meanwhile reach the next one in its first snapshot.
    task.abort();
    let _ = task.await;
    drop(first);
    feeder.remove_endpoint("alpha");
    feeder.upsert_endpoint(endpoint("charlie", "10.1.0.4"));
    let (second, _task) = serve(&path);
    // Another change, so `synced` waits for a connection to the second server.
    feeder.upsert_endpoint(endpoint("delta", "10.1.0.5"));
    tokio::time::timeout(Duration::from_secs(5), feeder.synced())
        .await
        .unwrap();
    assert_eq!(names(&second), ["bravo", "charlie", "delta"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_invalid_change_is_refused_and_the_connection_goes_on() {
    let dir = std::env::temp_dir().join(format!("weft-dns-feed-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dns.sock");
    let (store, _task) = serve(&path);
    let mut conn = FeedConnection::connect(&path).await.unwrap();
    conn.send(&Change::UpsertNetwork(blue())).await.unwrap();
    let mut bad = endpoint("x", "10.1.0.9");
    bad.names = vec!["no spaces allowed".into()];
    assert!(matches!(
        conn.send(&Change::UpsertEndpoint(bad)).await,
        Err(FeedError::Invalid(_))
    ));
    conn.send(&Change::UpsertEndpoint(endpoint("good", "10.1.0.2")))
        .await
        .unwrap();
    assert_eq!(names(&store), ["good"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A new agent's feeder that has been told nothing yet leaves the server's names alone (its
/// connection would otherwise start with a snapshot of nothing), until its first change.
#[tokio::test]
async fn a_feeder_told_nothing_does_not_blank_the_server() {
    let dir = std::env::temp_dir().join(format!("weft-dns-feed-new-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dns.sock");
    let (store, _task) = serve(&path);
    let mut last_agent = FeedConnection::connect(&path).await.unwrap();
    last_agent
        .send(&Change::Snapshot {
            networks: vec![blue()],
            endpoints: vec![endpoint("alpha", "10.1.0.2")],
        })
        .await
        .unwrap();
    drop(last_agent);

    let feeder = Feeder::spawn(path.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names(&store), ["alpha"], "still the last agent's names");
    feeder.replace_all(vec![blue()], vec![endpoint("bravo", "10.1.0.3")]);
    tokio::time::timeout(Duration::from_secs(5), feeder.synced())
        .await
        .unwrap();
    assert_eq!(names(&store), ["bravo"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn service(id: &str, vip: &str) -> weft_dns::services::Service {
    weft_dns::services::Service {
        id: id.into(),
        network: "blue".into(),
        name: id.into(),
        vip: Some(vip.parse().unwrap()),
        endpoints: vec!["10.1.0.2".parse().unwrap()],
    }
}

/// Services ride the same connection as the names (a feeder's clone feeds them): a restarted
/// server gets them again after the snapshot, which leaves them alone; and a feeder given
/// only services never blanks the names the last agent fed.
#[tokio::test]
async fn services_are_resent_after_a_restart_and_never_blank_the_names() {
    let dir = std::env::temp_dir().join(format!("weft-dns-feed-svc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dns.sock");
    let (first, task) = serve(&path);
    let mut last_agent = FeedConnection::connect(&path).await.unwrap();
    last_agent
        .send(&Change::Snapshot {
            networks: vec![blue()],
            endpoints: vec![endpoint("alpha", "10.1.0.2")],
        })
        .await
        .unwrap();
    drop(last_agent);

    let feeder = Feeder::spawn(path.clone());
    let services = feeder.clone();
    services.replace_services(vec![service("web", "10.1.0.241")]);
    tokio::time::timeout(Duration::from_secs(5), feeder.synced())
        .await
        .unwrap();
    assert_eq!(
        names(&first),
        ["alpha", "tasks.web", "web"],
        "the last agent's names stay beside the services"
    );
    feeder.replace_all(vec![blue()], vec![endpoint("bravo", "10.1.0.3")]);
    services.upsert_service(service("db", "10.1.0.242"));
    tokio::time::timeout(Duration::from_secs(5), feeder.synced())
        .await
        .unwrap();
    assert_eq!(
        names(&first),
        ["bravo", "db", "tasks.db", "tasks.web", "web"]
    );

    // The server restarts empty while the feed is idle: names and services come back at
    // once, with no change to send (the feeder noticed the connection close).
    task.abort();
    let _ = task.await;
    drop(first);
    let (second, _task) = serve(&path);
    let started = std::time::Instant::now();
    while names(&second) != ["bravo", "db", "tasks.db", "tasks.web", "web"] {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not resent: {:?}",
            names(&second)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the deltas go on over the new connection.
    services.remove_service("web");
    feeder.upsert_endpoint(endpoint("charlie", "10.1.0.4"));
    tokio::time::timeout(Duration::from_secs(5), feeder.synced())
        .await
        .unwrap();
    assert_eq!(names(&second), ["bravo", "charlie", "db", "tasks.db"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
