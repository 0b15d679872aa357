//! `berth usage`: what tasks used and what it costs, as Fargate bills.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use berth_proto::v1::usage_client::UsageClient;
use berth_proto::v1::*;
use clap::Args;

use crate::client::{Client, Retry};
use crate::output::{show, time, Table};
use crate::{ClientOpts, Format};

#[derive(Args)]
pub struct UsageArgs {
    /// Start of the period: an RFC 3339 time (2026-11-30T00:00:00Z), or a duration ago
    /// (90m, 2h, 7days). Default: everything the ledger holds.
    #[arg(long)]
    since: Option<String>,
    /// End of the period, the same forms. Default: now.
    #[arg(long)]
    until: Option<String>,
    /// Group by task, family, service, started-by or day.
    #[arg(long, default_value = "family")]
    by: String,
}

/// Milliseconds since the epoch from an RFC 3339 time or a duration before now.
pub fn parse_time(s: &str, now: SystemTime) -> Result<u64> {
    let at = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let ago = humantime::parse_duration(s).map_err(|_| {
                anyhow!(
                    "{s:?} is neither an RFC 3339 time (2026-11-30T06:00:00Z) nor a duration (2h)"
                )
            })?;
            now.checked_sub(ago)
                .ok_or_else(|| anyhow!("{s:?} reaches before the epoch"))?
        }
    };
    let since_epoch = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| anyhow!("{s:?} is before the epoch (1970-01-01T00:00:00Z)"))?;
    Ok(since_epoch.as_millis() as u64)
}

pub async fn usage(opts: &ClientOpts, a: UsageArgs) -> Result<ExitCode> {
    let now = SystemTime::now();
    let req = GetUsageRequest {
        since_ms: a.since.as_deref().map(|s| parse_time(s, now)).transpose()?,
        until_ms: a.until.as_deref().map(|s| parse_time(s, now)).transpose()?,
        by: a.by.clone(),
        stale: opts.stale,
    };
    let client = Client::for_opts(opts)?;
    let r = client
        .unary(Retry::Safe, &req, |ch, req| async move {
            UsageClient::new(ch).get(req).await
        })
        .await?;
    show(opts.output, &r, || {
        let mut t = Table::new(&[
            &a.by.to_uppercase(),
            "TASKS",
            "VCPU-HOURS",
            "GIB-HOURS",
            "COST",
        ]);
        let total = r.total.clone().unwrap_or_default();
        for l in r.lines.iter().chain(std::iter::once(&total)) {
            t.row(vec![
                if l.key.is_empty() {
                    "-".into()
                } else {
                    l.key.clone()
                },
                l.tasks.to_string(),
                format!("{:.6}", l.vcpu_hours),
                format!("{:.6}", l.gib_hours),
                format!("{:.6}", l.cost),
            ]);
        }
        if opts.output == Format::Table {
            crate::output::line(format_args!(
                "usage from {} to {} at {} per vCPU-hour and {} per GiB-hour",
                time(Some(r.since_ms)),
                time(Some(r.until_ms)),
                r.vcpu_hour_price,
                r.gib_hour_price
            ))?;
            if r.lines_left_out > 0 {
                crate::output::line(format_args!(
                    "{} more lines left out (the total counts them)",
                    r.lines_left_out
                ))?;
            }
        }
        Ok(t)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_time("1h", now).unwrap(), 6_400_000);
        assert_eq!(parse_time("1970-01-01T00:00:05Z", now).unwrap(), 5_000);
        assert!(parse_time("yesterday-ish", now).is_err());
        assert!(parse_time("10h", now).is_err());
    }
}
