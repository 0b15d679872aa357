//! Wire ⇄ model. The server turns requests into `berth-core` types (validation happens
//! there, on the model) and answers with wire messages built from the model.

use berth_core as core;
use berth_core::namespace as ns;

use crate::v1;

fn kv_to_wire(v: &[core::KeyValue]) -> Vec<v1::KeyValue> {
    v.iter()
        .map(|kv| v1::KeyValue {
            name: kv.name.clone(),
            value: kv.value.clone(),
        })
        .collect()
}

fn kv_from_wire(v: Vec<v1::KeyValue>) -> Vec<core::KeyValue> {
    v.into_iter()
        .map(|kv| core::KeyValue {
            name: kv.name,
            value: kv.value,
        })
        .collect()
}

impl From<&core::ContainerDefinition> for v1::ContainerDefinition {
    fn from(c: &core::ContainerDefinition) -> Self {
        v1::ContainerDefinition {
            name: c.name.clone(),
            image: c.image.clone(),
            command: c.command.clone(),
            entry_point: c.entry_point.clone(),
            environment: kv_to_wire(&c.environment),
            port_mappings: c
                .port_mappings
                .iter()
                .map(|p| v1::PortMapping {
                    container_port: p.container_port,
                    host_port: p.host_port,
                    protocol: p.protocol.clone(),
                })
                .collect(),
            essential: c.essential,
            health_check: c.health_check.as_ref().map(|h| v1::HealthCheck {
                command: h.command.clone(),
                interval: h.interval,
                timeout: h.timeout,
                retries: h.retries,
                start_period: h.start_period,
            }),
            stop_timeout: c.stop_timeout,
            cpu: c.cpu,
            memory: c.memory,
            readonly_root_filesystem: c.readonly_root_filesystem,
            user: c.user.clone(),
            secrets: c
                .secrets
                .iter()
                .map(|s| v1::SecretRef {
                    name: s.name.clone(),
                    value_from: s.value_from.clone(),
                })
                .collect(),
        }
    }
}

impl From<v1::ContainerDefinition> for core::ContainerDefinition {
    fn from(c: v1::ContainerDefinition) -> Self {
        core::ContainerDefinition {
            name: c.name,
            image: c.image,
            command: c.command,
            entry_point: c.entry_point,
            environment: kv_from_wire(c.environment),
            port_mappings: c
                .port_mappings
                .into_iter()
                .map(|p| core::PortMapping {
                    container_port: p.container_port,
                    host_port: p.host_port,
                    protocol: if p.protocol.is_empty() {
                        "tcp".into()
                    } else {
                        p.protocol
                    },
                })
                .collect(),
            essential: c.essential,
            health_check: c.health_check.map(|h| core::HealthCheck {
                command: h.command,
                interval: h.interval,
                timeout: h.timeout,
                retries: h.retries,
                start_period: h.start_period,
            }),
            stop_timeout: c.stop_timeout,
            cpu: c.cpu,
            memory: c.memory,
            readonly_root_filesystem: c.readonly_root_filesystem,
            user: c.user,
            secrets: c
                .secrets
                .into_iter()
                .map(|s| core::secret::SecretRef {
                    name: s.name,
                    value_from: s.value_from,
                })
                .collect(),
        }
    }
}

impl From<&core::TaskDefinitionSpec> for v1::TaskDefinitionSpec {
    fn from(s: &core::TaskDefinitionSpec) -> Self {
        v1::TaskDefinitionSpec {
            family: s.family.clone(),
            cpu: s.cpu,
            memory: s.memory,
            network_mode: s.network_mode.clone(),
            container_definitions: s.container_definitions.iter().map(Into::into).collect(),
            timeouts: timeouts_to_wire(&s.timeouts),
        }
    }
}

impl From<v1::TaskDefinitionSpec> for core::TaskDefinitionSpec {
    fn from(s: v1::TaskDefinitionSpec) -> Self {
        core::TaskDefinitionSpec {
            family: s.family,
            cpu: s.cpu,
            memory: s.memory,
            network_mode: s.network_mode,
            container_definitions: s
                .container_definitions
                .into_iter()
                .map(Into::into)
                .collect(),
            timeouts: timeouts_from_wire(s.timeouts),
        }
    }
}

