//! A relay reachable from the internet behind a CA-issued certificate for its host name: peers
//! check the certificate for the name, then the relay proves its device key on the connection,
//! and that key must be a member like any other.

use casesync_node::config::FileConfig;
use casesync_node::{Node, NodeConfig};

use crate::support::*;

/// A private CA and a certificate for `localhost` from it, as PEM files in `dir`: (chain, key,
/// CA).
fn localhost_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (dir.join("relay-chain.pem"), dir.join("relay-key.pem"), dir.join("ca.pem"));
    std::fs::write(&paths.0, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&paths.1, key.serialize_pem()).unwrap();
    std::fs::write(&paths.2, ca.pem()).unwrap();
    paths
}

fn configure(dir: &std::path::Path, change: impl FnOnce(&mut FileConfig)) {
    let mut config = FileConfig::load(dir).unwrap();
    change(&mut config);
    config.save(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_behind_a_ca_certificate_proves_its_device_key() {
    let c = cluster(&["relay", "office", "home"]).await;
    let (chain, key, ca) = localhost_certificate(c._root.path());
    configure(&c.dirs[0], |config| {
        config.tls_cert = Some(chain.clone());
        config.tls_key = Some(key.clone());
    });
    for dir in &c.dirs[1..] {
        configure(dir, |config| config.tls_roots = Some(ca.clone()));
    }
    let mut relay_config = NodeConfig::new(&c.dirs[0]);
    relay_config.relay = true;
    let relay = Node::start(relay_config).await.unwrap();
    let url = format!("https://localhost:{}", relay.sync_addr().port());
    let office = start(&c.dirs[1], vec![url.clone()]).await;
    let home = start(&c.dirs[2], vec![url.clone()]).await;
    create(&office, case(1), "Anna").await;
    create(&home, case(2), "Jan").await;
    converge(&[&office, &home, &relay]).await;
    assert_eq!(state_hash(&office), state_hash(&home));
    assert_eq!(events(&relay), 2);

    // The same certificate on a machine whose device key is not a member: the name checks
    // out, the key does not.
    let impostor_dir = c._root.path().join("impostor");
    let space = office.shared().space;
    casesync_node::data_dir::init(&impostor_dir, "impostor", Some(space), true, None).unwrap();
    configure(&impostor_dir, |config| {
        config.tls_cert = Some(chain.clone());
        config.tls_key = Some(key.clone());
    });
    let impostor = Node::start(NodeConfig::new(&impostor_dir)).await.unwrap();
    let impostor_url = format!("https://localhost:{}", impostor.sync_addr().port());
    let refused = casesync_node::sync_client::sync_once(office.shared().clone(), &impostor_url, |_, _| {}).await;
    let refused = format!("{:#}", refused.unwrap_err());
    assert!(refused.contains("not a member"), "{refused}");
    assert_eq!(impostor.shared().store.vector(&space).total(), 0, "the impostor received nothing");
    // A certificate for another name is refused by the name check.
    let wrong_name = format!("https://127.0.0.1.nip.invalid:{}", relay.sync_addr().port());
    assert!(casesync_node::sync_client::sync_once(office.shared().clone(), &wrong_name, |_, _| {}).await.is_err());
    for n in [impostor, home, office, relay] {
        n.shutdown().await;
    }
}
