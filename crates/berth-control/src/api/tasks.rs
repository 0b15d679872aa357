use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::limits::{MAX_ANSWER_BYTES, MAX_DESCRIBE};
use berth_core::state::{Change, TaskFilter};
use berth_core::{quote, DesiredStatus, Outcome};
use berth_proto::convert::task_to_wire;
use berth_proto::v1::tasks_server::Tasks;
use berth_proto::v1::*;
use berth_raft::store::StateEvent;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{check_task_id, is_task_id, page, page_size, unexpected};
use crate::error::ApiError;
use crate::node::{Node, WriteRequest};

pub struct TasksApi {
    pub node: Arc<Node>,
}

/// Events buffered per watcher before the watcher counts as slow; a slow watcher is
/// resynchronised (sent the whole picture again) rather than buffered without bound.
const WATCH_BUFFER: usize = 256;

type WatchStream = Pin<Box<dyn Stream<Item = Result<TaskEvent, Status>> + Send>>;
type LogsStream = Pin<Box<dyn Stream<Item = Result<TaskLogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Tasks for TasksApi {
    async fn run(&self, req: Request<RunTaskRequest>) -> Result<Response<RunTaskResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let mut run: berth_core::command::RunTaskRequest = req.into_inner().into();
        let (family, revision) =
            super::definition_ref(&ns, "taskDefinition", &run.task_definition)?;
        run.task_definition = match revision {
            Some(r) => format!("{family}:{r}"),
            None => family,
        };
        if !run.group.is_empty() {
            run.group =
                berth_core::namespace::qualify_group(&ns, &run.group).map_err(ApiError::from)?;
        }
        // The total is checked here too, so that an oversized request is refused before
        // it is forwarded; the leader checks every override against the definition.
        berth_core::validate::overrides_size(&run.overrides).map_err(ApiError::from)?;
        // Every RunTask carries a token from here on, so that this node may retry it
        // across a leader change without ever starting it twice.
        let token = match run.client_token.take() {
            Some(t) => {
                berth_core::validate::client_token(&t).map_err(ApiError::from)?;
                t
            }
            None => format!("auto-{}", crate::batcher::new_task_id()),
        };
        run.client_token = Some(berth_core::namespace::qualify_token(&ns, &token));
        let (revision, outcome) = self
            .node
            .write_by(by.as_ref(), WriteRequest::RunTask(run))
            .await?;
        match &outcome {
            Outcome::Tasks { tasks, failures } => Ok(Response::new(RunTaskResponse {
                tasks: tasks.iter().map(Into::into).collect(),
                failures: failures.iter().map(Into::into).collect(),
                revision,
            })),
            other => Err(unexpected("run", other)),
        }
    }

    async fn stop(
        &self,
        req: Request<StopTaskRequest>,
    ) -> Result<Response<StopTaskResponse>, Status> {
        let by = super::caller(&req);
        let namespace = super::namespace(&req)?;
        let req = req.into_inner();
        check_task_id("taskId", &req.task_id)?;
        berth_core::validate::reason(&req.reason).map_err(ApiError::from)?;
        let (revision, outcome) = self
            .node
            .write_by(
                by.as_ref(),
                WriteRequest::StopTask {
                    task_id: req.task_id,
                    reason: req.reason,
                    namespace,
                },
            )
            .await?;
        match &outcome {
            Outcome::Task(t) => Ok(Response::new(StopTaskResponse {
                task: Some(t.into()),
                revision,
            })),
            other => Err(unexpected("stop", other)),
        }
    }

    async fn describe(
        &self,
        req: Request<DescribeTasksRequest>,
    ) -> Result<Response<DescribeTasksResponse>, Status> {
        let ns = super::namespace(&req)?;
        let req = req.into_inner();
        if req.task_ids.is_empty() {
            return Err(ApiError::invalid("taskIds must name at least one task").into());
        }
        if req.task_ids.len() > MAX_DESCRIBE {
            return Err(ApiError::invalid(format!(
                "taskIds has {} ids; the limit is {MAX_DESCRIBE}",
                req.task_ids.len(),
            ))
            .into());
        }
        self.node.read_barrier(req.stale).await?;
        let s = self.node.state.read();
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        // Tasks are bounded in bytes like a List page: 100 tasks with full overrides
        // would pass a client's 4 MiB. Ids that do not fit are named, to ask again.
        let mut bytes = 0;
        for (i, id) in req.task_ids.iter().enumerate() {
            // A malformed id names no task: it gets its failure like any other missing
            // one (as the proto promises) instead of failing the whole call.
            // Another namespace's task is missing, as one that never existed.
            let found = if is_task_id(id) {
                s.state
                    .task(id)
                    .filter(|t| berth_core::namespace::of(&t.family) == ns)
            } else {
                None
            };
            let Some(t) = found else {
                let why = if is_task_id(id) {
                    "does not exist (or was collected an hour after it stopped)"
                } else {
                    "is not a task id (32 lowercase hex characters)"
                };
                failures.push(Failure {
                    reason: "MISSING".into(),
                    detail: format!("taskIds[{i}] {} {why}", quote(id)),
                    arn: berth_core::quote::prefix(id).to_string(),
                });
                continue;
            };
            let t: Task = task_to_wire(&s.state, t, crate::node::now_ms());
            let len = berth_proto::element_len(&t);
            if !tasks.is_empty() && bytes + len > MAX_ANSWER_BYTES {
                failures.push(Failure {
                    reason: "ANSWER_FULL".into(),
                    detail: format!(
                        "taskIds[{i}]: the answer reached its bound of {MAX_ANSWER_BYTES} bytes \
                         of tasks before this one; describe it in another call"
                    ),
                    arn: id.clone(),
                });
                continue;
            }
            bytes += len;
            tasks.push(t);
        }
        Ok(Response::new(DescribeTasksResponse {
            tasks,
            failures,
            revision: s.state.revision(),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = super::namespace(&req)?;
        let req = req.into_inner();
        let count = page_size(req.max_results)?;
        let desired_status = match req.desired_status.as_str() {
            "" => None,
            s => Some(DesiredStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "desiredStatus {} must be RUNNING or STOPPED",
                    quote(s)
                ))
            })?),
        };
        if !req.next_token.is_empty() {
            check_task_id("nextToken", &req.next_token)?;
        }
        let opt = |s: String| (!s.is_empty()).then_some(s);
        let filter = TaskFilter {
            family: opt(req.family)
                .map(|f| super::qualify(&ns, "family", &f))
                .transpose()?,
            desired_status,
            started_by: opt(req.started_by),
            agent_id: opt(req.agent_id),
            group: opt(req.group)
                .map(|g| berth_core::namespace::qualify_group(&ns, &g))
                .transpose()
                .map_err(ApiError::from)?,
            namespace: Some(ns),
        };
        self.node.read_barrier(req.stale).await?;
        let s = self.node.state.read();
        let now = crate::node::now_ms();
        let after = opt(req.next_token);
        let listed = page(
            s.state
                .tasks(&filter, after.as_deref())
                .map(|t| task_to_wire(&s.state, t, now)),
            count,
        );
        let next_token = match (listed.more, listed.items.last()) {
            (true, Some(last)) => last.task_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListTasksResponse {
            tasks: listed.items,
            next_token,
            revision: s.state.revision(),
        }))
    }

    type LogsStream = LogsStream;

    async fn logs(
        &self,
        req: Request<TaskLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let ns = super::namespace(&req)?;
        let req = req.into_inner();
        check_task_id("taskId", &req.task_id)?;
        self.node.read_barrier(false).await?;
        let (agent_id, address, down) = {
            let s = self.node.state.read();
            let task = s.state.task(&req.task_id);
            let task = task.filter(|t| berth_core::namespace::of(&t.family) == ns);
            let task = task.ok_or_else(|| {
                ApiError::NotFound(format!("task {} does not exist", quote(&req.task_id)))
            })?;
            let agent = s.state.agent(&task.agent_id).ok_or_else(|| {
                ApiError::NotFound(format!("agent {} is not registered", quote(&task.agent_id)))
            })?;
            (
                agent.id.clone(),
                agent.address.clone(),
                agent.status == berth_core::AgentStatus::Down,
            )
        };
        if down {
            return Err(ApiError::unavailable(format!(
                "agent {agent_id}, which ran the task, is DOWN"
            ))
            .into());
        }
        if address.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "agent {agent_id} registered no address to fetch logs from"
            ))
            .into());
        }
        // The node's shared channels: one connection (and, with TLS, one handshake) per
        // agent, not one per logs request.
        let channel = self.node.channel(&address).map_err(|_| {
            ApiError::FailedPrecondition(format!(
                "agent {agent_id} has an invalid address `{address}`"
            ))
        })?;
        let upstream =
            berth_proto::internal::agent_service_client::AgentServiceClient::new(channel)
                .logs(berth_proto::internal::LogsRequest {
                    task_id: req.task_id,
                    container: req.container,
                    follow: req.follow,
                    tail: req.tail,
                })
                .await
                .map_err(|s| {
                    if s.code() == tonic::Code::Unavailable {
                        Status::unavailable(format!(
                            "agent {agent_id} at {address} cannot be reached: {}",
                            s.message()
                        ))
                    } else {
                        s
                    }
                })?
                .into_inner();
        let stream = tokio_stream::StreamExt::map(upstream, |r| {
            r.map(|c| TaskLogChunk {
                container: c.container,
                stream: c.stream,
                data: c.data,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<WatchTasksRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let ns = super::namespace(&req)?;
        let req = req.into_inner();
        if req.task_ids.len() > MAX_DESCRIBE {
            return Err(ApiError::invalid(format!(
                "taskIds has {} ids; the limit is {MAX_DESCRIBE}",
                req.task_ids.len(),
            ))
            .into());
        }
        for (i, id) in req.task_ids.iter().enumerate() {
            check_task_id(&format!("taskIds[{i}]"), id)?;
        }
        let family = if req.family.is_empty() {
            None
        } else {
            Some(super::qualify(&ns, "family", &req.family)?)
        };
        let filter = WatchFilter {
            namespace: ns,
            family,
            ids: req.task_ids.into_iter().collect(),
        };
        // Subscribe before reading, so nothing applied between the read and the
        // subscription is missed (a change seen twice is harmless: versions tell).
        let events = self.node.state.subscribe();
        self.node.read_barrier(req.stale).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let node = self.node.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = watch_loop(node.clone(), filter, events, tx) => {}
                _ = node.shutdown.wait() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct WatchFilter {
    namespace: String,
    family: Option<String>,
    ids: BTreeSet<String>,
}

impl WatchFilter {
    fn matches(&self, t: &berth_core::Task) -> bool {
        berth_core::namespace::of(&t.family) == self.namespace
            && self.family.as_ref().is_none_or(|f| &t.family == f)
            && (self.ids.is_empty() || self.ids.contains(&t.id))
    }
}

/// Sends the opening picture, then changes; on lag or a snapshot install, the picture
/// again. Ends when the client goes away.
async fn watch_loop(
    node: Arc<Node>,
    filter: WatchFilter,
    mut events: broadcast::Receiver<StateEvent>,
    tx: mpsc::Sender<Result<TaskEvent, Status>>,
) {
    loop {
        let picture: Vec<TaskEvent> = {
            let s = node.state.read();
            let revision = s.state.revision();
            let all = TaskFilter::default();
            s.state
                .tasks(&all, None)
                .filter(|t| filter.matches(t))
                .map(|t| TaskEvent {
                    task: Some(t.into()),
                    revision,
                    initial: true,
                })
                .collect()
        };
        for ev in picture {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        loop {
            match events.recv().await {
                Ok(StateEvent::Applied { revision, changes }) => {
                    for c in changes.iter() {
                        if let Change::Task(t) = c {
                            if filter.matches(t) {
                                let ev = TaskEvent {
                                    task: Some(t.into()),
                                    revision,
                                    initial: false,
                                };
                                if tx.send(Ok(ev)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                Ok(StateEvent::Reset { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
