use std::sync::Arc;

use berth_core::limits::*;
use berth_core::schedule::{CatchUp, Overlap, Schedule, ScheduleSpec};
use berth_core::{quote, Outcome};
use berth_proto::convert::{
    constraints_from_wire, overrides_from_wire, schedule_run_to_wire, schedule_to_wire,
    strategies_from_wire,
};
use berth_proto::v1::schedules_server::Schedules;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use super::{page, page_size, unexpected};
use crate::error::{ApiError, ApiResult};
use crate::node::{Node, WriteRequest};

pub struct SchedulesApi {
    pub node: Arc<Node>,
}

/// A user's schedule name, checked, as the state names it in namespace `ns`.
fn schedule_name(ns: &str, field: &str, name: &str) -> ApiResult<String> {
    berth_core::validate::name(field, name)?;
    super::qualify(ns, field, name)
}

/// The next scheduled time after what the schedule has dealt with, or None when none is
/// left (or its expression no longer parses, which creation prevents).
pub(crate) fn next_fire(s: &Schedule) -> Option<u64> {
    let expr = berth_cron::Schedule::parse(&s.spec.expression, &s.spec.timezone).ok()?;
    let (cursor, anchor) = s.cursor();
    let t = expr.next_after(cursor, anchor)?;
    match s.spec.end_at {
        Some(end) if t > end => None,
        _ => Some(t),
    }
}

fn wire(s: &Schedule) -> berth_proto::v1::Schedule {
    schedule_to_wire(s, next_fire(s))
}

fn millis(field: &str, value: Option<u64>, default: u64, max: u64) -> ApiResult<u64> {
    let v = value.unwrap_or(default);
    if v > max {
        return Err(ApiError::invalid(format!(
            "{field} is {v} ms; the limit is {max} ms ({})",
            humantime::format_duration(std::time::Duration::from_millis(max))
        )));
    }
    Ok(v)
}

/// The request, checked field by field, as the state machine keeps it. `now` is this
/// node's clock: a schedule with no time left after it is refused.
fn spec_of(ns: &str, r: CreateScheduleRequest, now: u64) -> ApiResult<ScheduleSpec> {
    let name = schedule_name(ns, "name", &r.name)?;
    if r.task_definition.is_empty() {
        return Err(ApiError::invalid(
            "taskDefinition is required (family or family:revision)",
        ));
    }
    let (family, revision) = super::definition_ref(ns, "taskDefinition", &r.task_definition)?;
    let expr = berth_cron::Schedule::parse(&r.expression, &r.timezone).map_err(|e| match e {
        berth_cron::ExprError::Zone { .. } => ApiError::invalid(format!("timezone: {e}")),
        other => ApiError::invalid(format!("expression: {other}")),
    })?;
    let start_at = (r.start_at_ms > 0).then_some(r.start_at_ms);
    let end_at = (r.end_at_ms > 0).then_some(r.end_at_ms);
    if let (Some(start), Some(end)) = (start_at, end_at) {
        if end <= start {
            return Err(ApiError::invalid(format!(
                "endAt ({end}) must be after startAt ({start})"
            )));
        }
    }
    let overlap = Overlap::parse(&r.overlap).ok_or_else(|| {
        ApiError::invalid(format!(
            "overlap {} is not one of forbid, allow, replace",
            quote(&r.overlap)
        ))
    })?;
    let catch_up = CatchUp::parse(&r.catch_up).ok_or_else(|| {
        ApiError::invalid(format!(
            "catchUp {} is not one of latest, all, none",
            quote(&r.catch_up)
        ))
    })?;
    let catch_up_window_ms = millis(
        "catchUpWindowMs",
        r.catch_up_window_ms,
        DEFAULT_CATCH_UP_WINDOW_MS,
        MAX_CATCH_UP_WINDOW_MS,
    )?;
    let retry_max_age_ms = millis(
        "retryMaxAgeMs",
        r.retry_max_age_ms,
        DEFAULT_RETRY_MAX_AGE_MS,
        MAX_RETRY_MAX_AGE_MS,
    )?;
    berth_core::validate::retry_policy(&berth_core::schedule::RetryPolicy {
        retries: r.retries,
        max_age_ms: retry_max_age_ms,
    })?;
    let jitter_ms = millis("jitterMs", Some(r.jitter_ms), 0, MAX_JITTER_MS)?;
    berth_core::validate::timeouts(
        "timeouts",
        &berth_proto::convert::timeouts_from_wire(r.timeouts),
    )?;
    // A schedule with nothing left to run is a mistake worth telling at once.
    let from = start_at.map_or(now, |s| s.saturating_sub(1).max(now));
    let anchor = start_at.unwrap_or(now);
    let next = expr.next_after(from, anchor);
    if next.is_none() || matches!((next, end_at), (Some(t), Some(end)) if t > end) {
        return Err(ApiError::invalid(format!(
            "expression {} has no time left to run{}",
            quote(&r.expression),
            if end_at.is_some() {
                " before endAt"
            } else {
                " after now"
            }
        )));
    }
    Ok(ScheduleSpec {
        name,
        family,
        revision,
        expression: r.expression.trim().to_string(),
        timezone: r.timezone,
        start_at,
        end_at,
        overlap,
        catch_up,
        catch_up_window_ms,
        retries: r.retries,
        retry_max_age_ms,
        jitter_ms,
        overrides: overrides_from_wire(r.overrides),
        placement_strategy: strategies_from_wire(r.placement_strategy),
        placement_constraints: constraints_from_wire(r.placement_constraints),
        client_token: (!r.client_token.is_empty()).then_some(r.client_token),
        timeouts: berth_proto::convert::timeouts_from_wire(r.timeouts),
    })
}

