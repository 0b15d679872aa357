//! Berth's cluster identity: one cluster CA, and certificates for control nodes and agents
//! that say which role and which id they belong to.
//!
//! A certificate's identity is a subject alternative name URI, `berth://control/<id>` or
//! `berth://agent/<id>`, beside the DNS names and IP addresses the holder is reached at. The
//! URI is what authorization reads (a TLS peer's verified certificate → [`identity_of`]);
//! the common name is only for people. Keys are ECDSA P-256, made and signed with `ring`.
//!
//! Certificates are checked by rustls against the cluster CA alone; this crate makes them,
//! reads them back, and writes them to disk ([`files`]).

pub mod files;
pub mod grpc;

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

/// The scheme of the identity URI.
pub const SCHEME: &str = "berth";
/// How long a cluster CA is valid unless asked otherwise.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a node's or agent's certificate is valid unless asked otherwise.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start a little in the past, so a peer whose clock is behind accepts them.
const BACKDATE: Duration = Duration::from_secs(300);
/// Ids are at most this long (agent ids are limited the same way by the API).
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("making the certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    BadId(String),
    #[error("{0} is not a host name or an IP address a certificate can carry")]
    BadHost(String),
    #[error("the certificate does not parse: {0}")]
    Parse(String),
    #[error(
        "the certificate names no Berth identity (a URI berth://control/ID or \
         berth://agent/ID among its subject alternative names); make it with `berth tls`"
    )]
    NoIdentity,
    #[error("the certificate names more than one Berth identity: {0} and {1}")]
    TwoIdentities(String, String),
    #[error("a validity of {0:?} is outside what a certificate can carry")]
    BadValidity(Duration),
}

/// What a certificate's holder is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A control node: serves the API and Raft, calls other nodes and agents.
    Control,
    /// An agent: registers, heartbeats and reports as its own id, serves task logs.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Agent => "agent",
        }
    }
}

/// A role and an id: `control/1`, `agent/compose-a`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub id: String,
}

impl Identity {
    pub fn control(id: u64) -> Self {
        Identity {
            role: Role::Control,
            id: id.to_string(),
        }
    }

    /// An agent's identity; the id must be one the API accepts for an agent.
    pub fn agent(id: &str) -> Result<Self, Error> {
        check_id(id)?;
        Ok(Identity {
            role: Role::Agent,
            id: id.to_string(),
        })
    }

    /// `berth://<role>/<id>`.
    pub fn uri(&self) -> String {
        format!("{SCHEME}://{}/{}", self.role.as_str(), self.id)
    }

    /// The identity a URI names, if it is a Berth identity URI with a valid id.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(SCHEME)?.strip_prefix("://")?;
        let (role, id) = rest.split_once('/')?;
        match role {
            "control" => id
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0 && n.to_string() == id)
                .map(Identity::control),
            "agent" => Identity::agent(id).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Role::Control => write!(f, "control node {}", self.id),
            Role::Agent => write!(f, "agent {}", self.id),
        }
    }
}

fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::BadId(format!(
            "an agent id is 1 to {MAX_ID_LEN} characters; `{id}` is {}",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::BadId(format!(
            "agent id `{id}` contains `{c}`; use letters, digits, `-`, `_` and `.`"
        )));
    }
    Ok(())
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Pair")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// The cluster CA: signs every node's and agent's certificate.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA for the cluster `name`, valid for `valid_for` from now.
    pub fn generate(name: &str, valid_for: Duration) -> Result<Ca, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("Berth cluster CA ({name})"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = at(now - BACKDATE, valid_for)?;
        params.not_after = at(now + valid_for, valid_for)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA written out earlier by [`Ca::pair`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's certificate and key, to be written out (the key stays with whoever issues).
    pub fn pair(&self) -> Pair {
        Pair {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }

    /// A certificate for `who`, reachable at `hosts` (DNS names or IP addresses), valid for
    /// `valid_for` from now.
    pub fn issue(
        &self,
        who: &Identity,
        hosts: &[String],
        valid_for: Duration,
    ) -> Result<Pair, Error> {
        let now = SystemTime::now();
        self.issue_between(who, hosts, now - BACKDATE, now + valid_for)
    }

    /// As [`Ca::issue`], valid from `not_before` to `not_after` (a certificate that has
    /// already expired, for tests of refusal).
    pub fn issue_between(
        &self,
        who: &Identity,
        hosts: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Pair, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("berth {} {}", who.role.as_str(), who.id));
        let uri = who.uri();
        let mut sans = vec![SanType::URI(
            uri.clone().try_into().map_err(|_| Error::BadId(uri))?,
        )];
        for h in hosts {
            sans.push(match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    h.clone()
                        .try_into()
                        .map_err(|_| Error::BadHost(h.clone()))?,
                ),
            });
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Both roles serve (control: API and Raft; agent: task logs) and call.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let span = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO);
        params.not_before = at(not_before, span)?;
        params.not_after = at(not_after, span)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Berth");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn at(t: SystemTime, asked: Duration) -> Result<OffsetDateTime, Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Error::BadValidity(asked))?
        .as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(Error::BadValidity(asked))
}

