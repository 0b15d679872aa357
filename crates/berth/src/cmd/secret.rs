//! `berth secret`: values tasks get in their environment and nobody reads back.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_proto::v1::secrets_client::SecretsClient;
use berth_proto::v1::*;
use clap::Subcommand;

use crate::client::{Client, Retry};
use crate::output::{show, time, Table};
use crate::ClientOpts;

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Make a secret, or give it a new value (tasks started afterwards get it). The value is
    /// read from standard input (one trailing newline dropped) or --from-file (as it is),
    /// never from the command line, where it would stay in the shell's history.
    Put {
        name: String,
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// The namespace's secrets: names and versions, never values.
    Ls,
    /// Delete a secret. Tasks already running keep the value they started with; a task that
    /// names it cannot start.
    Rm { name: String },
}

fn table(secrets: &[SecretInfo]) -> Table {
    let mut t = Table::new(&["NAME", "NAMESPACE", "VERSION", "CREATED", "UPDATED"]);
    for s in secrets {
        t.row(vec![
            s.name.clone(),
            s.namespace.clone(),
            s.version.to_string(),
            time(Some(s.created_at_ms)),
            time(Some(s.updated_at_ms)),
        ]);
    }
    t
}

fn value(from_file: Option<PathBuf>) -> Result<Vec<u8>> {
    match from_file {
        Some(path) => std::fs::read(&path)
            .with_context(|| format!("--from-file {}: cannot read the value", path.display())),
        None => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .context("cannot read the value from standard input")?;
            if v.ends_with(b"\n") {
                v.pop();
                if v.ends_with(b"\r") {
                    v.pop();
                }
            }
            Ok(v)
        }
    }
}

pub async fn secret(opts: &ClientOpts, cmd: SecretCmd) -> Result<ExitCode> {
    let client = Client::for_opts(opts)?;
    let shown = match cmd {
        SecretCmd::Put { name, from_file } => {
            let req = PutSecretRequest {
                name,
                value: value(from_file)?,
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    SecretsClient::new(ch).put(req).await
                })
                .await?;
            r.secret
        }
        SecretCmd::Ls => {
            let req = ListSecretsRequest { stale: opts.stale };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    SecretsClient::new(ch).list(req).await
                })
                .await?;
            show(opts.output, &r, || Ok(table(&r.secrets)))?;
            return Ok(ExitCode::SUCCESS);
        }
        SecretCmd::Rm { name } => {
            let req = DeleteSecretRequest { name };
            let r = client
                .unary(Retry::OnlyIfUnsent, &req, |ch, req| async move {
                    SecretsClient::new(ch).delete(req).await
                })
                .await?;
            r.secret
        }
    };
    let list: Vec<SecretInfo> = shown.into_iter().collect();
    let answer = ListSecretsResponse {
        secrets: list.clone(),
        revision: 0,
    };
    show(opts.output, &answer, || Ok(table(&list)))?;
    Ok(ExitCode::SUCCESS)
}