/// A name as its namespace's users know it: the state's `team-a/web` is `web`.
fn bare(qualified: &str) -> String {
    ns::split(qualified).1.to_string()
}

impl From<&core::TaskDefinition> for v1::TaskDefinition {
    fn from(d: &core::TaskDefinition) -> Self {
        v1::TaskDefinition {
            namespace: ns::of(&d.family).into(),
            family: bare(&d.family),
            revision: d.revision,
            cpu: d.cpu,
            memory: d.memory,
            network_mode: d.network_mode.as_str().into(),
            container_definitions: d.container_definitions.iter().map(Into::into).collect(),
            status: match d.status {
                core::TaskDefinitionStatus::Active => "ACTIVE".into(),
                core::TaskDefinitionStatus::Inactive => "INACTIVE".into(),
            },
            registered_at_ms: d.registered_at,
            deregistered_at_ms: d.deregistered_at,
            timeouts: timeouts_to_wire(&d.timeouts),
        }
    }
}

fn overrides_to_wire(o: &[core::ContainerOverride]) -> Vec<v1::ContainerOverride> {
    o.iter()
        .map(|o| v1::ContainerOverride {
            name: o.name.clone(),
            command: o.command.clone().unwrap_or_default(),
            environment: kv_to_wire(&o.environment),
        })
        .collect()
}

pub fn overrides_from_wire(o: Vec<v1::ContainerOverride>) -> Vec<core::ContainerOverride> {
    o.into_iter()
        .map(|o| core::ContainerOverride {
            name: o.name,
            command: if o.command.is_empty() {
                None
            } else {
                Some(o.command)
            },
            environment: kv_from_wire(o.environment),
        })
        .collect()
}

impl From<&core::Task> for v1::Task {
    fn from(t: &core::Task) -> Self {
        v1::Task {
            task_id: t.id.clone(),
            run_id: t.run.as_ref().map(|r| bare(&r.run_id)).unwrap_or_default(),
            timeouts: timeouts_to_wire(&t.timeouts),
            attempt: t.run.as_ref().map_or(0, |r| r.attempt),
            // Needs the state; task_to_wire fills it in.
            retried_run: None,
            namespace: ns::of(&t.family).into(),
            task_definition: bare(&t.task_definition()),
            family: bare(&t.family),
            task_definition_revision: t.revision,
            cpu: t.cpu,
            memory: t.memory,
            agent_id: t.agent_id.clone(),
            last_status: t.last_status.as_str().into(),
            desired_status: t.desired_status.as_str().into(),
            started_by: t.started_by.clone(),
            group: ns::bare_group(&t.group),
            client_token: t
                .client_token
                .as_deref()
                .map(ns::bare_token)
                .unwrap_or_default()
                .to_string(),
            overrides: overrides_to_wire(&t.overrides),
            containers: t
                .containers
                .iter()
                .map(|c| v1::ContainerState {
                    name: c.name.clone(),
                    last_status: c.last_status.as_str().into(),
                    exit_code: c.exit_code,
                    reason: c.reason.clone().unwrap_or_default(),
                    health_status: c
                        .health_status
                        .map(|h| h.as_str().to_string())
                        .unwrap_or_default(),
                    network_bindings: c
                        .network_bindings
                        .iter()
                        .map(|b| v1::NetworkBinding {
                            bind_ip: b.bind_ip.clone(),
                            container_port: b.container_port,
                            host_port: b.host_port,
                            protocol: b.protocol.clone(),
                        })
                        .collect(),
                })
                .collect(),
            stop_code: t
                .stop_code
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            stopped_reason: t.stopped_reason.clone().unwrap_or_default(),
            created_at_ms: t.created_at,
            pull_started_at_ms: t.pull_started_at,
            started_at_ms: t.started_at,
            stopping_at_ms: t.stopping_at,
            stopped_at_ms: t.stopped_at,
            version: t.version,
            transitions: t
                .transitions
                .iter()
                .map(|x| v1::TaskTransition {
                    status: x.status.as_str().into(),
                    at_ms: x.at,
                })
                .collect(),
            health_status: t.health_status.as_str().into(),
            utilization: None,
            usage: None,
        }
    }
}

