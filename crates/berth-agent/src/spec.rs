//! From an assigned task to the Docker containers that run it. Pure: the same task always
//! gives the same plan, so it is unit-tested without an engine and an adopted task can be
//! matched against what it would have been created as.
//!
//! Isolation, per container:
//! - **Network**: one namespace per task, never the host's. The first essential container
//!   owns it (all of the task's port mappings, since Docker only publishes ports on the
//!   owner) on its Berth namespace's network: the engine's default bridge for `default`,
//!   `berth-ns-<name>` (a bridge network the agent makes on first use) for the others, so
//!   the engine's isolation between bridge networks keeps one namespace's tasks from
//!   reaching another's; every other container joins it with
//!   `network_mode: container:<owner>`, so they reach each other on `localhost`. No extra
//!   "pause" container: one create+start less per task, and no image the user did not ask
//!   for. The owner is essential, so the task stops when it exits anyway.
//! - **Limits**: from the task size (see [`crate::resources`]): `NanoCpus` (never with
//!   `CpuQuota`), `Memory` with `MemorySwap` equal to it (no swap beyond the limit),
//!   `PidsLimit`.
//! - **Privileges**: never privileged; `no-new-privileges`; capabilities `cap_drop: ALL` then
//!   an explicit allow-list: Docker's default set minus `NET_RAW` (raw sockets: ARP/ICMP
//!   spoofing on the shared bridge), `MKNOD` (device nodes), `AUDIT_WRITE` and `SETFCAP`
//!   (granting file capabilities). An allow-list, not a drop-list, so a future engine whose
//!   default grows cannot widen what tasks get.
//! - **User and root filesystem**: ECS's `user` and `readonlyRootFilesystem` as the engine's
//!   `User` and `ReadonlyRootfs`; unset, the image's user and a writable root.
//! - **Logs**: `json-file` with rotation (3 × 10 MiB), so a chatty task cannot fill the disk;
//!   `docker logs` (and so `berth task logs`) keeps working.

use std::collections::HashMap;
use std::time::Duration;

use berth_core::AssignedTask;
use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};

use crate::resources::{task_limits, Limits};

/// Labels every task container carries. Only containers labelled with this agent's id are
/// ever touched: several agents may share one engine.
pub const LABEL_AGENT: &str = "berth.agent";
pub const LABEL_TASK: &str = "berth.task";
pub const LABEL_CONTAINER: &str = "berth.container";
/// Position of the container in the task definition.
pub const LABEL_INDEX: &str = "berth.index";
/// `family:revision`, for people reading `docker ps`.
pub const LABEL_DEFINITION: &str = "berth.definition";

/// Capabilities a task container keeps (after dropping ALL).
pub const CAPABILITIES: [&str; 10] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
];
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges:true";
/// Log rotation per container.
const LOG_MAX_SIZE: &str = "10m";
const LOG_MAX_FILES: &str = "3";

/// One container of a task, ready to be created.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    /// Position in the task definition.
    pub index: usize,
    /// The definition's container name.
    pub name: String,
    /// The engine's name for it: `berth-<task>-<name>`.
    pub docker_name: String,
    pub image: String,
    pub essential: bool,
    pub stop_timeout: Duration,
    /// Holds the task's network namespace (created and started first).
    pub owner: bool,
    pub limits: Limits,
    pub body: ContainerCreateBody,
}

/// All containers of a task, in definition order.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    pub task_id: String,
    pub containers: Vec<ContainerPlan>,
    /// Index of the namespace owner in `containers`.
    pub owner: usize,
    /// The engine network the owner joins, when it is one the agent makes (a Berth
    /// namespace's): its name and the namespace.
    pub network: Option<(String, String)>,
    /// The task's time limits, enforced here on the agent's monotonic clock.
    pub start_timeout: Duration,
    pub max_runtime: Option<Duration>,
    /// When the task reached RUNNING as the control plane recorded it (this agent's
    /// clock): an adopted task's run time counts from there.
    pub started_at: Option<u64>,
}

/// The engine network of a Berth namespace's tasks on the bridge: the engine's default for
/// `default`, one of the namespace's own for the others.
pub fn namespace_network(namespace: &str) -> Option<String> {
    (namespace != berth_core::namespace::DEFAULT_NAMESPACE)
        .then(|| format!("{NETWORK_PREFIX}{namespace}"))
}

