//! The cluster's secrets key and what it does: seal a secret's value before it is proposed
//! (so the Raft log, snapshots and sled hold ciphertext only) and open it for the agent
//! that runs a task naming it. AES-256-GCM (ring), a fresh random nonce per seal, the
//! secret's qualified name as associated data: a sealed value opens only under its name.

use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

pub use berth_tls::files::SECRETS_KEY as SECRETS_KEY_FILE;

pub struct SecretsKey(LessSafeKey);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<hidden>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a secrets key (64 lowercase hex digits)")]
    Malformed(String),
    #[error("the system's random source failed")]
    Random,
    #[error("{0}")]
    Write(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the system's random source failed")]
    Random,
    #[error("the value could not be sealed")]
    Seal,
    #[error(
        "the sealed value does not open with this cluster's secrets key (another key, or damaged)"
    )]
    Open,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl SecretsKey {
    fn from_bytes(bytes: &[u8]) -> Option<SecretsKey> {
        UnboundKey::new(&AES_256_GCM, bytes)
            .ok()
            .map(|k| SecretsKey(LessSafeKey::new(k)))
    }

    /// `value` sealed for the secret `name`: hex of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut buf = value.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Seal)?;
        Ok(format!("{}{}", hex(&nonce), hex(&buf)))
    }

    /// The value `sealed` holds, if it was sealed with this key for `name`.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = unhex(sealed).ok_or(SealError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

/// The key in `dir/secrets.key`, if the file exists.
pub fn read_key(dir: &Path) -> Result<Option<SecretsKey>, KeyError> {
    let path = dir.join(SECRETS_KEY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let malformed = || KeyError::Malformed(path.display().to_string());
    let bytes = unhex(text.trim())
        .filter(|b| b.len() == 32)
        .ok_or_else(malformed)?;
    SecretsKey::from_bytes(&bytes)
        .map(Some)
        .ok_or_else(malformed)
}

/// Makes `dir/secrets.key` (readable by its owner only) unless it exists; answers whether
/// it was made now.
pub fn ensure_key(dir: &Path) -> Result<bool, KeyError> {
    if read_key(dir)?.is_some() {
        return Ok(false);
    }
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    berth_tls::files::write_private(dir, SECRETS_KEY_FILE, &format!("{}\n", hex(&bytes)))
        .map_err(|e| KeyError::Write(berth_tls::error_chain(&e)))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_key(dir.path()).unwrap());
        assert!(!ensure_key(dir.path()).unwrap(), "kept, never replaced");
        let key = read_key(dir.path()).unwrap().unwrap();
        let sealed = key.seal("team-a/db", b"hunter2").unwrap();
        assert!(!sealed.contains(&hex(b"hunter2")));
        assert_ne!(
            sealed,
            key.seal("team-a/db", b"hunter2").unwrap(),
            "fresh nonce"
        );
        assert_eq!(key.open("team-a/db", &sealed).unwrap(), b"hunter2");
        assert!(key.open("team-b/db", &sealed).is_err(), "bound to its name");
        let other = tempfile::tempdir().unwrap();
        ensure_key(other.path()).unwrap();
        let other = read_key(other.path()).unwrap().unwrap();
        assert!(other.open("team-a/db", &sealed).is_err());
        let mut damaged = sealed.clone();
        damaged.replace_range(30..32, if &sealed[30..32] == "00" { "01" } else { "00" });
        assert!(key.open("team-a/db", &damaged).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRETS_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