/// A task as the API shows it, with what it used where its agent has measured it, and
/// what it is billed up to `now` (the one-minute minimum included, as the ledger bills).
pub fn task_to_wire(state: &core::ClusterState, t: &core::Task, now: u64) -> v1::Task {
    let mut wire = v1::Task::from(t);
    wire.usage = t.pull_started_at.or(t.started_at).map(|start| {
        use core::usage::{Amount, MIN_BILLED_MS};
        let end = t.stopped_at.unwrap_or(now).max(start + MIN_BILLED_MS);
        let amount = Amount::of(t.cpu, t.memory, end - start);
        v1::TaskUsage {
            vcpu_hours: amount.vcpu_hours(),
            gib_hours: amount.gib_hours(),
            cost: amount.cost_nanos(&state.settings().prices) as f64 / 1e9,
        }
    });
    wire.retried_run = t
        .run
        .as_ref()
        .filter(|r| r.schedule.is_empty())
        .and_then(|r| state.retried_run(&r.run_id))
        .map(|r| schedule_run_to_wire(&r.run));
    wire.utilization = state.task_utilization(&t.id).map(|u| {
        use core::utilization::percent;
        v1::TaskUtilization {
            cpu_average_percent: percent(u.cpu_avg(), t.cpu),
            cpu_peak_percent: percent(u.cpu_peak, t.cpu),
            memory_average_mib: u.memory_avg(),
            memory_peak_mib: u.memory_peak,
            last_cpu_percent: percent(u.last.cpu_avg, t.cpu),
            last_memory_mib: u.last.memory_avg,
            last_window_end_ms: u.last.end,
            measured_ms: u.measured_ms,
        }
    });
    wire
}

/// An agent as the API shows it, with what its tasks use now by the clock `now`.
pub fn agent_to_wire(state: &core::ClusterState, a: &core::Agent, now: u64) -> v1::Agent {
    let mut wire = v1::Agent::from(a);
    (wire.measured_cpu, wire.measured_memory) = state.agent_used(&a.id, now);
    wire
}

impl From<&core::Agent> for v1::Agent {
    fn from(a: &core::Agent) -> Self {
        v1::Agent {
            agent_id: a.id.clone(),
            status: a.status.as_str().into(),
            cpu: a.cpu,
            memory: a.memory,
            used_cpu: a.used_cpu,
            used_memory: a.used_memory,
            task_count: a.task_count,
            attributes: a.attributes.clone().into_iter().collect(),
            address: a.address.clone(),
            registered_at_ms: a.registered_at,
            epoch: a.epoch,
            down_at_ms: a.down_at,
            back_at_ms: a.back_at,
            engine_error: a.engine_error.clone().unwrap_or_default(),
            engine_error_since_ms: a.engine_error_since,
            measured_cpu: 0,
            measured_memory: 0,
        }
    }
}

impl From<&core::Failure> for v1::Failure {
    fn from(f: &core::Failure) -> Self {
        v1::Failure {
            reason: f.reason.clone(),
            detail: f.detail.clone(),
            arn: String::new(),
        }
    }
}

impl From<v1::RunTaskRequest> for core::command::RunTaskRequest {
    fn from(r: v1::RunTaskRequest) -> Self {
        core::command::RunTaskRequest {
            task_definition: r.task_definition,
            count: r.count,
            client_token: if r.client_token.is_empty() {
                None
            } else {
                Some(r.client_token)
            },
            started_by: r.started_by,
            group: r.group,
            overrides: overrides_from_wire(r.overrides),
            placement_strategy: strategies_from_wire(r.placement_strategy),
            placement_constraints: constraints_from_wire(r.placement_constraints),
            // Only the service scheduler launches for a service; the API never does.
            service: None,
            timeouts: timeouts_from_wire(r.timeouts),
            retry: (r.retries > 0).then(|| core::schedule::RetryPolicy {
                retries: r.retries,
                max_age_ms: r
                    .retry_max_age_ms
                    .unwrap_or(core::limits::DEFAULT_RETRY_MAX_AGE_MS),
            }),
        }
    }
}

pub fn strategies_from_wire(
    v: Vec<v1::PlacementStrategy>,
) -> Vec<core::command::PlacementStrategy> {
    v.into_iter()
        .map(|s| core::command::PlacementStrategy {
            kind: s.r#type,
            field: s.field,
        })
        .collect()
}