/// Engine networks the agent makes are named this and the namespace.
pub const NETWORK_PREFIX: &str = "berth-ns-";

impl TaskPlan {
    /// The order to create and start in: the owner first, then the others in definition
    /// order.
    pub fn start_order(&self) -> Vec<usize> {
        std::iter::once(self.owner)
            .chain((0..self.containers.len()).filter(|i| *i != self.owner))
            .collect()
    }
}

/// Makes a string safe inside a Docker container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
fn docker_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

pub fn docker_name(task_id: &str, container: &str) -> String {
    format!("berth-{}-{}", docker_safe(task_id), docker_safe(container))
}

fn secs_to_nanos(s: u32) -> i64 {
    i64::from(s) * 1_000_000_000
}

/// The containers `at` runs as on agent `agent_id`. A CPU limit above `max_nano_cpus` (the
/// engine's CPUs, which it refuses to exceed) is lowered to it: a container cannot use more
/// than the host has anyway, and an agent may offer more units than it has cores.
pub fn plan(agent_id: &str, at: &AssignedTask, pids_per_task: u32, max_nano_cpus: u64) -> TaskPlan {
    let task = &at.task;
    let def = &at.definition;
    let declared: Vec<(Option<u32>, Option<u32>)> = def
        .container_definitions
        .iter()
        .map(|c| (c.cpu, c.memory))
        .collect();
    let limits = task_limits(task.cpu, task.memory, &declared, pids_per_task);
    // Validation guarantees an essential container; fall back to the first regardless.
    let owner = def
        .container_definitions
        .iter()
        .position(|c| c.is_essential())
        .unwrap_or(0);
    let namespace = berth_core::namespace::of(&task.family).to_string();
    let network = match def.network_mode {
        berth_core::NetworkMode::Bridge => {
            namespace_network(&namespace).map(|n| (n, namespace.clone()))
        }
        berth_core::NetworkMode::None => None,
    };
    let owner_name = def
        .container_definitions
        .get(owner)
        .map(|c| docker_name(&task.id, &c.name))
        .unwrap_or_default();

    // Every port of the task is published on the namespace owner.
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for c in &def.container_definitions {
        for p in &c.port_mappings {
            let key = format!("{}/{}", p.container_port, p.protocol);
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: None,
                    // Empty: the engine picks a free port.
                    host_port: Some(if p.host_port == 0 {
                        String::new()
                    } else {
                        p.host_port.to_string()
                    }),
                }]),
            );
        }
    }

    let containers = def
        .container_definitions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ov = task.overrides.iter().find(|o| o.name == c.name);
            let mut env: Vec<(String, String)> = c
                .environment
                .iter()
                .map(|kv| (kv.name.clone(), kv.value.clone()))
                .collect();
            for kv in ov.map(|o| o.environment.as_slice()).unwrap_or_default() {
                match env.iter_mut().find(|(k, _)| *k == kv.name) {
                    Some(e) => e.1 = kv.value.clone(),
                    None => env.push((kv.name.clone(), kv.value.clone())),
                }
            }
            // A scheduled or retried task learns which run and attempt it is, whatever its
            // definition says: a job that must not act twice for one run keys on
            // BERTH_RUN_ID. A plain RunTask's run has no scheduled time.
            if let Some(run) = &task.run {
                let scheduled = (!run.schedule.is_empty()).then(|| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(run.scheduled_time),
                    )
                    .to_string()
                });
                let given = [
                    (
                        "BERTH_RUN_ID",
                        Some(berth_core::namespace::split(&run.run_id).1.to_string()),
                    ),
                    ("BERTH_ATTEMPT", Some(run.attempt.to_string())),
                    ("BERTH_SCHEDULED_TIME", scheduled),
                ];
                for (k, v) in given {
                    env.retain(|(name, _)| name != k);
                    if let Some(v) = v {
                        env.push((k.to_string(), v));
                    }
                }
            }
            let cmd = match ov.and_then(|o| o.command.clone()) {
                Some(cmd) => Some(cmd),
                None if !c.command.is_empty() => Some(c.command.clone()),
                None => None,
            };
            let l = limits.get(i).copied().unwrap_or(Limits {
                nano_cpus: crate::resources::MIN_NANO_CPUS,
                memory_bytes: crate::resources::MIN_MEMORY_BYTES,
                pids: crate::resources::MIN_PIDS,
            });
            let labels = HashMap::from([
                (LABEL_AGENT.to_string(), agent_id.to_string()),
                (LABEL_TASK.to_string(), task.id.clone()),
                (LABEL_CONTAINER.to_string(), c.name.clone()),
                (LABEL_INDEX.to_string(), i.to_string()),
                (LABEL_DEFINITION.to_string(), def.name()),
            ]);
            let is_owner = i == owner;
            let host_config = HostConfig {
                nano_cpus: Some(l.nano_cpus.min(max_nano_cpus) as i64),
                memory: Some(l.memory_bytes as i64),
                memory_swap: Some(l.memory_bytes as i64),
                pids_limit: Some(l.pids as i64),
                privileged: Some(false),
                security_opt: Some(vec![NO_NEW_PRIVILEGES.to_string()]),
                cap_drop: Some(vec!["ALL".to_string()]),
                cap_add: Some(CAPABILITIES.iter().map(|c| c.to_string()).collect()),
                readonly_rootfs: c.readonly_root_filesystem,
                network_mode: Some(if is_owner {
                    match &network {
                        Some((name, _)) => name.clone(),
                        None => def.network_mode.as_str().to_string(),
                    }
                } else {
                    format!("container:{owner_name}")
                }),
                port_bindings: if is_owner && !bindings.is_empty() {
                    Some(bindings.clone())
                } else {
                    None
                },
                // The agent decides what runs; the engine must never restart a task
                // container on its own (not even after the engine restarts).
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".to_string()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                        ("max-file".to_string(), LOG_MAX_FILES.to_string()),
                    ])),
                }),
                ..Default::default()
            };
            // Every field explicit: the engine's own defaults differ from ECS's (a 30 s
            // timeout where ECS has 5).
            let healthcheck = c.health_check.as_ref().map(|h| HealthConfig {
                test: Some(h.command.clone()),
                interval: Some(secs_to_nanos(h.interval_s())),
                timeout: Some(secs_to_nanos(h.timeout_s())),
                retries: Some(i64::from(h.retries_n())),
                start_period: Some(secs_to_nanos(h.start_period_s())),
                start_interval: None,
            });
            let body = ContainerCreateBody {
                image: Some(c.image.clone()),
                cmd,
                entrypoint: if c.entry_point.is_empty() {
                    None
                } else {
                    Some(c.entry_point.clone())
                },
                env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
                labels: Some(labels),
                exposed_ports: if is_owner && !exposed.is_empty() {
                    Some(exposed.clone())
                } else {
                    None
                },
                healthcheck,
                user: c.user.clone(),
                stop_timeout: Some(i64::from(c.stop_timeout_s())),
                host_config: Some(host_config),
                ..Default::default()
            };
            ContainerPlan {
                index: i,
                name: c.name.clone(),
                docker_name: docker_name(&task.id, &c.name),
                image: c.image.clone(),
                essential: c.is_essential(),
                stop_timeout: Duration::from_secs(u64::from(c.stop_timeout_s())),
                owner: is_owner,
                limits: l,
                body,
            }
        })
        .collect();
    TaskPlan {
        task_id: task.id.clone(),
        containers,
        owner,
        network,
        start_timeout: Duration::from_millis(task.timeouts.start_timeout_ms()),
        max_runtime: task.timeouts.max_runtime_ms().map(Duration::from_millis),
        started_at: task.started_at,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use berth_core::*;

    pub fn assigned(id: &str, containers: Vec<ContainerDefinition>) -> AssignedTask {
        AssignedTask {
            task: Task {
                id: id.to_string(),
                family: "fam".into(),
                revision: 1,
                cpu: 512,
                memory: 1024,
                agent_id: "a1".into(),
                last_status: TaskState::Provisioning,
                desired_status: DesiredStatus::Running,
                started_by: String::new(),
                group: String::new(),
                client_token: None,
                overrides: vec![],
                containers: vec![],
                health_status: Default::default(),
                ready_since: None,
                stop_code: None,
                stopped_reason: None,
                created_at: 0,
                pull_started_at: None,
                started_at: None,
                stopping_at: None,
                stopped_at: None,
                version: 1,
                transitions: vec![],
                run: None,
                timeouts: Default::default(),
            },
            definition: TaskDefinition {
                family: "fam".into(),
                revision: 1,
                cpu: 512,
                memory: 1024,
                network_mode: NetworkMode::Bridge,
                container_definitions: containers,
                status: TaskDefinitionStatus::Active,
                registered_at: 0,
                deregistered_at: None,
                timeouts: Default::default(),
            },
        }
    }

    fn container(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: name.into(),
            image: "img".into(),
            ..Default::default()
        }
    }

    #[test]
    fn one_namespace_per_task_owned_by_the_first_essential_container() {
        let mut side = container("side");
        side.essential = Some(false);
        side.port_mappings = vec![PortMapping {
            container_port: 9000,
            host_port: 0,
            protocol: "udp".into(),
        }];
        let mut web = container("web");
        web.port_mappings = vec![PortMapping {
            container_port: 80,
            host_port: 8080,
            protocol: "tcp".into(),
        }];
        let p = plan("a1", &assigned("t1", vec![side, web]), 4096, u64::MAX);
        assert_eq!(p.owner, 1);
        assert_eq!(p.start_order(), vec![1, 0]);
        let owner = p.containers[1].body.host_config.as_ref().unwrap();
        assert_eq!(owner.network_mode.as_deref(), Some("bridge"));
        let ports = owner.port_bindings.as_ref().unwrap();
        assert_eq!(
            ports["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("8080")
        );
        assert_eq!(
            ports["9000/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("")
        );
        let side = p.containers[0].body.host_config.as_ref().unwrap();
        assert_eq!(side.network_mode.as_deref(), Some("container:berth-t1-web"));
        assert!(side.port_bindings.is_none());
        assert!(p.containers[0].body.exposed_ports.is_none());
    }

    #[test]
    fn network_mode_none_gives_the_owner_no_network_and_the_others_its_namespace() {
        let mut at = assigned("t2", vec![container("app"), container("side")]);
        at.definition.network_mode = NetworkMode::None;
        let p = plan("a1", &at, 4096, u64::MAX);
        let owner = p.containers[0].body.host_config.as_ref().unwrap();
        assert_eq!(owner.network_mode.as_deref(), Some("none"));
        assert!(owner.port_bindings.is_none());
        let side = p.containers[1].body.host_config.as_ref().unwrap();
        assert_eq!(side.network_mode.as_deref(), Some("container:berth-t2-app"));
    }

    #[test]
    fn a_namespaces_tasks_join_its_own_network_and_defaults_the_engines_bridge() {
        let mut at = assigned("t3", vec![container("app"), container("side")]);
        at.task.family = "team-a/web".into();
        let p = plan("a1", &at, 4096, u64::MAX);
        assert_eq!(
            p.network,
            Some(("berth-ns-team-a".to_string(), "team-a".to_string()))
        );
        let owner = p.containers[0].body.host_config.as_ref().unwrap();
        assert_eq!(owner.network_mode.as_deref(), Some("berth-ns-team-a"));
        let side = p.containers[1].body.host_config.as_ref().unwrap();
        assert_eq!(side.network_mode.as_deref(), Some("container:berth-t3-app"));
        // No network at all stays none, whatever the namespace.
        at.definition.network_mode = NetworkMode::None;
        let p = plan("a1", &at, 4096, u64::MAX);
        assert_eq!(p.network, None);
        at.task.family = "web".into();
        at.definition.network_mode = NetworkMode::Bridge;
        assert_eq!(plan("a1", &at, 4096, u64::MAX).network, None);
    }

    #[test]
    fn hard_limits_privileges_and_labels() {
        let p = plan(
            "a1",
            &assigned("t1", vec![container("app")]),
            4096,
            u64::MAX,
        );
        let c = &p.containers[0];
        let h = c.body.host_config.as_ref().unwrap();
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.memory, Some(1024 * 1024 * 1024));
        assert_eq!(h.memory_swap, h.memory);
        assert_eq!(h.cpu_quota, None);
        assert_eq!(h.pids_limit, Some(4096));
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(!h.cap_add.as_ref().unwrap().contains(&"NET_RAW".to_string()));
        assert_eq!(
            h.security_opt.as_deref(),
            Some(&[NO_NEW_PRIVILEGES.to_string()][..])
        );
        let labels = c.body.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_AGENT], "a1");
        assert_eq!(labels[LABEL_TASK], "t1");
        assert_eq!(labels[LABEL_CONTAINER], "app");
        assert_eq!(c.docker_name, "berth-t1-app");
        assert_eq!(c.stop_timeout, Duration::from_secs(30));
    }

    #[test]
    fn user_and_read_only_root_reach_the_engine_only_when_asked_for() {
        let plain = plan(
            "a1",
            &assigned("t1", vec![container("app")]),
            4096,
            u64::MAX,
        );
        let body = &plain.containers[0].body;
        assert_eq!(body.user, None, "the image's own user");
        assert_eq!(body.host_config.as_ref().unwrap().readonly_rootfs, None);

        let mut c = container("app");
        c.user = Some("65534:65534".into());
        c.readonly_root_filesystem = Some(true);
        let p = plan("a1", &assigned("t1", vec![c]), 4096, u64::MAX);
        let body = &p.containers[0].body;
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(
            body.host_config.as_ref().unwrap().readonly_rootfs,
            Some(true)
        );
    }

    #[test]
    fn overrides_win_over_the_definition() {
        let mut c = container("app");
        c.command = vec!["sleep".into(), "1".into()];
        c.entry_point = vec!["/bin/sh".into(), "-c".into()];
        c.environment = vec![
            KeyValue {
                name: "A".into(),
                value: "1".into(),
            },
            KeyValue {
                name: "B".into(),
                value: "2".into(),
            },
        ];
        let mut at = assigned("t1", vec![c]);
        at.task.overrides = vec![ContainerOverride {
            name: "app".into(),
            command: Some(vec!["echo hi".into()]),
            environment: vec![
                KeyValue {
                    name: "B".into(),
                    value: "3".into(),
                },
                KeyValue {
                    name: "C".into(),
                    value: "4".into(),
                },
            ],
        }];
        let p = plan("a1", &at, 4096, u64::MAX);
        let b = &p.containers[0].body;
        assert_eq!(b.cmd.as_deref(), Some(&["echo hi".to_string()][..]));
        assert_eq!(b.entrypoint.as_ref().unwrap()[0], "/bin/sh");
        assert_eq!(
            b.env.as_deref(),
            Some(&["A=1".to_string(), "B=3".to_string(), "C=4".to_string()][..])
        );
    }

    #[test]
    fn a_scheduled_task_is_told_its_run_and_attempt() {
        let mut c = container("app");
        c.environment = vec![KeyValue {
            name: "BERTH_ATTEMPT".into(),
            value: "forged".into(),
        }];
        let mut at = assigned("t1", vec![c]);
        at.task.run = Some(berth_core::schedule::TaskRun {
            schedule: "default/nightly".into(),
            run_id: "default/nightly@1780300800000".into(),
            attempt: 2,
            scheduled_time: 1_780_300_800_000,
        });
        let p = plan("a1", &at, 4096, u64::MAX);
        let env = p.containers[0].body.env.clone().unwrap();
        assert!(env.contains(&"BERTH_RUN_ID=nightly@1780300800000".to_string()));
        assert!(env.contains(&"BERTH_ATTEMPT=2".to_string()));
        assert!(env.contains(&"BERTH_SCHEDULED_TIME=2026-06-01T08:00:00.000Z".to_string()));
        assert!(!env.iter().any(|e| e == "BERTH_ATTEMPT=forged"));
    }

    #[test]
    fn cpu_limits_never_exceed_the_hosts_cpus() {
        let mut at = assigned("t1", vec![container("app")]);
        at.task.cpu = 4096;
        let p = plan("a1", &at, 4096, 2_000_000_000);
        let h = p.containers[0].body.host_config.as_ref().unwrap();
        assert_eq!(h.nano_cpus, Some(2_000_000_000));
    }

    #[test]
    fn names_are_safe_for_the_engine() {
        assert_eq!(docker_name("a/b c", "x:y"), "berth-a_b_c-x_y");
    }
}
