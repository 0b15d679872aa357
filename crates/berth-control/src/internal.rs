//! Services on the raft port besides Raft itself: node-to-node calls and the agent
//! protocol.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

use berth_core::command::AgentRegistration;
use berth_core::Outcome;
use berth_proto::internal::agent_protocol_server::AgentProtocol;
use berth_proto::internal::node_server::Node as NodeRpc;
use berth_proto::internal::*;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use crate::error::{ApiError, ApiResult};
use crate::node::{LeaderRequest, LeaderResponse, Node, WriteRequest};

pub fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// This node's own figures.
pub fn local_info(node: &Node, digest: bool) -> NodeInfo {
    let m = node.raft.metrics().borrow().clone();
    let (revision, state_digest) = {
        let s = node.state.read();
        (
            s.state.revision(),
            if digest { s.state.digest() } else { 0 },
        )
    };
    NodeInfo {
        id: node.id,
        raft_address: node.cfg.raft_advertise.clone(),
        api_address: node.cfg.api_advertise.clone(),
        initialized: m.vote.leader_id().term > 0 || m.last_log_index.is_some(),
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        state: role(m.state).to_string(),
        leader_id: m.current_leader,
        state_digest,
        revision,
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.map(|l| l.index).unwrap_or(0),
    }
}

pub struct NodeService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl NodeRpc for NodeService {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<NodeInfo>, Status> {
        Ok(Response::new(local_info(
            &self.node,
            req.into_inner().digest,
        )))
    }

    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let req: LeaderRequest = serde_json::from_slice(&req.into_inner().json)
            .map_err(|e| Status::invalid_argument(format!("malformed forwarded request: {e}")))?;
        let result: ApiResult<LeaderResponse> = self.node.handle_as_leader(req).await;
        let json = serde_json::to_vec(&result)
            .map_err(|e| Status::internal(format!("cannot encode answer: {e}")))?;
        Ok(Response::new(ForwardResponse { json }))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let index = tokio::time::timeout(READ_INDEX_TIMEOUT, self.node.read_index.read_index())
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "could not confirm leadership within {READ_INDEX_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| Status::unavailable(format!("not able to serve a read index: {e}")))?;
        Ok(Response::new(ReadIndexResponse { index }))
    }
}

pub struct AgentProtocolService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl AgentProtocol for AgentProtocolService {
    async fn register(
        &self,
        req: Request<AgentRegisterRequest>,
    ) -> Result<Response<AgentRegisterResponse>, Status> {
        self.speaks_for(&req, &req.get_ref().agent_id)?;
        let r = req.into_inner();
        let reg = AgentRegistration {
            id: r.agent_id,
            cpu: r.cpu,
            memory: r.memory,
            attributes: r.attributes.into_iter().collect(),
            address: r.address,
        };
        berth_core::validate::agent(&reg.id, reg.cpu, reg.memory, &reg.attributes)
            .map_err(ApiError::from)?;
        let (revision, outcome) = self.node.write(WriteRequest::RegisterAgent(reg)).await?;
        match outcome {
            Outcome::Agent(a) => Ok(Response::new(AgentRegisterResponse {
                epoch: a.epoch,
                heartbeat_interval_ms: self.node.cfg.heartbeat_interval.as_millis() as u64,
                revision,
            })),
            other => Err(Status::internal(format!(
                "register: unexpected outcome {other:?}"
            ))),
        }
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.speaks_for(&req, &req.get_ref().agent_id)?;
        let r = req.into_inner();
        if r.agent_id.is_empty() {
            return Err(ApiError::invalid("agentId must not be empty").into());
        }
        match self
            .node
            .leader_call(LeaderRequest::Heartbeat {
                agent_id: r.agent_id,
                epoch: r.epoch,
                engine_error: (!r.engine_error.is_empty()).then_some(r.engine_error),
            })
            .await?
        {
            LeaderResponse::Heartbeat { ttl_ms } => Ok(Response::new(HeartbeatResponse { ttl_ms })),
            other => Err(Status::internal(format!(
                "heartbeat: unexpected answer {other:?}"
            ))),
        }
    }

    type AssignmentsStream = Pin<Box<dyn Stream<Item = Result<AssignmentBatch, Status>> + Send>>;