pub fn constraints_from_wire(
    v: Vec<v1::PlacementConstraint>,
) -> Vec<core::command::PlacementConstraint> {
    v.into_iter()
        .map(|c| core::command::PlacementConstraint {
            kind: c.r#type,
            expression: c.expression,
        })
        .collect()
}

/// A service as the API shows it: its counts come from its tasks, and its events only where
/// the caller asked for the whole service.
/// A deployment configuration from the wire: absent fields from `base` (ECS's defaults on
/// create, the service's own on update). Checked by the state machine.
pub fn deployment_configuration_from_wire(
    c: Option<v1::DeploymentConfiguration>,
    base: core::service::DeploymentConfiguration,
) -> core::service::DeploymentConfiguration {
    let Some(c) = c else {
        return base;
    };
    core::service::DeploymentConfiguration {
        minimum_healthy_percent: c
            .minimum_healthy_percent
            .unwrap_or(base.minimum_healthy_percent),
        maximum_percent: c.maximum_percent.unwrap_or(base.maximum_percent),
        circuit_breaker: c.circuit_breaker.unwrap_or(base.circuit_breaker),
        rollback: c.rollback.unwrap_or(base.rollback),
        min_healthy_time_ms: c.min_healthy_time_ms.unwrap_or(base.min_healthy_time_ms),
    }
}

fn deployment_configuration_to_wire(
    c: &core::service::DeploymentConfiguration,
) -> v1::DeploymentConfiguration {
    v1::DeploymentConfiguration {
        minimum_healthy_percent: Some(c.minimum_healthy_percent),
        maximum_percent: Some(c.maximum_percent),
        circuit_breaker: Some(c.circuit_breaker),
        rollback: Some(c.rollback),
        min_healthy_time_ms: Some(c.min_healthy_time_ms),
    }
}

/// What the state knows about a service beyond the record itself: its live tasks.
pub struct ServiceView<'a> {
    pub running: u32,
    pub pending: u32,
    /// Live tasks per deployment id.
    pub per_deployment: &'a std::collections::BTreeMap<String, core::state::DeploymentCount>,
    /// Only Describe carries events and tasks.
    pub events: bool,
    pub tasks: Vec<v1::ServiceTask>,
}

/// A scaling policy from the wire; absent cooldowns take the defaults. Checked by the state
/// machine.
pub fn scaling_policy_from_wire(
    p: v1::ScalingPolicy,
) -> Result<core::scaling::ScalingPolicy, core::Error> {
    use core::scaling::*;
    let metric = ScalingMetric::parse(&p.metric).ok_or_else(|| {
        core::Error::invalid(format!(
            "metric {} is not CPU or MEMORY",
            core::quote(&p.metric)
        ))
    })?;
    Ok(ScalingPolicy {
        metric,
        target_percent: p.target_percent,
        min_count: p.min_count,
        max_count: p.max_count,
        scale_out_cooldown_ms: p.scale_out_cooldown_ms.unwrap_or(DEFAULT_COOLDOWN_MS),
        scale_in_cooldown_ms: p.scale_in_cooldown_ms.unwrap_or(DEFAULT_COOLDOWN_MS),
        disable_scale_in: p.disable_scale_in,
    })
}

fn scaling_policy_to_wire(p: &core::scaling::ScalingPolicy) -> v1::ScalingPolicy {
    v1::ScalingPolicy {
        metric: p.metric.as_str().to_string(),
        target_percent: p.target_percent,
        min_count: p.min_count,
        max_count: p.max_count,
        scale_out_cooldown_ms: Some(p.scale_out_cooldown_ms),
        scale_in_cooldown_ms: Some(p.scale_in_cooldown_ms),
        disable_scale_in: p.disable_scale_in,
    }
}

