//! The certificates `berth-tls` makes, used as the cluster will use them: a server that
//! accepts only clients with a certificate from the cluster CA (rustls's WebPKI verifier,
//! as tonic's TLS uses), over real TCP on loopback. The server learns the client's role and
//! id from the verified certificate; another CA's certificate, an expired one and none at
//! all are refused in the handshake.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_tls::{identity_of, Ca, Identity, Pair, CA_VALIDITY, CERT_VALIDITY};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Ca) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("ca pem"))
        .expect("ca");
    Arc::new(roots)
}

fn chain(p: &Pair) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        vec![CertificateDer::from_pem_slice(p.cert_pem.as_bytes()).expect("cert pem")],
        PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).expect("key pem"),
    )
}

fn server_config(ca: &Ca, server: &Pair) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .expect("verifier");
    let (certs, key) = chain(server);
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .expect("server cert"),
    )
}

fn client_config(trusted: &Ca, client: Option<&Pair>) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(trusted));
    Arc::new(match client {
        Some(p) => {
            let (certs, key) = chain(p);
            b.with_client_auth_cert(certs, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    })
}

/// One connection: what the server made of the client (its identity, or the handshake
/// error), and whether the client got the server's answer.
async fn connect(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (Result<Identity, String>, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no client certificate")?;
        let who = identity_of(&der).map_err(|e| e.to_string())?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(who)
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let answered = match TlsConnector::from(client).connect(name, tcp).await {
        Ok(mut tls) => {
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await.is_ok() && buf == b"hello"
        }
        Err(_) => false,
    };
    let served = tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("server ended")
        .expect("server task");
    (served, answered)
}

#[tokio::test]
async fn only_certificates_of_the_cluster_ca_get_through_and_name_their_holder() {
    let ca = Ca::generate("cluster", CA_VALIDITY).expect("ca");
    let node = ca
        .issue(
            &Identity::control(1),
            &["localhost".into(), "127.0.0.1".into()],
            CERT_VALIDITY,
        )
        .expect("node cert");
    let server = server_config(&ca, &node);
    let a1 = Identity::agent("a1").expect("id");

    // An agent of this cluster: through, and known as itself.
    let agent = ca.issue(&a1, &[], CERT_VALIDITY).expect("agent cert");
    let (who, answered) = connect(
        server.clone(),
        client_config(&ca, Some(&agent)),
        "localhost",
    )
    .await;
    assert_eq!(who, Ok(a1.clone()));
    assert!(answered);
    // The node's certificate names its addresses: reached by IP too.
    let (who, _) = connect(
        server.clone(),
        client_config(&ca, Some(&agent)),
        "127.0.0.1",
    )
    .await;
    assert_eq!(who, Ok(a1.clone()));

    // Another cluster's agent: refused in the handshake.
    let other = Ca::generate("other", CA_VALIDITY).expect("other ca");
    let stranger = other.issue(&a1, &[], CERT_VALIDITY).expect("stranger");
    let (who, answered) = connect(
        server.clone(),
        client_config(&ca, Some(&stranger)),
        "localhost",
    )
    .await;
    let e = who.expect_err("another CA's certificate is refused");
    assert!(
        e.contains("UnknownIssuer") || e.contains("unknown issuer"),
        "{e}"
    );
    assert!(!answered);

    // Expired yesterday: refused.
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let expired = ca
        .issue_between(&a1, &[], now - 2 * day, now - day)
        .expect("expired cert");
    let (who, answered) = connect(
        server.clone(),
        client_config(&ca, Some(&expired)),
        "localhost",
    )
    .await;
    let e = who.expect_err("an expired certificate is refused");
    assert!(e.contains("Expired") || e.contains("expired"), "{e}");
    assert!(!answered);

    // No certificate at all: refused.
    let (who, answered) = connect(server.clone(), client_config(&ca, None), "localhost").await;
    assert!(who.is_err());
    assert!(!answered);

    // And the client checks the server: a node of another cluster is not trusted.
    let impostor = other
        .issue(&Identity::control(1), &["localhost".into()], CERT_VALIDITY)
        .expect("impostor");
    let (_, answered) = connect(
        server_config(&other, &impostor),
        client_config(&ca, Some(&agent)),
        "localhost",
    )
    .await;
    assert!(
        !answered,
        "a client must not talk to a server outside its CA"
    );
}
