use std::pin::Pin;
use std::sync::Arc;

use berth_core::state::Change;
use berth_proto::v1::events_server::Events;
use berth_proto::v1::*;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::events::Event;
use crate::node::Node;

const STREAM_BUFFER: usize = 256;

pub struct EventsApi {
    pub node: Arc<Node>,
}

fn wire(e: &Event) -> ClusterEvent {
    ClusterEvent {
        revision: e.revision,
        kind: e.kind.to_string(),
        id: e.id.clone(),
        message: e.message.clone(),
        task: match &e.change {
            Some(Change::Task(t)) => Some(t.into()),
            _ => None,
        },
        agent: match &e.change {
            Some(Change::Agent(a)) => Some(a.into()),
            _ => None,
        },
    }
}

#[tonic::async_trait]
impl Events for EventsApi {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<ClusterEvent, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let ns = super::namespace(&req)?;
        let caller = super::caller(&req);
        let since = req.into_inner().since_revision;
        // Caught up with the leader first: a replay from a lagging node would stop short.
        self.node.read_barrier(false).await?;
        // Events of the caller's namespace, and the cluster's own: agents and membership
        // to everyone, an admin's audit trail to admins (and on clusters without tokens).
        let admin = caller.is_none_or(|c| {
            self.node
                .state
                .read()
                .state
                .access_token(&c.accessor)
                .is_some_and(|t| t.role == berth_core::access::Role::Admin)
        });
        let shown = move |e: &Event| match &e.namespace {
            Some(n) => *n == ns,
            None => e.kind != "audit" || admin,
        };
        let current = self.node.state.read().state.revision();
        let (mut live, replay) = self.node.events.follow(since).map_err(|g| {
            Status::failed_precondition(format!(
                "this node keeps events from revision {} on (it started, installed a \
                 snapshot or fell behind then); resume from a later revision, from another \
                 node, or from 0 for new events only",
                g.complete_from
            ))
        })?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut last = since;
            let forward = async {
                for e in replay.iter().filter(|e| shown(e)) {
                    last = last.max(e.revision);
                    if tx.send(Ok(wire(e))).await.is_err() {
                        return;
                    }
                }
                let caught_up = ClusterEvent {
                    revision: current.max(last),
                    kind: "caught-up".into(),
                    ..Default::default()
                };
                if tx.send(Ok(caught_up)).await.is_err() {
                    return;
                }
                loop {
                    match live.recv().await {
                        Ok(batch) => {
                            for e in batch.iter().filter(|e| e.revision > last && shown(e)) {
                                if tx.send(Ok(wire(e))).await.is_err() {
                                    return;
                                }
                            }
                            if let Some(e) = batch.last() {
                                last = last.max(e.revision);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx
                                .send(Err(Status::aborted(format!(
                                    "this stream fell behind; resume from revision {last}"
                                ))))
                                .await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            };
            tokio::select! {
                _ = forward => {}
                _ = node.shutdown.wait() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
