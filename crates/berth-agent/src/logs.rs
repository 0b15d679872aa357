//! `AgentService.Logs`, served by the agent on its own address: a task container's output,
//! for the control plane to proxy to `berth task logs`.

use berth_proto::internal::agent_service_server::AgentService;
use berth_proto::internal::{LogChunk, LogsRequest};
use bollard::container::LogOutput;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;

/// Chunks buffered per stream: a slow reader slows the engine read, nothing piles up.
const BUFFER: usize = 32;

pub struct LogsService {
    pub runtime: Runtime,
}

#[tonic::async_trait]
impl AgentService for LogsService {
    type LogsStream = ReceiverStream<Result<LogChunk, Status>>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        if req.task_id.is_empty() {
            return Err(Status::invalid_argument("task_id is required"));
        }
        let agent = self.runtime.agent_id().to_string();
        let mut found = self
            .runtime
            .list_task(&req.task_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if found.is_empty() {
            return Err(Status::not_found(format!(
                "task {} has no containers on agent {agent} (a task's containers are removed when it stops)",
                req.task_id
            )));
        }
        found.sort_by_key(|o| o.index);
        let chosen = if req.container.is_empty() {
            found.first()
        } else {
            found.iter().find(|o| o.container == req.container)
        };
        let Some(c) = chosen.cloned() else {
            let names: Vec<&str> = found.iter().map(|o| o.container.as_str()).collect();
            return Err(Status::not_found(format!(
                "task {} has no container `{}` (it has: {})",
                req.task_id,
                req.container,
                names.join(", ")
            )));
        };
        let (tx, rx) = mpsc::channel(BUFFER);
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let mut logs = Box::pin(runtime.logs(&c.id, req.follow, req.tail));
            while let Some(item) = logs.next().await {
                let chunk = match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        LogChunk {
                            container: c.container.clone(),
                            stream: "stdout".into(),
                            data: message.to_vec(),
                        }
                    }
                    Ok(LogOutput::StdErr { message }) => LogChunk {
                        container: c.container.clone(),
                        stream: "stderr".into(),
                        data: message.to_vec(),
                    },
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "reading logs of {}: {}",
                                c.container,
                                crate::runtime::message(&e)
                            ))))
                            .await;
                        return;
                    }
                };
                // The reader went away: stop reading the engine.
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
