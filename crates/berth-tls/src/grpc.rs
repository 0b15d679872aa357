//! The cluster identity on gRPC (tonic over rustls with ring): a holder's TLS settings for
//! serving and calling, and who a caller is from the certificate it presented.
//!
//! - The raft port (node-to-node calls and the agent protocol) serves with
//!   [`Credentials::server_mutual`]: a caller must present a certificate from the cluster CA.
//! - The API port serves with [`Credentials::server`]: TLS without client certificates
//!   (people and programs identify themselves with tokens there).
//! - Calls out use [`Credentials::client`]: they trust only the cluster CA and present the
//!   holder's own certificate.
//!
//! Authorization reads the verified peer certificate: [`caller`], [`require_control`],
//! [`require_agent`]. Refusals say who was expected and who called, so an operator who
//! mixed up certificates can tell which.

use std::path::Path;

use tonic::transport::{
    Certificate, ClientTlsConfig, Endpoint, Identity as TonicIdentity, ServerTlsConfig,
};
use tonic::{Request, Status};

use crate::files::{self, FilesError};
use crate::{identity_of, inspect_pem, Identity, Role};

/// A holder's certificate, key and the cluster CA, as read from a `berth tls` directory.
#[derive(Clone)]
pub struct Credentials {
    pub identity: Identity,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `who`'s credentials from `dir`: `ca.pem`, `<role>-<id>.pem` and `.key`. The
    /// certificate must name `who`: a node started with another node's files is refused
    /// here, not at its first call.
    pub fn load(dir: &Path, who: &Identity) -> Result<Credentials, FilesError> {
        let (ca, _) = files::paths(dir, "ca");
        let (cert, key) = files::paths(dir, &files::stem(who));
        let creds = Credentials {
            identity: who.clone(),
            ca_pem: files::read(&ca)?,
            cert_pem: files::read(&cert)?,
            key_pem: files::read(&key)?,
        };
        let named = inspect_pem(&creds.cert_pem)
            .map_err(|source| FilesError::Tls {
                path: cert.clone(),
                source,
            })?
            .identity;
        if named.as_ref() != Some(who) {
            return Err(FilesError::Tls {
                path: cert,
                source: crate::Error::BadId(format!(
                    "this certificate is {}, not {who}'s",
                    named.map_or("nobody's".to_string(), |n| n.to_string())
                )),
            });
        }
        Ok(creds)
    }

    /// Serve TLS and require a client certificate from the cluster CA.
    pub fn server_mutual(&self) -> ServerTlsConfig {
        self.server()
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// Serve TLS; callers need no certificate.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(TonicIdentity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// Call a server of this cluster reached as `host` (its certificate must name it),
    /// presenting this holder's certificate.
    pub fn client(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TonicIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(host)
    }

    /// `endpoint` (an `https://` one, see [`uri`]) as mutual TLS with this holder.
    pub fn secure(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        let host = host_of(&endpoint);
        endpoint.tls_config(self.client(&host))
    }
}

/// `endpoint` (an `https://` one) as server-only TLS to an API port, trusting only `ca`;
/// the server's certificate must name the host it is reached at.
pub fn trusting(endpoint: Endpoint, ca: Certificate) -> Result<Endpoint, tonic::transport::Error> {
    let host = host_of(&endpoint);
    endpoint.tls_config(ClientTlsConfig::new().ca_certificate(ca).domain_name(host))
}

/// `addr` (HOST:PORT, with or without a scheme) as a URI: `https://` when `tls`, else
/// `http://`.
pub fn uri(addr: &str, tls: bool) -> String {
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{bare}")
}

/// The host an endpoint reaches (an IPv6 address without its brackets): the name the
/// server's certificate must carry.
pub fn host_of(endpoint: &Endpoint) -> String {
    endpoint
        .uri()
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Who called: the identity in the certificate the caller presented (already verified
/// against the cluster CA by the TLS handshake).
pub fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "this port takes only callers with a certificate from the cluster CA; none was presented",
        )
    })?;
    let first = certs.first().ok_or_else(|| {
        Status::unauthenticated("the caller's TLS session carries no certificate")
    })?;
    seen_identity(first)
        .map_err(|e| Status::unauthenticated(format!("the caller's certificate: {e}")))
}

/// Certificates kept in [`seen_identity`]'s table before it starts afresh: a cluster's
/// agents and nodes, with room for a fleet's certificates being renewed.
const SEEN_MAX: usize = 65_536;

/// The identity of a certificate the TLS layer has already verified, parsed once per
/// certificate rather than once per call: every call on the raft port asks who its caller
/// is, and parsing X.509 for each heartbeat of 10,000 agents a second was a measurable
/// share of the leader's core. Keyed by the exact DER, so the answer is the parse's.
fn seen_identity(der: &[u8]) -> Result<Identity, crate::Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<Box<[u8]>, Identity>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    // A lookup or an insert: the table is consistent whatever a panicking holder did.
    let lock = || seen.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(who) = lock().get(der) {
        return Ok(who.clone());
    }
    let who = identity_of(der)?;
    let mut table = lock();
    if table.len() >= SEEN_MAX {
        table.clear();
    }
    table.insert(der.into(), who.clone());
    Ok(who)
}

/// The caller must be a control node (node-to-node calls: Raft, forwarding, membership).
pub fn require_control<T>(req: &Request<T>) -> Result<Identity, Status> {
    let who = caller(req)?;
    match who.role {
        Role::Control => Ok(who),
        Role::Agent => Err(Status::permission_denied(format!(
            "only control nodes may make this call; the caller is {who}"
        ))),
    }
}

/// The caller must be the agent `agent_id` itself: an agent speaks only for itself.
pub fn require_agent<T>(req: &Request<T>, agent_id: &str) -> Result<Identity, Status> {
    let who = caller(req)?;
    if who.role == Role::Agent && who.id == agent_id {
        return Ok(who);
    }
    let id = shown(agent_id);
    Err(Status::permission_denied(format!(
        "only agent {id} may speak for agent {id}; the caller is {who}"
    )))
}

/// An id as a message may carry it: whole when it could be an id, else a prefix and its
/// length (a caller's 100 KB id must not come back at it twice).
fn shown(id: &str) -> String {
    if id.len() <= crate::MAX_ID_LEN {
        return id.to_string();
    }
    let mut end = crate::MAX_ID_LEN;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &id[..end], id.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, CERT_VALIDITY};

    fn der(ca: &Ca, who: &Identity) -> Vec<u8> {
        let pem = ca.issue(who, &[], CERT_VALIDITY).unwrap().cert_pem;
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    #[test]
    fn a_remembered_identity_is_the_certificates_own() {
        let ca = Ca::generate("test", CERT_VALIDITY).unwrap();
        let (a1, a2) = (
            Identity::agent("a1").unwrap(),
            Identity::agent("a2").unwrap(),
        );
        let (d1, d2) = (der(&ca, &a1), der(&ca, &a2));
        for _ in 0..2 {
            assert_eq!(seen_identity(&d1).unwrap(), a1);
            assert_eq!(seen_identity(&d2).unwrap(), a2);
        }
        assert!(seen_identity(b"not a certificate").is_err());
        assert!(
            seen_identity(b"not a certificate").is_err(),
            "failures are not kept"
        );
    }
}