impl SchedulesApi {
    /// Checks the overrides and placement against what RunTask would accept, so a
    /// schedule is refused now rather than failing at every run.
    fn check_launch(&self, spec: &ScheduleSpec) -> ApiResult<()> {
        crate::batcher::strategies(&spec.placement_strategy)?;
        crate::batcher::constraints(&spec.placement_constraints)?;
        let s = self.node.state.read();
        if let Ok(def) = s.state.task_definition(&spec.family, spec.revision) {
            berth_core::validate::overrides(&spec.overrides, &def.container_definitions)?;
        }
        Ok(())
    }

    /// `answer` of the caller's schedule `name`, from a linearizable read.
    async fn read<T>(
        &self,
        ns: &str,
        name: &str,
        answer: impl FnOnce(&Schedule, u64) -> T,
    ) -> Result<T, Status> {
        let qualified = schedule_name(ns, "name", name)?;
        self.node.read_barrier(false).await?;
        let (sched, revision) = {
            let s = self.node.state.read();
            (s.state.schedule(&qualified).cloned(), s.state.revision())
        };
        let sched = sched.ok_or_else(|| {
            ApiError::NotFound(format!("schedule {} does not exist", quote(name)))
        })?;
        // Outside the lock: describing a schedule parses its expression.
        Ok(answer(&sched, revision))
    }

    /// Pauses or resumes the caller's schedule.
    async fn set_paused(
        &self,
        req: Request<ScheduleNameRequest>,
        paused: bool,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let name = schedule_name(&ns, "name", &req.get_ref().name)?;
        let what = if paused {
            "pause schedule"
        } else {
            "resume schedule"
        };
        let w = WriteRequest::SetSchedulePaused { name, paused };
        self.write(by.as_ref(), w, what).await
    }

    async fn write(
        &self,
        by: Option<&crate::auth::Caller>,
        req: WriteRequest,
        what: &str,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let (revision, outcome) = self.node.write_by(by, req).await?;
        match outcome {
            Outcome::Schedule(s) => Ok(Response::new(ScheduleResponse {
                schedule: Some(wire(&s)),
                revision,
            })),
            other => Err(unexpected(what, &other)),
        }
    }
}

#[tonic::async_trait]
impl Schedules for SchedulesApi {
    async fn create(
        &self,
        req: Request<CreateScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let mut r = req.into_inner();
        if r.client_token.is_empty() {
            // So this node may retry across a leader change and get the schedule it made
            // rather than ALREADY_EXISTS.
            r.client_token = format!("auto-{}", crate::batcher::new_task_id());
        }
        let spec = spec_of(&ns, r, crate::node::now_ms())?;
        self.check_launch(&spec)?;
        let res = self
            .write(
                by.as_ref(),
                WriteRequest::CreateSchedule(Box::new(spec)),
                "create schedule",
            )
            .await?;
        if let Some(s) = &res.get_ref().schedule {
            tracing::info!(schedule = %s.name, expression = %s.expression, "schedule created");
        }
        Ok(res)
    }

    async fn update(
        &self,
        req: Request<CreateScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let mut r = req.into_inner();
        r.client_token.clear();
        let spec = spec_of(&ns, r, crate::node::now_ms())?;
        self.check_launch(&spec)?;
        self.write(
            by.as_ref(),
            WriteRequest::UpdateSchedule(Box::new(spec)),
            "update schedule",
        )
        .await
    }

