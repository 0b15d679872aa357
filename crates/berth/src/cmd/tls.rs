//! `berth tls`: the cluster CA and the certificates of control nodes and agents, made here
//! and written to a directory (see `berth_tls::files` for the layout).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use berth_tls::files::{self, own_hosts, write_pair};
use berth_tls::{inspect_pem, Ca, Identity, CA_VALIDITY, CERT_VALIDITY};
use clap::Subcommand;

use berth_control::auth::ADMIN_TOKEN_FILE;

use crate::output::{line, time};

const DAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Subcommand, Debug)]
pub enum TlsCmd {
    /// Make a cluster CA and certificates for control nodes (and agents) in a new directory.
    Init {
        /// Where to write them; files already there are never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// The cluster's name, in the CA's common name.
        #[arg(long, default_value = "berth")]
        cluster: String,
        /// Control node ids to make certificates for.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        control_ids: Vec<u64>,
        /// Agent ids to make certificates for (repeat or comma-separate).
        #[arg(long = "agent", value_delimiter = ',')]
        agents: Vec<String>,
        /// More names or addresses the control nodes are reached at (repeatable); each
        /// already carries localhost, 127.0.0.1, ::1 and control-ID.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How long the node and agent certificates are valid (the CA: ten years).
        #[arg(long, default_value_t = CERT_VALIDITY.as_secs() / DAY.as_secs())]
        days: u64,
    },
    /// Make one more certificate with the CA in DIR.
    #[command(group(clap::ArgGroup::new("who").required(true).args(["control", "agent"])))]
    Issue {
        /// The directory holding ca.pem and ca.key; the certificate is written there too.
        #[arg(long)]
        dir: PathBuf,
        /// A control node's certificate.
        #[arg(long)]
        control: Option<u64>,
        /// An agent's certificate.
        #[arg(long)]
        agent: Option<String>,
        /// Names or addresses it is reached at, beyond localhost, 127.0.0.1, ::1 and its
        /// own name (control-ID, or the agent id).
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long, default_value_t = CERT_VALIDITY.as_secs() / DAY.as_secs())]
        days: u64,
    },
    /// Make the cluster's first admin token in DIR/admin.token (`init` makes it too), for a
    /// directory made before tokens; an existing one is kept.
    AdminToken {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Make the cluster's secrets key in DIR/secrets.key (`init` makes it too), for a
    /// directory made before secrets; an existing one is kept. Every control node needs
    /// the same one.
    SecretsKey {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Show what certificates say: whose they are, where they may be served, until when.
    Show {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn tls(cmd: TlsCmd) -> Result<ExitCode> {
    match cmd {
        TlsCmd::Init {
            out,
            cluster,
            control_ids,
            agents,
            hosts,
            days,
        } => {
            let valid = validity(days)?;
            if control_ids.contains(&0) {
                bail!("control node ids start at 1");
            }
            let agents = agents
                .iter()
                .map(|a| Identity::agent(a))
                .collect::<Result<Vec<_>, _>>()?;
            // Everything is made before anything is written: a bad argument leaves no
            // half-made directory behind.
            let ca = Ca::generate(&cluster, CA_VALIDITY)?;
            let mut made = vec![("ca".to_string(), ca.pair())];
            for id in control_ids {
                let who = Identity::control(id);
                made.push((
                    files::stem(&who),
                    ca.issue(&who, &own_hosts(&who, &hosts), valid)?,
                ));
            }
            for who in agents {
                made.push((
                    files::stem(&who),
                    ca.issue(&who, &own_hosts(&who, &[]), valid)?,
                ));
            }
            for (stem, _) in &made {
                let (cert, key) = files::paths(&out, stem);
                for p in [cert, key] {
                    if p.exists() {
                        bail!(
                            "{} already exists; nothing was written (use another --out, or \
                             `berth tls issue --dir {}` for more certificates)",
                            p.display(),
                            out.display()
                        );
                    }
                }
            }
            if out.join(ADMIN_TOKEN_FILE).exists() {
                bail!(
                    "{} already exists; nothing was written (use another --out)",
                    out.join(ADMIN_TOKEN_FILE).display()
                );
            }
            for (stem, pair) in &made {
                written(write_pair(&out, stem, pair)?)?;
            }
            admin_token(&out)?;
            secrets_key(&out)?;
            line(format_args!(
                "keep {} private: whoever holds it can make certificates for this cluster",
                out.join(files::CA_KEY).display()
            ))?;
        }
        TlsCmd::Issue {
            dir,
            control,
            agent,
            hosts,
            days,
        } => {
            let valid = validity(days)?;
            let who = match (control, agent) {
                (Some(0), _) => bail!("control node ids start at 1"),
                (Some(id), _) => Identity::control(id),
                (None, Some(a)) => Identity::agent(&a)?,
                (None, None) => bail!("say --control ID or --agent ID"),
            };
            let ca = files::load_ca(&dir)?;
            let pair = ca.issue(&who, &own_hosts(&who, &hosts), valid)?;
            written(write_pair(&dir, &files::stem(&who), &pair)?)?;
        }
        TlsCmd::AdminToken { dir } => admin_token(&dir)?,
        TlsCmd::SecretsKey { dir } => secrets_key(&dir)?,
        TlsCmd::Show { files } => {
            for f in files {
                show(&f)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes DIR/secrets.key unless it exists, and says which.
fn secrets_key(dir: &Path) -> Result<()> {
    let made = berth_control::secrets::ensure_key(dir)?;
    line(format_args!(
        "{} {}: the key every control node seals secrets with (give each node this \
         directory's copy). Keep it private.",
        if made { "wrote" } else { "kept" },
        dir.join(berth_control::secrets::SECRETS_KEY_FILE).display()
    ))?;
    Ok(())
}

/// Makes DIR/admin.token unless it exists, and says which.
fn admin_token(dir: &Path) -> Result<()> {
    let (_, made) = berth_control::auth::ensure_admin_token(dir)?;
    let path = dir.join(ADMIN_TOKEN_FILE);
    line(format_args!(
        "{} {}: the cluster's first admin token (control nodes started with this directory \
         make it the first token; `--token-file {}` gives it to the CLI). Keep it private.",
        if made { "wrote" } else { "kept" },
        path.display(),
        path.display()
    ))?;
    Ok(())
}

fn validity(days: u64) -> Result<Duration> {
    if !(1..=3650).contains(&days) {
        bail!("--days {days} is outside 1..=3650");
    }
    Ok(DAY * days as u32)
}

fn written((cert, key): (PathBuf, PathBuf)) -> Result<()> {
    line(format_args!(
        "wrote {} and {}",
        cert.display(),
        key.display()
    ))?;
    Ok(())
}

fn show(path: &Path) -> Result<()> {
    let pem = files::read(path)?;
    let info = inspect_pem(&pem).with_context(|| path.display().to_string())?;
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .ok()
    };
    let state = if info.not_after < SystemTime::now() {
        "EXPIRED"
    } else {
        "valid"
    };
    let whose = match (&info.identity, info.is_ca) {
        (Some(who), _) => format!("{who} ({})", who.uri()),
        (None, true) => format!("a CA ({})", info.subject),
        (None, false) => format!("no Berth identity ({})", info.subject),
    };
    line(format_args!(
        "{}: {whose}, {state} {} .. {}, hosts {}, issued by {}",
        path.display(),
        time(ms(info.not_before)),
        time(ms(info.not_after)),
        if info.hosts.is_empty() {
            "-".to_string()
        } else {
            info.hosts.join(" ")
        },
        info.issuer
    ))?;
    Ok(())
}
