//! Autoscaling in the replicated state: a service's policy, and the scale actions the
//! leader proposes, each re-checked at apply against the policy, the cooldowns and the
//! desired count it was computed from (a stale proposal changes nothing).

use super::ClusterState;
use crate::command::{CommandResult, Outcome};
use crate::error::Error;
use crate::model::{Millis, TaskState};
use crate::quote::quote;
use crate::scaling::{Scaling, ScalingMetric, ScalingPolicy};
use crate::service::ServiceStatus;

/// A service's measured utilization: the average over its RUNNING tasks with current
/// figures, in tenths of a percent of what each reserves, and how many tasks that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceMetric {
    pub tenths: u32,
    pub tasks: u32,
}

impl ClusterState {
    pub(super) fn put_scaling_policy(
        &mut self,
        name: &str,
        policy: Option<&ScalingPolicy>,
    ) -> CommandResult {
        if let Some(p) = policy {
            p.check()?;
        }
        let (clock, revision) = (self.clock, self.revision);
        let svc = self.active_service_mut(name)?;
        svc.updated_at = clock;
        svc.version = revision;
        let Some(p) = policy else {
            if svc.scaling.take().is_some() {
                self.service_event(name, format!("service {name} autoscaling removed"));
            }
            return Ok(Outcome::Service(self.services[name].clone()));
        };
        // A policy replaced keeps its cooldowns running.
        let (out_at, in_at) = svc
            .scaling
            .as_ref()
            .map_or((None, None), |s| (s.last_scale_out_at, s.last_scale_in_at));
        svc.scaling = Some(Scaling {
            policy: *p,
            last_scale_out_at: out_at,
            last_scale_in_at: in_at,
        });
        let was = svc.desired_count;
        let desired = was.clamp(p.min_count, p.max_count);
        svc.desired_count = desired;
        self.service_event(
            name,
            format!(
                "service {name} autoscaling: average {} utilization toward {} %, {}..{} tasks",
                p.metric.as_str(),
                p.target_percent,
                p.min_count,
                p.max_count
            ),
        );
        if desired != was {
            self.service_event(
                name,
                format!(
                    "service {name} desired count changed from {was} to {desired} to fit \
                     the autoscaling bounds"
                ),
            );
        }
        self.settle_deployments(name);
        Ok(Outcome::Service(self.services[name].clone()))
    }

    /// A scale action of the leader's autoscaler. Refused unless the service still has the
    /// desired count `from`, `to` is what its policy asks for within the bounds, and no
    /// cooldown holds it back.
    pub(super) fn autoscale_service(
        &mut self,
        name: &str,
        from: u32,
        to: u32,
        why: &str,
    ) -> CommandResult {
        let clock = self.clock;
        let revision = self.revision;
        let svc = self.active_service_mut(name)?;
        let scaling = svc.scaling.as_mut().ok_or_else(|| {
            Error::precondition(format!("service {} has no autoscaling policy", quote(name)))
        })?;
        if svc.desired_count != from {
            return Err(Error::precondition(format!(
                "service {name} is at desired count {}, not {from}: the decision is stale",
                svc.desired_count
            )));
        }
        let p = scaling.policy;
        if to == from || to < p.min_count || to > p.max_count {
            return Err(Error::invalid(format!(
                "service {name}: {to} tasks is not a change within {}..{}",
                p.min_count, p.max_count
            )));
        }
        scaling
            .cooldown(from, to, clock)
            .map_err(|e| Error::precondition(format!("service {name} autoscaling: {e}")))?;
        if to > from {
            scaling.last_scale_out_at = Some(clock);
        } else {
            scaling.last_scale_in_at = Some(clock);
        }
        svc.desired_count = to;
        svc.updated_at = clock;
        svc.version = revision;
        let verb = if to > from { "out" } else { "in" };
        self.service_event(
            name,
            format!("service {name} autoscaling scaled {verb} from {from} to {to}: {why}"),
        );
        self.settle_deployments(name);
        Ok(Outcome::Service(self.services[name].clone()))
    }

    /// The average utilization of an ACTIVE service's RUNNING tasks with current figures at
    /// `now`; none when no task has any.
    pub fn service_metric(
        &self,
        name: &str,
        metric: ScalingMetric,
        now: Millis,
    ) -> Option<ServiceMetric> {
        let svc = self.services.get(name)?;
        if svc.status != ServiceStatus::Active {
            return None;
        }
        let mut sum: u64 = 0;
        let mut tasks: u32 = 0;
        for t in self.service_tasks(name) {
            if t.last_status != TaskState::Running {
                continue;
            }
            let Some(w) = self.current_utilization(&t.id, now) else {
                continue;
            };
            let (used, reserved) = match metric {
                ScalingMetric::Cpu => (w.cpu_avg, t.cpu),
                ScalingMetric::Memory => (w.memory_avg, t.memory),
            };
            if reserved == 0 {
                continue;
            }
            sum += u64::from(used) * 1000 / u64::from(reserved);
            tasks += 1;
        }
        (tasks > 0).then(|| ServiceMetric {
            tenths: (sum / u64::from(tasks)).min(u64::from(u32::MAX)) as u32,
            tasks,
        })
    }
}