/// An error and its causes on one line (`a: b: c`), for messages that end up in a log or
/// a status line rather than in anyhow's `{:#}`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What a certificate says, for people (`berth tls show`) and for authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// None for a certificate that names no Berth identity (the CA's own, say).
    pub identity: Option<Identity>,
    /// A CA certificate (it may sign others).
    pub is_ca: bool,
    /// DNS names and IP addresses, as written.
    pub hosts: Vec<String>,
    pub subject: String,
    pub issuer: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The Berth identity of a certificate (DER, as a TLS peer presents it).
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, Error> {
    inspect_der(cert_der)?.identity.ok_or(Error::NoIdentity)
}

/// What a DER certificate says.
pub fn inspect_der(cert_der: &[u8]) -> Result<CertInfo, Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| Error::Parse(e.to_string()))?;
    let mut identity: Option<Identity> = None;
    let mut hosts = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Parse(e.to_string()))?;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::URI(uri) => {
                if let Some(found) = Identity::from_uri(uri) {
                    if let Some(first) = &identity {
                        return Err(Error::TwoIdentities(first.uri(), found.uri()));
                    }
                    identity = Some(found);
                }
            }
            GeneralName::DNSName(d) => hosts.push(d.to_string()),
            GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                    _ => None,
                };
                if let Some(ip) = ip {
                    hosts.push(ip.to_string());
                }
            }
            _ => {}
        }
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| Error::Parse(e.to_string()))?
        .is_some_and(|b| b.value.ca);
    Ok(CertInfo {
        identity,
        is_ca,
        hosts,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}

/// What a PEM certificate says (the first certificate in `pem`).
pub fn inspect_pem(pem: &str) -> Result<CertInfo, Error> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Parse(e.to_string()))?;
    inspect_der(&p.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_round_trip_and_odd_ones_are_not_identities() {
        for who in [
            Identity::control(1),
            Identity::control(42),
            Identity::agent("compose-a").unwrap(),
            Identity::agent("a_1.b").unwrap(),
        ] {
            assert_eq!(Identity::from_uri(&who.uri()), Some(who));
        }
        for odd in [
            "berth://control/0",
            "berth://control/01",
            "berth://control/x",
            "berth://agent/",
            "berth://agent/a/b",
            "berth://admin/1",
            "https://agent/a1",
            "berth:/agent/a1",
        ] {
            assert_eq!(Identity::from_uri(odd), None, "{odd}");
        }
        assert!(Identity::agent("has space").is_err());
        assert!(Identity::agent(&"a".repeat(65)).is_err());
    }

    #[test]
    fn an_issued_certificate_names_its_holder_hosts_and_validity() {
        let ca = Ca::generate("test", CA_VALIDITY).unwrap();
        let hosts = vec!["control-1".to_string(), "127.0.0.1".into(), "::1".into()];
        let pair = ca
            .issue(&Identity::control(1), &hosts, Duration::from_secs(3600))
            .unwrap();
        let info = inspect_pem(&pair.cert_pem).unwrap();
        assert_eq!(info.identity, Some(Identity::control(1)));
        assert!(!info.is_ca);
        assert_eq!(info.hosts, hosts);
        assert!(info.subject.contains("berth control 1"), "{}", info.subject);
        assert!(
            info.issuer.contains("Berth cluster CA (test)"),
            "{}",
            info.issuer
        );
        let left = info.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));

        // A CA read back from its PEM issues certificates under the same name.
        let ca = Ca::pair(&ca);
        let again = Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let agent = again
            .issue(&Identity::agent("a1").unwrap(), &[], CERT_VALIDITY)
            .unwrap();
        let info = inspect_pem(&agent.cert_pem).unwrap();
        assert_eq!(info.identity, Some(Identity::agent("a1").unwrap()));
        assert!(info.issuer.contains("Berth cluster CA (test)"));
        let info = inspect_pem(&ca.cert_pem).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.identity, None);
    }

    #[test]
    fn a_certificate_without_a_berth_uri_has_no_identity() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(matches!(identity_of(cert.der()), Err(Error::NoIdentity)));
        assert!(matches!(
            identity_of(b"not a certificate"),
            Err(Error::Parse(_))
        ));
        assert!(matches!(
            inspect_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(Error::Parse(_))
        ));
    }

    #[test]
    fn bad_hosts_are_refused_by_name() {
        let ca = Ca::generate("test", CA_VALIDITY).unwrap();
        let e = ca
            .issue(
                &Identity::control(1),
                &["bad host\u{e9}".to_string()],
                CERT_VALIDITY,
            )
            .unwrap_err();
        assert!(e.to_string().contains("bad host"), "{e}");
    }
}
