//! The cluster identity on real gRPC over loopback: tonic servers configured by
//! `Credentials::server_mutual`, guarded by `require_control` / `require_agent`, called by
//! clients configured by `Credentials::client` — a node, the right agent, the wrong agent,
//! another cluster's agent, and a caller without TLS.

use std::path::Path;
use std::time::Duration;

use berth_tls::files::{self, write_pair};
use berth_tls::grpc::{require_agent, require_control, Credentials};
use berth_tls::{Ca, Identity, CA_VALIDITY, CERT_VALIDITY};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn make(dir: &Path, ca: &Ca, who: &Identity) {
    let hosts = vec!["localhost".to_string()];
    let pair = ca.issue(who, &hosts, CERT_VALIDITY).expect("issue");
    write_pair(dir, &files::stem(who), &pair).expect("write");
}

fn cluster(dir: &Path, name: &str, who: &[Identity]) {
    let ca = Ca::generate(name, CA_VALIDITY).expect("ca");
    write_pair(dir, "ca", &ca.pair()).expect("write ca");
    for w in who {
        make(dir, &ca, w);
    }
}

type Check = fn(&Request<()>) -> Result<(), Status>;

/// A health service behind mutual TLS and `check`; its port.
async fn serve(creds: &Credentials, check: Check) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let guarded = InterceptedService::new(health, move |req: Request<()>| check(&req).map(|_| req));
    let router = Server::builder()
        .tls_config(creds.server_mutual())
        .expect("tls config")
        .add_service(guarded);
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    port
}

/// One health check through TLS as `creds`: the answer's code (Ok when served).
async fn call(creds: &Credentials, port: u16) -> Result<(), Status> {
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .expect("uri")
        .tls_config(creds.client("localhost"))
        .expect("client tls")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connect: {e:?}")))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn only_the_right_holder_gets_each_call_and_refusals_name_the_caller() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    let (n1, n2) = (Identity::control(1), Identity::control(2));
    let (a1, a2) = (
        Identity::agent("a1").expect("id"),
        Identity::agent("a2").expect("id"),
    );
    cluster(
        &ours,
        "ours",
        &[n1.clone(), n2.clone(), a1.clone(), a2.clone()],
    );
    cluster(&theirs, "theirs", std::slice::from_ref(&a1));
    let load = |dir: &Path, who: &Identity| Credentials::load(dir, who).expect("load");

    let node_only = serve(&load(&ours, &n1), |r| require_control(r).map(|_| ())).await;
    let a1_only = serve(&load(&ours, &n1), |r| require_agent(r, "a1").map(|_| ())).await;

    // A node calls a node; an agent speaks for itself.
    call(&load(&ours, &n2), node_only)
        .await
        .expect("node to node");
    call(&load(&ours, &a1), a1_only)
        .await
        .expect("agent a1 as itself");

    // An agent may not make node-to-node calls, nor speak for another agent.
    let e = call(&load(&ours, &a1), node_only)
        .await
        .expect_err("agent to node call");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("only control nodes") && e.message().contains("agent a1"),
        "{e:?}"
    );
    let e = call(&load(&ours, &a2), a1_only)
        .await
        .expect_err("a2 as a1");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("the caller is agent a2"), "{e:?}");
    let e = call(&load(&ours, &n2), a1_only)
        .await
        .expect_err("a node as a1");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Another cluster's agent, with the right name: not past the handshake.
    let e = call(&load(&theirs, &a1), a1_only)
        .await
        .expect_err("another CA");
    assert_ne!(e.code(), Code::Ok);
    assert_ne!(
        e.code(),
        Code::PermissionDenied,
        "refused before any call: {e:?}"
    );

    // No TLS at all.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{node_only}"))
        .expect("uri")
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let e = HealthClient::new(plain)
        .check(HealthCheckRequest::default())
        .await
        .expect_err("plaintext");
    assert_ne!(e.code(), Code::Ok);
}

#[test]
fn credentials_must_be_the_holders_own() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::generate("mixup", CA_VALIDITY).expect("ca");
    write_pair(tmp.path(), "ca", &ca.pair()).expect("ca");
    // Node 2's certificate copied in as node 1's.
    let pair = ca
        .issue(&Identity::control(2), &[], CERT_VALIDITY)
        .expect("issue");
    write_pair(tmp.path(), "control-1", &pair).expect("write");
    let e = Credentials::load(tmp.path(), &Identity::control(1)).expect_err("mixed up");
    let text = berth_tls::error_chain(&e);
    assert!(text.contains("control-1.pem"), "{text}");
    assert!(
        text.contains("this certificate is control node 2, not control node 1's"),
        "{text}"
    );
    let missing = Credentials::load(tmp.path(), &Identity::control(3)).expect_err("missing");
    assert!(missing.to_string().contains("control-3.pem"), "{missing}");
}