pub fn service_to_wire(s: &core::Service, view: ServiceView<'_>) -> v1::Service {
    v1::Service {
        scaling_policy: s
            .scaling
            .as_ref()
            .map(|x| scaling_policy_to_wire(&x.policy)),
        last_scale_out_at_ms: s.scaling.as_ref().and_then(|x| x.last_scale_out_at),
        last_scale_in_at_ms: s.scaling.as_ref().and_then(|x| x.last_scale_in_at),
        namespace: ns::of(&s.name).into(),
        service_name: bare(&s.name),
        task_definition: bare(&s.task_definition()),
        status: s.status.as_str().to_string(),
        desired_count: s.desired_count,
        running_count: view.running,
        pending_count: view.pending,
        placement_strategy: s
            .placement_strategy
            .iter()
            .map(|p| v1::PlacementStrategy {
                r#type: p.kind.clone(),
                field: p.field.clone(),
            })
            .collect(),
        placement_constraints: s
            .placement_constraints
            .iter()
            .map(|c| v1::PlacementConstraint {
                r#type: c.kind.clone(),
                expression: c.expression.clone(),
            })
            .collect(),
        created_at_ms: s.created_at,
        updated_at_ms: s.updated_at,
        events: if view.events {
            s.events
                .iter()
                .map(|e| v1::ServiceEvent {
                    at_ms: e.at,
                    message: e.message.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        version: s.version,
        deployment_configuration: Some(deployment_configuration_to_wire(
            &s.deployment_configuration,
        )),
        deployments: s
            .deployments
            .iter()
            .map(|d| {
                let count = view.per_deployment.get(&d.id).copied().unwrap_or_default();
                v1::Deployment {
                    id: d.id.clone(),
                    status: d.status.as_str().into(),
                    task_definition: bare(&d.task_definition()),
                    desired_count: if d.status == core::service::DeploymentStatus::Primary {
                        s.desired_count
                    } else {
                        0
                    },
                    pending_count: count.pending,
                    running_count: count.running,
                    failed_tasks: d.failed_tasks,
                    rollout_state: d.rollout_state.as_str().into(),
                    rollout_state_reason: d.rollout_state_reason.clone(),
                    created_at_ms: d.created_at,
                    updated_at_ms: d.updated_at,
                }
            })
            .collect(),
        tasks: view.tasks,
    }
}

fn strategies_to_wire(v: &[core::command::PlacementStrategy]) -> Vec<v1::PlacementStrategy> {
    v.iter()
        .map(|p| v1::PlacementStrategy {
            r#type: p.kind.clone(),
            field: p.field.clone(),
        })
        .collect()
}

fn constraints_to_wire(v: &[core::command::PlacementConstraint]) -> Vec<v1::PlacementConstraint> {
    v.iter()
        .map(|c| v1::PlacementConstraint {
            r#type: c.kind.clone(),
            expression: c.expression.clone(),
        })
        .collect()
}

/// A schedule as the API shows it; `next_fire` is computed by the caller (the state
/// machine does not read expressions).
pub fn schedule_to_wire(s: &core::schedule::Schedule, next_fire: Option<u64>) -> v1::Schedule {
    let spec = &s.spec;
    v1::Schedule {
        name: bare(&spec.name),
        task_definition: match spec.revision {
            Some(r) => format!("{}:{r}", bare(&spec.family)),
            None => bare(&spec.family),
        },
        expression: spec.expression.clone(),
        timezone: spec.timezone.clone(),
        start_at_ms: spec.start_at.unwrap_or_default(),
        end_at_ms: spec.end_at.unwrap_or_default(),
        overlap: spec.overlap.as_str().into(),
        catch_up: spec.catch_up.as_str().into(),
        catch_up_window_ms: spec.catch_up_window_ms,
        retries: spec.retries,
        retry_max_age_ms: spec.retry_max_age_ms,
        jitter_ms: spec.jitter_ms,
        state: s.state.as_str().into(),
        created_at_ms: s.created_at,
        last_fired_ms: s.last_fired.unwrap_or_default(),
        next_fire_ms: next_fire.unwrap_or_default(),
        live_runs: s.live_runs().count() as u32,
        overrides: overrides_to_wire(&spec.overrides),
        placement_strategy: strategies_to_wire(&spec.placement_strategy),
        placement_constraints: constraints_to_wire(&spec.placement_constraints),
        timeouts: timeouts_to_wire(&spec.timeouts),
    }
}

pub fn schedule_run_to_wire(r: &core::schedule::Run) -> v1::ScheduleRun {
    v1::ScheduleRun {
        run_id: bare(&r.id),
        scheduled_time_ms: r.scheduled_time,
        last_time_ms: r.last_time.unwrap_or(r.scheduled_time),
        count: r.count,
        status: r.status.as_str().into(),
        reason: r.reason.clone(),
        recorded_at_ms: r.recorded_at,
        attempts: r
            .attempts
            .iter()
            .map(|a| v1::ScheduleAttempt {
                number: a.number,
                started_at_ms: a.started_at,
                task_id: a.task_id.clone().unwrap_or_default(),
                failure: a.failure.clone().unwrap_or_default(),
            })
            .collect(),
        retry_at_ms: r.retry_at.unwrap_or_default(),
        finished_at_ms: r.finished_at.unwrap_or_default(),
    }
}

pub fn timeouts_to_wire(t: &core::Timeouts) -> Option<v1::Timeouts> {
    (!t.is_empty()).then_some(v1::Timeouts {
        start_timeout: t.start_timeout,
        max_runtime: t.max_runtime,
    })
}

pub fn timeouts_from_wire(t: Option<v1::Timeouts>) -> core::Timeouts {
    t.map(|t| core::Timeouts {
        start_timeout: t.start_timeout,
        max_runtime: t.max_runtime,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_the_wire() {
        let spec = core::TaskDefinitionSpec {
            family: "web".into(),
            cpu: Some(512),
            memory: None,
            network_mode: Some("bridge".into()),
            container_definitions: vec![core::ContainerDefinition {
                name: "app".into(),
                image: "img".into(),
                command: vec!["sh".into(), "-c".into(), "true".into()],
                environment: vec![core::KeyValue {
                    name: "A".into(),
                    value: "1".into(),
                }],
                port_mappings: vec![core::PortMapping {
                    container_port: 80,
                    host_port: 0,
                    protocol: "tcp".into(),
                }],
                essential: Some(true),
                stop_timeout: Some(10),
                health_check: Some(core::HealthCheck {
                    command: vec!["CMD".into(), "true".into()],
                    interval: Some(5),
                    ..Default::default()
                }),
                readonly_root_filesystem: Some(true),
                user: Some("65534:65534".into()),
                ..Default::default()
            }],
            timeouts: Default::default(),
        };
        let wire = v1::TaskDefinitionSpec::from(&spec);
        assert_eq!(core::TaskDefinitionSpec::from(wire), spec);
    }

    #[test]
    fn a_task_carries_its_transitions_to_the_wire() {
        let task = core::Task {
            id: "0123456789abcdef0123456789abcdef".into(),
            family: "web".into(),
            revision: 1,
            cpu: 256,
            memory: 512,
            agent_id: "a1".into(),
            last_status: core::TaskState::Running,
            desired_status: core::DesiredStatus::Running,
            started_by: String::new(),
            group: String::new(),
            client_token: None,
            overrides: vec![],
            containers: vec![],
            health_status: core::HealthStatus::Unknown,
            ready_since: None,
            stop_code: None,
            stopped_reason: None,
            created_at: 1_000,
            pull_started_at: None,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            version: 7,
            transitions: vec![
                core::Transition {
                    status: core::TaskState::Provisioning,
                    at: 1_000,
                },
                core::Transition {
                    status: core::TaskState::Running,
                    at: 2_500,
                },
            ],
            run: None,
            timeouts: Default::default(),
        };
        let wire = v1::Task::from(&task);
        let seen: Vec<(&str, u64)> = wire
            .transitions
            .iter()
            .map(|t| (t.status.as_str(), t.at_ms))
            .collect();
        assert_eq!(seen, vec![("PROVISIONING", 1_000), ("RUNNING", 2_500)]);

        // Billed so far: nothing before its pull; a 10 s run costs the one-minute minimum,
        // a running task counts to now.
        let state = core::ClusterState::new();
        assert!(task_to_wire(&state, &task, 5_000).usage.is_none());
        let mut ran = task.clone();
        ran.pull_started_at = Some(1_000);
        ran.stopped_at = Some(11_000);
        let u = task_to_wire(&state, &ran, 999_000_000).usage.unwrap();
        assert!((u.vcpu_hours - 0.25 / 60.0).abs() < 1e-12, "{u:?}");
        assert!((u.gib_hours - 0.5 / 60.0).abs() < 1e-12, "{u:?}");
        let expected = (0.25 * 0.04048 + 0.5 * 0.004445) / 60.0;
        assert!((u.cost - expected).abs() < 1e-9, "{u:?}");
        ran.stopped_at = None;
        let u = task_to_wire(&state, &ran, 1_000 + 7_200_000).usage.unwrap();
        assert!((u.vcpu_hours - 0.5).abs() < 1e-12, "{u:?}");
    }
}