    async fn assignments(
        &self,
        req: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        self.speaks_for(&req, &req.get_ref().agent_id)?;
        let r = req.into_inner();
        // Subscribe before reading, so nothing applied in between is missed.
        let sub = self.node.assignments.subscribe(&r.agent_id);
        self.node.read_barrier(false).await?;
        self.check_registration(&r.agent_id, r.epoch)?;
        let (tx, rx) = mpsc::channel(ASSIGNMENT_BUFFER);
        let node = self.node.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = assignment_loop(node.clone(), r.agent_id, r.epoch, r.from_revision, sub, tx) => {}
                _ = node.shutdown.wait() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report_tasks(
        &self,
        req: Request<ReportTasksRequest>,
    ) -> Result<Response<ReportTasksResponse>, Status> {
        self.speaks_for(&req, &req.get_ref().agent_id)?;
        let r = req.into_inner();
        let reports: Vec<berth_core::TaskReport> = serde_json::from_slice(&r.reports)
            .map_err(|e| ApiError::invalid(format!("reports: not a list of task reports: {e}")))?;
        if reports.len() > MAX_REPORTS {
            return Err(ApiError::invalid(format!(
                "{} reports in one call; the limit is {MAX_REPORTS}",
                reports.len()
            ))
            .into());
        }
        let (revision, _) = self
            .node
            .write(WriteRequest::ReportTasks {
                agent_id: r.agent_id,
                epoch: r.epoch,
                reports,
            })
            .await?;
        Ok(Response::new(ReportTasksResponse { revision }))
    }

    async fn report_utilization(
        &self,
        req: Request<ReportUtilizationRequest>,
    ) -> Result<Response<ReportUtilizationResponse>, Status> {
        self.speaks_for(&req, &req.get_ref().agent_id)?;
        let r = req.into_inner();
        let windows: Vec<berth_core::utilization::Window> = serde_json::from_slice(&r.windows)
            .map_err(|e| {
                ApiError::invalid(format!("windows: not a list of utilization windows: {e}"))
            })?;
        let (revision, _) = self
            .node
            .write(WriteRequest::RecordUtilization {
                agent_id: r.agent_id,
                epoch: r.epoch,
                windows,
            })
            .await?;
        Ok(Response::new(ReportUtilizationResponse { revision }))
    }
}

/// A follower asking for the read index gives up after this (it asks again, or answers
/// UNAVAILABLE when its own deadline passes).
const READ_INDEX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reports accepted in one ReportTasks call; agents batch up to this.
pub const MAX_REPORTS: usize = 1000;
/// Batches buffered per assignment stream on their way to the agent (a slow agent holds
/// up its own stream's router queue, which then asks for the full set).
const ASSIGNMENT_BUFFER: usize = 64;

impl AgentProtocolService {
    /// With TLS, an agent speaks only for itself: the certificate it presented must name
    /// the agent id the call is about. Refusals are logged with the caller's address.
    fn speaks_for<T>(&self, req: &Request<T>, agent_id: &str) -> Result<(), Status> {
        if self.node.cfg.tls.is_none() {
            return Ok(());
        }
        berth_tls::grpc::require_agent(req, agent_id)
            .map(|_| ())
            .inspect_err(|e| {
                tracing::warn!(
                    peer = ?req.remote_addr(),
                    agent = %berth_core::quote(agent_id),
                    refused = %e.message(),
                    "agent call refused"
                );
            })
    }

