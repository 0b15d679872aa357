//! A cluster's certificates on disk: one directory holding `ca.pem` and `ca.key`, and
//! `<role>-<id>.pem` / `.key` for every control node and agent. Keys are written readable by
//! their owner only, and nothing is ever overwritten: a second `init` into the same
//! directory would otherwise split the cluster into two CAs.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Ca, Identity, Pair};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
/// The cluster's first admin API token (owner-only): control nodes started with the
/// directory make it the first token; the operator's CLI reads it.
pub const ADMIN_TOKEN: &str = "admin.token";
/// The cluster's secrets key (owner-only): every control node seals and opens secrets with
/// it; it never enters the replicated state.
pub const SECRETS_KEY: &str = "secrets.key";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0} already exists; nothing was overwritten (remove it first to replace it)")]
    Exists(PathBuf),
    // The cause is the error's source: `{:#}` prints "path: cause".
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}", path.display())]
    Tls { path: PathBuf, source: crate::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<role>-<id>`: the file stem of `who`'s certificate and key.
pub fn stem(who: &Identity) -> String {
    format!("{}-{}", who.role.as_str(), who.id)
}

/// The paths `pair` would be written to under `dir` as `stem`.
pub fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = if stem == "ca" {
        (CA_CERT.to_string(), CA_KEY.to_string())
    } else {
        (format!("{stem}.pem"), format!("{stem}.key"))
    };
    (dir.join(cert), dir.join(key))
}

/// Writes `pair` as `<stem>.pem` and `<stem>.key` (mode 0600) under `dir`, creating `dir`;
/// refuses when either file exists. Returns the two paths.
pub fn write_pair(dir: &Path, stem: &str, pair: &Pair) -> Result<(PathBuf, PathBuf), FilesError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let (cert, key) = paths(dir, stem);
    for p in [&cert, &key] {
        if p.exists() {
            return Err(FilesError::Exists(p.clone()));
        }
    }
    write_new(&key, pair.key_pem.as_bytes(), 0o600)?;
    write_new(&cert, pair.cert_pem.as_bytes(), 0o644)?;
    Ok((cert, key))
}

/// Writes `text` to `dir/name`, readable by its owner only (a token, a key), creating `dir`;
/// refuses when the file exists. Returns its path.
pub fn write_private(dir: &Path, name: &str, text: &str) -> Result<PathBuf, FilesError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(name);
    write_new(&path, text.as_bytes(), 0o600)?;
    Ok(path)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FilesError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => FilesError::Exists(path.to_path_buf()),
        _ => FilesError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Reads a file as text, naming it in the error.
pub fn read(path: &Path) -> Result<String, FilesError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// The CA kept in `dir` (`ca.pem`, `ca.key`).
pub fn load_ca(dir: &Path) -> Result<Ca, FilesError> {
    let (cert, key) = paths(dir, "ca");
    let cert_pem = read(&cert)?;
    let key_pem = read(&key)?;
    Ca::from_pem(&cert_pem, &key_pem).map_err(|source| FilesError::Tls { path: key, source })
}

/// The names every certificate carries: loopback, and the holder's own name when it can be
/// a host name (control-1 in the compose cluster; an agent id such as agent-a), then `extra`.
pub fn own_hosts(who: &Identity, extra: &[String]) -> Vec<String> {
    let own = match who.role {
        crate::Role::Control => format!("control-{}", who.id),
        crate::Role::Agent => who.id.clone(),
    };
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    let looks_like_host = own
        .split('.')
        .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    for h in std::iter::once(own)
        .filter(|_| looks_like_host)
        .chain(extra.iter().cloned())
    {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts
}

/// Makes whatever of a cluster identity is missing in `dir`: the CA when there is none, then
/// a certificate for each of `who` that has none, valid for `valid`. What is there is kept,
/// so this is safe on every start (`berth dev`, test clusters). Returns the files written.
pub fn ensure(dir: &Path, who: &[Identity], valid: Duration) -> Result<Vec<PathBuf>, FilesError> {
    let mut written = Vec::new();
    let ca = if paths(dir, "ca").0.exists() {
        load_ca(dir)?
    } else {
        let ca = Ca::generate("berth", crate::CA_VALIDITY).map_err(|source| FilesError::Tls {
            path: dir.join(CA_CERT),
            source,
        })?;
        let (c, k) = write_pair(dir, "ca", &ca.pair())?;
        written.extend([c, k]);
        ca
    };
    for w in who {
        let stem = stem(w);
        let (cert, key) = paths(dir, &stem);
        if cert.exists() && key.exists() {
            continue;
        }
        let pair = ca
            .issue(w, &own_hosts(w, &[]), valid)
            .map_err(|source| FilesError::Tls {
                path: cert.clone(),
                source,
            })?;
        let (c, k) = write_pair(dir, &stem, &pair)?;
        written.extend([c, k]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CA_VALIDITY, CERT_VALIDITY};

    #[test]
    fn pairs_are_written_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("files", CA_VALIDITY).unwrap();
        write_pair(dir.path(), "ca", &ca.pair()).unwrap();
        let who = Identity::agent("a1").unwrap();
        let pair = load_ca(dir.path())
            .unwrap()
            .issue(&who, &[], CERT_VALIDITY)
            .unwrap();
        let (cert, key) = write_pair(dir.path(), &stem(&who), &pair).unwrap();
        assert_eq!(cert, dir.path().join("agent-a1.pem"));
        assert_eq!(read(&key).unwrap(), pair.key_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = write_pair(
            dir.path(),
            "ca",
            &Ca::generate("other", CA_VALIDITY).unwrap().pair(),
        );
        assert!(matches!(again, Err(FilesError::Exists(p)) if p.ends_with("ca.pem")));
        // The first CA is still the one on disk.
        assert_eq!(read(&dir.path().join(CA_CERT)).unwrap(), ca.cert_pem());
    }

    #[test]
    fn a_missing_or_broken_ca_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_ca(dir.path()).err().unwrap().to_string();
        assert!(e.contains("ca.pem"), "{e}");
        fs::write(dir.path().join(CA_CERT), "x").unwrap();
        fs::write(dir.path().join(CA_KEY), "y").unwrap();
        let e = load_ca(dir.path()).err().unwrap().to_string();
        assert!(e.contains("ca.key"), "{e}");
    }

    #[test]
    fn ensure_makes_only_what_is_missing_and_keeps_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::agent("local").unwrap();
        let first = ensure(
            dir.path(),
            &[Identity::control(1), a.clone()],
            CERT_VALIDITY,
        )
        .unwrap();
        assert_eq!(first.len(), 6, "{first:?}");
        let ca = read(&dir.path().join(CA_CERT)).unwrap();
        let agent_cert = read(&dir.path().join("agent-local.pem")).unwrap();
        let again = ensure(
            dir.path(),
            &[Identity::control(1), a, Identity::control(2)],
            CERT_VALIDITY,
        )
        .unwrap();
        assert_eq!(
            again,
            vec![
                dir.path().join("control-2.pem"),
                dir.path().join("control-2.key")
            ]
        );
        assert_eq!(read(&dir.path().join(CA_CERT)).unwrap(), ca);
        assert_eq!(
            read(&dir.path().join("agent-local.pem")).unwrap(),
            agent_cert
        );
        let issuer = crate::inspect_pem(&read(&dir.path().join("control-2.pem")).unwrap())
            .unwrap()
            .issuer;
        assert_eq!(issuer, crate::inspect_pem(&ca).unwrap().subject);
    }
}