    async fn describe(
        &self,
        req: Request<DescribeScheduleRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let ns = super::namespace(&req)?;
        let r = self
            .read(&ns, &req.get_ref().name, |s, revision| ScheduleResponse {
                schedule: Some(wire(s)),
                revision,
            })
            .await?;
        Ok(Response::new(r))
    }

    async fn list(
        &self,
        req: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        let ns = super::namespace(&req)?;
        let r = req.into_inner();
        let count = page_size(r.max_results)?;
        let after = if r.next_token.is_empty() {
            String::new()
        } else {
            schedule_name(&ns, "nextToken", &r.next_token)?
        };
        self.node.read_barrier(false).await?;
        // Answered from an O(1) copy: each item's next time parses its expression, which
        // must not hold the state's lock (and so apply) for a page of schedules.
        let schedules = self.node.state.read().state.schedules_snapshot();
        let items = schedules
            .values()
            .filter(|x| berth_core::namespace::of(&x.spec.name) == ns)
            .filter(|x| x.spec.name > after)
            .map(wire);
        let p = page(items, count);
        let next_token = if p.more {
            p.items.last().map(|x| x.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListSchedulesResponse {
            schedules: p.items,
            next_token,
        }))
    }

    async fn pause(
        &self,
        req: Request<ScheduleNameRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        self.set_paused(req, true).await
    }

    async fn resume(
        &self,
        req: Request<ScheduleNameRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        self.set_paused(req, false).await
    }

    async fn delete(
        &self,
        req: Request<ScheduleNameRequest>,
    ) -> Result<Response<ScheduleResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let name = schedule_name(&ns, "name", &req.get_ref().name)?;
        self.write(
            by.as_ref(),
            WriteRequest::DeleteSchedule { name },
            "delete schedule",
        )
        .await
    }

    async fn runs(
        &self,
        req: Request<ScheduleRunsRequest>,
    ) -> Result<Response<ScheduleRunsResponse>, Status> {
        let ns = super::namespace(&req)?;
        let r = self
            .read(&ns, &req.get_ref().name, |s, _| ScheduleRunsResponse {
                runs: s.runs.iter().rev().map(schedule_run_to_wire).collect(),
            })
            .await?;
        Ok(Response::new(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(expression: &str) -> CreateScheduleRequest {
        CreateScheduleRequest {
            name: "nightly".into(),
            task_definition: "job".into(),
            expression: expression.into(),
            ..Default::default()
        }
    }

    fn refused(r: ApiResult<ScheduleSpec>) -> String {
        match r {
            Err(ApiError::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    const NOW: u64 = 1_780_000_000_000;

    #[test]
    fn a_good_request_takes_the_documented_defaults() {
        let s = spec_of("default", request("rate(10 seconds)"), NOW).unwrap();
        assert_eq!(s.name, "nightly");
        assert_eq!(s.family, "job");
        assert_eq!(s.overlap, Overlap::Forbid);
        assert_eq!(s.catch_up, CatchUp::Latest);
        assert_eq!(s.catch_up_window_ms, DEFAULT_CATCH_UP_WINDOW_MS);
        assert_eq!(s.retry_max_age_ms, DEFAULT_RETRY_MAX_AGE_MS);
    }

    #[test]
    fn bad_fields_are_refused_by_name() {
        let m = refused(spec_of("default", request("cron(0 25 * * ? *)"), NOW));
        assert!(m.starts_with("expression:"), "{m}");
        let mut r = request("rate(1 minute)");
        r.timezone = "Mars/Olympus".into();
        assert!(refused(spec_of("default", r, NOW)).starts_with("timezone:"));
        let mut r = request("rate(1 minute)");
        r.start_at_ms = NOW + 10;
        r.end_at_ms = NOW;
        assert!(refused(spec_of("default", r, NOW)).contains("endAt"));
        let mut r = request("rate(1 minute)");
        r.overlap = "sometimes".into();
        assert!(refused(spec_of("default", r, NOW)).contains("overlap"));
        let mut r = request("rate(1 minute)");
        r.retries = 2;
        r.retry_max_age_ms = Some(1_000);
        assert!(refused(spec_of("default", r, NOW)).contains("back-off"));
        let mut r = request("rate(1 minute)");
        r.jitter_ms = MAX_JITTER_MS + 1;
        assert!(refused(spec_of("default", r, NOW)).contains("jitterMs"));
        let m = refused(spec_of("default", request("at(2020-01-01T00:00:00)"), NOW));
        assert!(m.contains("no time left"), "{m}");
        let mut r = request("rate(1 minute)");
        r.task_definition.clear();
        assert!(refused(spec_of("default", r, NOW)).contains("taskDefinition"));
    }
}
