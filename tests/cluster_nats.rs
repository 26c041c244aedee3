//! How a node reaches NATS, end to end on a real `nats-server -js`: with a password or
//! an nkey seed (`cluster.credentials`),
//! through a list of servers (a wrong password or none keeps the node out of the
//! cluster while it serves its own players),
//! over TLS signed by the CA in `cluster.tls_ca` (without it, the same server is not
//! trusted), and with the registry bucket kept where `cluster.storage` and
//! `cluster.replicas` say.

mod common;

use async_nats::jetstream::{self, stream::StorageType};
use common::{
    cluster::{names, node_config, sees, HEARTBEAT, NODE_TTL},
    nats::Nats,
    TestServer,
};
use quicmatch::{config::ClusterStorage, Stats};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// Whether `stats` comes to see `name` within 30 heartbeats (it should not; one that
/// could join would within a few).
async fn ever_sees(stats: &Stats, name: &str) -> bool {
    tokio::time::timeout(HEARTBEAT * 30, async {
        while !names(stats).iter().any(|n| n == name) {
            tokio::time::sleep(HEARTBEAT / 4).await;
        }
    })
    .await
    .is_ok()
}

/// A node that is not in the cluster still serves a player.
async fn serves_alone(node: &TestServer) {
    let player = node.client("loner").await;
    player.create_match(None).await.expect("a match on its own");
    assert!(names(&node.stats).is_empty(), "{:?}", names(&node.stats));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_its_nkey_seed_joins_and_others_stay_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = nkeys::KeyPair::new_user();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .expect("write the NATS config");
    let Some(nats) = Nats::start_with(&["-c", &conf.display().to_string()]) else {
        return;
    };
    let seed_file = |name: &str, key: &nkeys::KeyPair| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{}\n", key.seed().expect("seed"))).expect("write");
        path
    };
    let mut config = node_config(&nats.url(), "a");
    config.cluster.credentials = Some(seed_file("a.nk", &user));
    let a = TestServer::start_with(config).await;
    sees(&a.stats, &["a"], "a registered with its seed").await;

    // Another user's seed, and none at all.
    let mut config = node_config(&nats.url(), "b");
    config.cluster.credentials = Some(seed_file("b.nk", &nkeys::KeyPair::new_user()));
    let b = TestServer::start_with(config).await;
    let c = TestServer::start_with(node_config(&nats.url(), "c")).await;
    assert!(
        !ever_sees(&a.stats, "b").await,
        "a node with an unknown nkey joined"
    );
    assert!(
        !ever_sees(&a.stats, "c").await,
        "a node without credentials joined"
    );
    serves_alone(&b).await;
    serves_alone(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_password_joins_and_one_without_it_stays_alone() {
    let Some(nats) = Nats::start_with(&["--user", "quicmatch", "--pass", "s3cret"]) else {
        return;
    };
    // A list: a server where nothing listens, then the real one with the password
    // (which the whole list uses).
    let list = format!("nats://127.0.0.1:1, {}", nats.url_as("quicmatch", "s3cret"));
    let a = TestServer::start_with(node_config(&list, "a")).await;
    sees(&a.stats, &["a"], "a registered with the password").await;

    let b = TestServer::start_with(node_config(&nats.url_as("quicmatch", "wrong"), "b")).await;
    let c = TestServer::start_with(node_config(&nats.url(), "c")).await;
    assert!(
        !ever_sees(&a.stats, "b").await,
        "a node with a wrong password joined"
    );
    assert!(
        !ever_sees(&a.stats, "c").await,
        "a node without a password joined"
    );
    serves_alone(&b).await;
    serves_alone(&c).await;
    assert_eq!(names(&a.stats), ["a"]);
}

/// A CA and a certificate it signs for 127.0.0.1, as PEM files in `dir`: (CA, cert, key).
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), ca.pem()).expect("write CA");
    std::fs::write(path("nats.pem"), cert.pem()).expect("write cert");
    std::fs::write(path("nats.key"), key.serialize_pem()).expect("write key");
    (path("ca.pem"), path("nats.pem"), path("nats.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_trusts_the_tls_ca_it_is_given_and_no_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(dir.path());
    let Some(nats) = Nats::start_with(&["--tls", "--tlscert", &cert, "--tlskey", &key]) else {
        return;
    };
    let url = format!("tls://{}", nats.addr);
    let mut trusting = node_config(&url, "a");
    trusting.cluster.tls_ca = Some(ca.into());
    let a = TestServer::start_with(trusting).await;
    sees(&a.stats, &["a"], "a registered over TLS").await;

    // The same server, checked against the system's roots: not trusted.
    let b = TestServer::start_with(node_config(&url, "b")).await;
    assert!(
        !ever_sees(&a.stats, "b").await,
        "a node joined over untrusted TLS"
    );
    serves_alone(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_bucket_is_kept_where_the_config_says() {
    let Some(nats) = Nats::start() else {
        return;
    };
    let mut config = node_config(&nats.url(), "a");
    config.cluster.name = "mem".into();
    config.cluster.storage = ClusterStorage::Memory;
    let a = TestServer::start_with(config).await;
    sees(&a.stats, &["a"], "a registered").await;
    let b = TestServer::start_with(node_config(&nats.url(), "b")).await;
    sees(&b.stats, &["b"], "b registered in its own cluster").await;

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    for (stream, storage) in [
        ("KV_qm_mem_nodes", StorageType::Memory),
        ("KV_qm_quicmatch_nodes", StorageType::File),
    ] {
        let mut stream = js.get_stream(stream).await.expect(stream);
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.storage, storage);
        assert_eq!(info.config.num_replicas, 1);
        assert_eq!(info.config.max_age, NODE_TTL);
    }
    // Two clusters on one NATS do not see each other.
    assert_eq!(names(&a.stats), ["a"]);
}
