//! `berth token`: API tokens, an admin's to make and revoke.

use std::process::ExitCode;

use anyhow::Result;
use berth_proto::v1::tokens_client::TokensClient;
use berth_proto::v1::*;
use clap::Subcommand;

use crate::client::{Client, Retry};
use crate::output::{line, show, time, Table};
use crate::{ClientOpts, Format};

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a token and print it: the only time its text is shown. The state keeps its
    /// SHA-256 only.
    Create {
        /// What it is for ("ci", "alice"): shown by `token ls`.
        name: String,
        /// admin (membership, settings, tokens, everything else), operator (read and
        /// write tasks, task definitions and services), reader (read only).
        #[arg(long, value_parser = ["admin", "operator", "reader"])]
        role: String,
        /// A namespace the token may use; repeat for more, `*` for all. Without it, the
        /// namespace of --namespace (BERTH_NAMESPACE), else `default`. An admin's token
        /// may use every one.
        #[arg(long = "for-namespace", value_name = "NAME")]
        namespaces: Vec<String>,
    },
    /// Every token, revoked ones included (never their text).
    Ls,
    /// Revoke a token by its accessor (the hex after `berth_`, as `token ls` shows it):
    /// every node refuses it from the revision that revoked it.
    Revoke { accessor: String },
}

fn tokens_table(tokens: &[AccessToken]) -> Table {
    let mut t = Table::new(&[
        "ACCESSOR",
        "NAME",
        "ROLE",
        "NAMESPACES",
        "CREATED",
        "BY",
        "REVOKED AT",
    ]);
    for k in tokens {
        t.row(vec![
            k.accessor.clone(),
            k.name.clone(),
            k.role.clone(),
            k.namespaces.join(","),
            time(Some(k.created_at_ms)),
            if k.created_by.is_empty() {
                "(first)".into()
            } else {
                k.created_by.clone()
            },
            k.revoked_at_revision
                .map(|r| format!("revision {r}"))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

pub async fn token(opts: &ClientOpts, cmd: TokenCmd) -> Result<ExitCode> {
    let client = Client::for_opts(opts)?;
    match cmd {
        TokenCmd::Create {
            name,
            role,
            namespaces,
        } => {
            // Scoped to the namespaces named, else to the one the call names.
            let namespaces = if namespaces.is_empty() {
                opts.namespace.iter().cloned().collect()
            } else {
                namespaces
            };
            let req = CreateTokenRequest {
                name,
                role,
                namespaces,
            };
            // Not retried after it may have reached a node: a second token would be made.
            let r = client
                .unary(Retry::OnlyIfUnsent, &req, |ch, req| async move {
                    TokensClient::new(ch).create(req).await
                })
                .await?;
            match opts.output {
                Format::Json => crate::output::json(&r)?,
                Format::Table | Format::Csv => {
                    let t = r.token.unwrap_or_default();
                    line(format_args!("{}", r.secret))?;
                    eprintln!(
                        "token {} ({}, {}, namespaces {}): shown once; keep it secret \
                         (`--token-file FILE` or BERTH_TOKEN pass it to the CLI)",
                        t.accessor,
                        t.name,
                        t.role,
                        t.namespaces.join(",")
                    );
                }
            }
        }
        TokenCmd::Ls => {
            let req = ListTokensRequest { stale: opts.stale };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TokensClient::new(ch).list(req).await
                })
                .await?;
            show(opts.output, &r, || Ok(tokens_table(&r.tokens)))?;
        }
        TokenCmd::Revoke { accessor } => {
            let req = RevokeTokenRequest { accessor };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TokensClient::new(ch).revoke(req).await
                })
                .await?;
            let tokens: Vec<AccessToken> = r.token.clone().into_iter().collect();
            show(opts.output, &r, || Ok(tokens_table(&tokens)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