    fn check_registration(&self, agent_id: &str, epoch: u64) -> ApiResult<()> {
        let s = self.node.state.read();
        let agent = s.state.agent(agent_id).ok_or_else(|| {
            ApiError::NotFound(format!(
                "agent {} is not registered; register first",
                berth_core::quote(agent_id)
            ))
        })?;
        if agent.epoch != epoch {
            return Err(ApiError::FailedPrecondition(format!(
                "agent {agent_id}: registration {epoch} is stale, the current one is {}; re-register",
                agent.epoch
            )));
        }
        Ok(())
    }
}

fn encode_tasks(
    state: &berth_core::ClusterState,
    key: Option<&crate::secrets::SecretsKey>,
    tasks: impl Iterator<Item = berth_core::AssignedTask>,
) -> Vec<Vec<u8>> {
    tasks
        .map(|t| for_agent(state, key, t))
        .filter_map(|t| serde_json::to_vec(&t).ok())
        .collect()
}

/// The task as its agent gets it: every secret its containers name opened into their
/// environment, here and only here (the stream is mutual TLS to that agent alone). A task
/// not started yet whose secret cannot be opened goes as stopped before it started
/// (TaskFailedToStart, saying which secret and why), so its agent ends it without
/// starting anything.
fn for_agent(
    state: &berth_core::ClusterState,
    key: Option<&crate::secrets::SecretsKey>,
    mut at: berth_core::AssignedTask,
) -> berth_core::AssignedTask {
    use berth_core::namespace;
    let ns = namespace::of(&at.task.family).to_string();
    let mut failed = None;
    for c in &mut at.definition.container_definitions {
        for s in std::mem::take(&mut c.secrets) {
            let name = namespace::qualified(&ns, &s.value_from);
            let value = match (key, state.secret(&name)) {
                (None, _) => Err("the control node has no secrets key"),
                (_, None) => Err("it does not exist"),
                (Some(k), Some(sealed)) => k
                    .open(&name, &sealed.sealed)
                    .map_err(|_| "it does not open with this control node's secrets key")
                    .and_then(|v| String::from_utf8(v).map_err(|_| "its value is not UTF-8")),
            };
            match value {
                Ok(value) => {
                    c.environment.retain(|kv| kv.name != s.name);
                    c.environment.push(berth_core::KeyValue {
                        name: s.name,
                        value,
                    });
                }
                Err(why) => {
                    failed.get_or_insert(format!(
                        "CannotPullSecretError: secret {} for container {}'s {}: {why}",
                        s.value_from, c.name, s.name
                    ));
                }
            }
        }
    }
    if let Some(reason) = failed {
        let t = &mut at.task;
        if t.last_status == berth_core::TaskState::Provisioning
            && t.desired_status == berth_core::DesiredStatus::Running
        {
            t.desired_status = berth_core::DesiredStatus::Stopped;
            t.stop_code = Some(berth_core::StopCode::TaskFailedToStart);
            t.stopped_reason = Some(reason.clone());
        }
        tracing::warn!(task = %t.id, %reason, "a task's secret could not be resolved");
    }
    at
}

/// Full set first (unless the agent already has everything up to `from`), then one batch
/// per applied entry that touched the agent's tasks. A lagging stream or a snapshot
/// install sends the full set again. Ends when the agent re-registers (its epoch moves on)
/// or disconnects.
async fn assignment_loop(
    node: Arc<Node>,
    agent_id: String,
    epoch: u64,
    from: u64,
    mut sub: crate::assignments::Subscription,
    tx: mpsc::Sender<Result<AssignmentBatch, Status>>,
) {
    use crate::assignments::Message;
    let stale = |current: u64| {
        Status::failed_precondition(format!(
            "agent {agent_id} registered again (registration {current}); this stream belongs \
             to registration {epoch}"
        ))
    };
    let mut send_full = {
        let s = node.state.read();
        from == 0 || s.state.agent_tasks_changed_at(&agent_id) > from
    };
    // The revision of the last full set sent: a delta at or below it is already in it
    // (the router may hand over entries applied before the set was read).
    let mut sent_through = 0;
    loop {
        if send_full || sub.take_missed() {
            send_full = false;
            let batch = {
                let s = node.state.read();
                let current = s.state.agent(&agent_id).map(|a| a.epoch).unwrap_or(0);
                if current == epoch {
                    sent_through = s.state.revision();
                    Ok(AssignmentBatch {
                        revision: sent_through,
                        full: true,
                        tasks: encode_tasks(
                            &s.state,
                            node.cfg.secrets_key.as_deref(),
                            s.state.assigned_tasks(&agent_id),
                        ),
                    })
                } else {
                    Err(stale(current))
                }
            };
            let end = batch.is_err();
            if tx.send(batch).await.is_err() || end {
                return;
            }
        }
        let (revision, touched, agent) = match sub.rx.recv().await {
            None => return,
            Some(Message::Resync) => {
                send_full = true;
                continue;
            }
            Some(Message::Delta {
                revision,
                tasks,
                agent,
            }) => (revision, tasks, agent),
        };
        if let Some(a) = agent.filter(|a| a.epoch != epoch) {
            let _ = tx.send(Err(stale(a.epoch))).await;
            return;
        }
        if revision <= sent_through || touched.is_empty() {
            continue;
        }
        let batch = {
            let s = node.state.read();
            let assigned: Vec<berth_core::AssignedTask> = touched
                .into_iter()
                .filter_map(|t| {
                    let def = s
                        .state
                        .task_definition(&t.family, Some(t.revision))
                        .ok()?
                        .clone();
                    Some(berth_core::AssignedTask {
                        task: t,
                        definition: def,
                    })
                })
                .collect();
            AssignmentBatch {
                revision,
                full: false,
                tasks: encode_tasks(
                    &s.state,
                    node.cfg.secrets_key.as_deref(),
                    assigned.into_iter(),
                ),
            }
        };
        if tx.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::command::{Placement, RunTasks};
    use berth_core::secret::SecretRef;
    use berth_core::{Batch, ClusterState, Command, ContainerDefinition, TaskDefinitionSpec};

    /// A state with a task of `family` (qualified) naming secret `from` as DB, and the
    /// secrets `held` (qualified) sealed with `key`.
    fn state(
        family: &str,
        from: &str,
        held: &[&str],
        key: &crate::secrets::SecretsKey,
    ) -> ClusterState {
        let mut st = ClusterState::new();
        let spec = TaskDefinitionSpec {
            family: family.into(),
            cpu: Some(256),
            memory: Some(512),
            network_mode: None,
            container_definitions: vec![ContainerDefinition {
                name: "app".into(),
                image: "berth/workload".into(),
                secrets: vec![SecretRef {
                    name: "DB".into(),
                    value_from: from.into(),
                }],
                ..Default::default()
            }],
            timeouts: Default::default(),
        };
        let mut commands = vec![
            Command::CreateNamespace {
                name: "team-a".into(),
                quota: Default::default(),
            },
            Command::CreateNamespace {
                name: "team-b".into(),
                quota: Default::default(),
            },
            Command::RegisterTaskDefinition { spec },
            Command::RegisterAgent(berth_core::command::AgentRegistration {
                id: "a1".into(),
                cpu: 1024,
                memory: 2048,
                attributes: Default::default(),
                address: String::new(),
            }),
            Command::RunTasks(RunTasks {
                family: family.into(),
                revision: 1,
                client_token: None,
                fingerprint: 0,
                started_by: String::new(),
                group: format!("family:{family}"),
                overrides: vec![],
                placements: vec![Placement {
                    task_id: "t1".into(),
                    agent_id: "a1".into(),
                }],
                failures: vec![],
                service: None,
                run: None,
                timeouts: Default::default(),
                retry: None,
            }),
        ];
        for name in held {
            commands.push(Command::PutSecret {
                name: name.to_string(),
                sealed: key.seal(name, b"hunter2").unwrap(),
            });
        }
        for r in st.apply(1, &Batch { now: 1, commands }) {
            r.unwrap();
        }
        st
    }

    fn key() -> crate::secrets::SecretsKey {
        let dir = tempfile::tempdir().unwrap();
        crate::secrets::ensure_key(dir.path()).unwrap();
        crate::secrets::read_key(dir.path()).unwrap().unwrap()
    }

    fn sent(
        st: &ClusterState,
        key: Option<&crate::secrets::SecretsKey>,
    ) -> berth_core::AssignedTask {
        let at = st.assigned_tasks("a1").next().unwrap();
        for_agent(st, key, at)
    }

    #[test]
    fn the_agent_gets_the_secret_of_the_tasks_namespace_in_its_environment() {
        let k = key();
        let st = state("team-a/web", "db", &["team-a/db"], &k);
        let at = sent(&st, Some(&k));
        let c = &at.definition.container_definitions[0];
        assert!(c.secrets.is_empty());
        assert_eq!(
            c.environment,
            vec![berth_core::KeyValue {
                name: "DB".into(),
                value: "hunter2".into()
            }]
        );
        assert_eq!(at.task.desired_status, berth_core::DesiredStatus::Running);
    }

    #[test]
    fn a_secret_that_cannot_be_opened_stops_the_task_before_it_starts_saying_why() {
        let k = key();
        // Only team-b has a `db`: team-a's task never gets it.
        let st = state("team-a/web", "db", &["team-b/db"], &k);
        let other = key();
        for (st, key, why) in [
            (&st, Some(&k), "it does not exist"),
            (
                &state("team-a/web", "db", &["team-a/db"], &k),
                Some(&other),
                "does not open",
            ),
            (
                &state("team-a/web", "db", &["team-a/db"], &k),
                None,
                "no secrets key",
            ),
        ] {
            let at = sent(st, key);
            let c = &at.definition.container_definitions[0];
            assert!(c.secrets.is_empty() && c.environment.is_empty(), "{c:?}");
            assert_eq!(at.task.desired_status, berth_core::DesiredStatus::Stopped);
            assert_eq!(
                at.task.stop_code,
                Some(berth_core::StopCode::TaskFailedToStart)
            );
            let reason = at.task.stopped_reason.unwrap_or_default();
            assert!(
                reason.contains(why) && reason.contains("secret db"),
                "{reason}"
            );
        }
    }
}
