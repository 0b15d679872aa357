//! The CLI's config file: where the cluster is, which CA to trust and which token to send,
//! so that client verbs need no flags. `berth dev` writes it; anyone may edit it.
//!
//! One setting per line, `KEY=VALUE`, with the same keys as the environment
//! (`BERTH_ENDPOINT`, `BERTH_TLS_CA`, `BERTH_TOKEN_FILE`, `BERTH_TOKEN`); `#` starts a
//! comment. A file holding `BERTH_TOKEN` should be readable by its owner only: `write`
//! makes it so. A flag beats the environment,
//! which beats the file, which beats the built-in default.

use std::path::{Path, PathBuf};

/// Settings the file may hold: what a client verb reads, nothing a server reads.
pub const KEYS: &[&str] = &[
    "BERTH_ENDPOINT",
    "BERTH_TLS_CA",
    "BERTH_TOKEN_FILE",
    "BERTH_TOKEN",
];

/// `$BERTH_CONFIG`, else `$XDG_CONFIG_HOME/berth/config`, else `~/.config/berth/config`.
pub fn path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("BERTH_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("berth").join("config"))
}

/// The file's settings in order, or the first line that is not one, named.
pub fn parse(text: &str, origin: &Path) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", origin.display(), n + 1);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("{}: `{line}` is not KEY=VALUE", at()))?;
        let k = k.trim();
        if !KEYS.contains(&k) {
            return Err(format!(
                "{}: unknown setting {k} (known: {})",
                at(),
                KEYS.join(", ")
            ));
        }
        out.push((k.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// Puts the file's settings into this process's environment where the environment has none,
/// so that the flags' `env` fallbacks see them. Called before any thread starts. A missing
/// file is no error; an unreadable or malformed one is said on stderr and skipped.
pub fn load_into_env() {
    let Some(p) = path() else { return };
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            eprintln!("berth: {}: {e}; ignoring it", p.display());
            return;
        }
    };
    match parse(&text, &p) {
        Ok(settings) => {
            for (k, v) in settings {
                if std::env::var_os(&k).is_none() {
                    std::env::set_var(k, v);
                }
            }
        }
        Err(e) => eprintln!("berth: {e}; ignoring the file"),
    }
}

/// Writes `settings` as the config file at `p` (replacing it), with a header saying who
/// wrote it.
pub fn write(p: &Path, header: &str, settings: &[(&str, String)]) -> std::io::Result<()> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = format!("# {header}\n");
    for (k, v) in settings {
        text.push_str(&format!("{k}={v}\n"));
    }
    let tmp = p.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(&tmp)?, text.as_bytes())?;
    std::fs::rename(&tmp, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_comments_and_bad_lines() {
        let o = Path::new("cfg");
        let s = parse(
            "# made by berth dev\n\nBERTH_ENDPOINT = 127.0.0.1:7400\nBERTH_TLS_CA=/x/ca.pem\n",
            o,
        )
        .unwrap();
        assert_eq!(
            s,
            vec![
                ("BERTH_ENDPOINT".to_string(), "127.0.0.1:7400".to_string()),
                ("BERTH_TLS_CA".to_string(), "/x/ca.pem".to_string())
            ]
        );
        let e = parse("BERTH_ENDPOINT=a\nendpoint\n", o).unwrap_err();
        assert!(e.contains("cfg:2") && e.contains("KEY=VALUE"), "{e}");
        let e = parse("BERTH_TLS_DIR=/x\n", o).unwrap_err();
        assert!(e.contains("unknown setting BERTH_TLS_DIR"), "{e}");
    }
}
