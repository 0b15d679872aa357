//! `berth events`: what happens in the cluster, in state-revision order.

use std::process::ExitCode;

use anyhow::{bail, Result};
use berth_proto::v1::events_client::EventsClient;
use berth_proto::v1::*;
use clap::Args;
use tokio_stream::StreamExt;

use crate::client::{Client, Retry};
use crate::output::line;
use crate::{ClientOpts, Format};

#[derive(Args)]
pub struct EventsArgs {
    /// Replay every event after this revision first (each node keeps the last 10,000 it
    /// saw); 0 shows only what happens from now.
    #[arg(long, default_value_t = 0)]
    since_revision: u64,
    /// Keep following; without it the command ends once it has caught up.
    #[arg(long)]
    follow: bool,
}

pub async fn events(opts: &ClientOpts, a: EventsArgs) -> Result<ExitCode> {
    let client = Client::for_opts(opts)?;
    let req = WatchEventsRequest {
        since_revision: a.since_revision,
    };
    let mut stream = client
        .unary(Retry::Safe, &req, |ch, req| async move {
            EventsClient::new(ch).watch(req).await
        })
        .await?;
    let mut last = a.since_revision;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(s) => bail!("{} (resume with --since-revision {last})", s.message()),
        };
        if ev.kind == "caught-up" {
            if !a.follow {
                return Ok(ExitCode::SUCCESS);
            }
            continue;
        }
        last = ev.revision;
        match opts.output {
            Format::Json => line(format_args!("{}", serde_json::to_string(&ev)?))?,
            Format::Table | Format::Csv => line(format_args!(
                "rev {:>8}  {:<15}  {}",
                ev.revision, ev.kind, ev.message
            ))?,
        }
    }
    bail!("the event stream ended (the node may have stopped); resume with --since-revision {last}")
}
