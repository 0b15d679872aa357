//! Services through the API, for the tests that run them.

use std::time::{Duration, Instant};

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;

use super::Api;

/// A linearizable describe. UNAVAILABLE (a leader that has not heard a majority for a
/// moment, on a loaded machine) is retried for a while, as a client is told to.
pub async fn describe(api: Api, name: &str) -> Service {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ServicesClient::new(api.clone())
            .describe(DescribeServicesRequest {
                services: vec![name.into()],
                stale: false,
            })
            .await;
        match answer {
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            answer => {
                return answer
                    .expect("describe service")
                    .into_inner()
                    .services
                    .pop()
                    .expect("service exists")
            }
        }
    }
}

pub async fn update(api: Api, name: &str, desired: i64) -> Result<Service, tonic::Status> {
    ServicesClient::new(api)
        .update(UpdateServiceRequest {
            service: name.into(),
            desired_count: Some(desired),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().service.expect("service in answer"))
}

/// The service's tasks whose desired status is RUNNING.
pub async fn live(api: Api, name: &str) -> Vec<Task> {
    TasksClient::new(api)
        .list(ListTasksRequest {
            group: format!("service:{name}"),
            desired_status: "RUNNING".into(),
            max_results: 1000,
            ..Default::default()
        })
        .await
        .expect("list tasks")
        .into_inner()
        .tasks
}

/// Waits until the service has `n` tasks, all RUNNING; never more than `ceiling` live at any
/// sample on the way.
pub async fn wait_running(
    api: Api,
    name: &str,
    n: usize,
    ceiling: usize,
    within: Duration,
) -> Vec<Task> {
    wait_running_on(api, name, n, ceiling, None, within).await
}

/// As `wait_running`, with every task on agent `on` when given.
pub async fn wait_running_on(
    api: Api,
    name: &str,
    n: usize,
    ceiling: usize,
    on: Option<&str>,
    within: Duration,
) -> Vec<Task> {
    let deadline = Instant::now() + within;
    loop {
        let tasks = tokio::time::timeout(Duration::from_secs(3), live(api.clone(), name))
            .await
            .unwrap_or_default();
        assert!(
            tasks.len() <= ceiling,
            "service {name} has {} live tasks, more than {ceiling}: {tasks:?}",
            tasks.len()
        );
        let placed = on.is_none_or(|a| tasks.iter().all(|t| t.agent_id == a));
        if tasks.len() == n && placed && tasks.iter().all(|t| t.last_status == "RUNNING") {
            return tasks;
        }
        assert!(
            Instant::now() < deadline,
            "service {name} did not reach {n} RUNNING within {within:?}: {:?}",
            tasks
                .iter()
                .map(|t| (&t.task_id, &t.agent_id, &t.last_status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
