use std::sync::Arc;

use berth_core::usage::{Amount, Prices, UsageBy};
use berth_proto::v1::usage_server::Usage;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use super::cluster::nanos_price;
use crate::error::ApiError;
use crate::node::{now_ms, Node};

/// Lines in one answer (about 100 bytes each): grouping by task over a busy day is the
/// largest answer, and the total still counts what is left out.
const MAX_USAGE_LINES: usize = 10_000;

pub struct UsageApi {
    pub node: Arc<Node>,
}

fn line(key: String, a: &Amount, prices: &Prices) -> UsageLine {
    UsageLine {
        key,
        tasks: a.tasks,
        vcpu_hours: a.vcpu_hours(),
        gib_hours: a.gib_hours(),
        cost: a.cost_nanos(prices) as f64 / 1e9,
    }
}

#[tonic::async_trait]
impl Usage for UsageApi {
    async fn get(
        &self,
        req: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let ns = super::namespace(&req)?;
        let r = req.into_inner();
        let by = UsageBy::parse(&r.by).ok_or_else(|| {
            ApiError::invalid(format!(
                "by {} is not one of task, family, service, started-by, day",
                berth_core::quote(&r.by)
            ))
        })?;
        let now = now_ms();
        let since = r.since_ms.unwrap_or(0);
        let until = r.until_ms.unwrap_or(now);
        if since >= until {
            return Err(ApiError::invalid(format!(
                "since {since} is not before until {until} (milliseconds since the epoch)"
            ))
            .into());
        }
        self.node.read_barrier(r.stale).await?;
        let s = self.node.state.read();
        let prices = s.state.settings().prices;
        let lines = s.state.usage_in(Some(&ns), since, until, now, by);
        let mut total = Amount::default();
        for l in &lines {
            total.add(l.amount);
        }
        // Tasks are counted per line; a task cut into days counts on each.
        if by != UsageBy::Day {
            total.tasks = lines.iter().map(|l| l.amount.tasks).sum();
        }
        let left_out = lines.len().saturating_sub(MAX_USAGE_LINES) as u64;
        Ok(Response::new(GetUsageResponse {
            lines: lines
                .iter()
                .take(MAX_USAGE_LINES)
                .map(|l| {
                    // Family and service keys as the namespace's users name them.
                    let key = match by {
                        UsageBy::Family | UsageBy::Service => {
                            berth_core::namespace::split(&l.key).1.to_string()
                        }
                        _ => l.key.clone(),
                    };
                    line(key, &l.amount, &prices)
                })
                .collect(),
            total: Some(line("total".into(), &total, &prices)),
            vcpu_hour_price: nanos_price(prices.vcpu_hour_nanos),
            gib_hour_price: nanos_price(prices.gib_hour_nanos),
            since_ms: since,
            until_ms: until,
            lines_left_out: left_out,
            revision: s.state.revision(),
        }))
    }
}
