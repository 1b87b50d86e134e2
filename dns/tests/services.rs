//! Service names through real `dig`: a `vip` service's name answers its VIP, `tasks.<name>`
//! the ready endpoints, a `dnsrr` service's name the ready endpoints; only on its network.

mod common;

use anyhow::Result;
use common::{Dug, Node, dig, endpoint, network};
use weft_dns::model::Change;
use weft_dns::services::Service;

fn answer(status: &str, answers: &[&str]) -> Dug {
    Dug {
        status: status.into(),
        answers: answers.iter().map(|a| a.to_string()).collect(),
    }
}

fn service(id: &str, net: &str, vip: Option<&str>, endpoints: &[&str]) -> Service {
    Service {
        id: id.into(),
        network: net.into(),
        name: id.into(),
        vip: vip.map(|v| v.parse().unwrap()),
        endpoints: endpoints.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

#[test]
fn service_names_answer_the_vip_or_the_ready_endpoints_on_their_network_only() -> Result<()> {
    require!("dig");
    let mut node = Node::new()?;
    node.bridge("blue", &["10.10.0.1/24"])?;
    node.bridge("red", &["10.20.0.1/24"])?;
    node.sandbox("blue", &["10.10.0.2/24"], "10.10.0.1")?;
    node.sandbox("red", &["10.20.0.2/24"], "10.20.0.1")?;
    node.start_server("")?;
    node.feed(&[
        Change::Snapshot {
            networks: vec![
                network("blue", &["10.10.0.1"]),
                network("red", &["10.20.0.1"]),
            ],
            endpoints: vec![
                endpoint("a", "blue", &["10.10.0.2"], &["alpha"]),
                endpoint("c", "red", &["10.20.0.2"], &["charlie"]),
            ],
        },
        Change::ReplaceServices {
            services: vec![
                service(
                    "web",
                    "blue",
                    Some("10.10.0.241"),
                    &["10.10.0.5", "10.10.0.6"],
                ),
                service("cache", "blue", None, &["10.10.0.7", "10.10.0.8"]),
            ],
        },
    ])?;
    node.wait_listening("10.10.0.1")?;
    node.wait_listening("10.20.0.1")?;
    let blue = &node.sandboxes[0];
    let red = &node.sandboxes[1];
    assert_eq!(
        dig(blue, "10.10.0.1", "web", "A", &[])?,
        answer("NOERROR", &["10.10.0.241"])
    );
    assert_eq!(
        dig(blue, "10.10.0.1", "web.blue.weft.internal", "A", &[])?,
        answer("NOERROR", &["10.10.0.241"])
    );
    assert_eq!(
        dig(blue, "10.10.0.1", "tasks.web", "A", &[])?,
        answer("NOERROR", &["10.10.0.5", "10.10.0.6"])
    );
    assert_eq!(
        dig(blue, "10.10.0.1", "cache", "A", &[])?,
        answer("NOERROR", &["10.10.0.7", "10.10.0.8"])
    );
    assert_eq!(
        dig(blue, "10.10.0.1", "tasks.cache", "A", &[])?,
        answer("NOERROR", &["10.10.0.7", "10.10.0.8"])
    );
    // Not on red.
    assert_eq!(
        dig(red, "10.20.0.1", "web.blue", "A", &[])?,
        answer("NXDOMAIN", &[])
    );
    // An endpoint leaves the ready set: tasks.web follows; a removed service is gone.
    node.feed(&[
        Change::UpsertService(service("web", "blue", Some("10.10.0.241"), &["10.10.0.6"])),
        Change::RemoveService { id: "cache".into() },
    ])?;
    assert_eq!(
        dig(blue, "10.10.0.1", "tasks.web", "A", &[])?,
        answer("NOERROR", &["10.10.0.6"])
    );
    assert_eq!(
        dig(blue, "10.10.0.1", "cache.blue.weft.internal", "A", &[])?,
        answer("NXDOMAIN", &[])
    );
    // A snapshot (agent reconnect) leaves the services alone.
    node.feed(&[Change::Snapshot {
        networks: vec![network("blue", &["10.10.0.1"])],
        endpoints: vec![endpoint("a", "blue", &["10.10.0.2"], &["alpha"])],
    }])?;
    assert_eq!(
        dig(blue, "10.10.0.1", "web", "A", &[])?,
        answer("NOERROR", &["10.10.0.241"])
    );
    Ok(())
}

#[test]
fn a_service_with_a_bad_name_is_refused_whole() {
    let mut data = weft_dns::model::Data::default();
    let bad = Change::ReplaceServices {
        services: vec![
            service("ok", "blue", None, &[]),
            service("no way", "blue", None, &[]),
        ],
    };
    assert!(data.apply(bad).is_err());
    assert!(data.services.is_empty());
}
