//! API tokens against a three-node cluster of real processes on TLS: the first admin token
//! (admin.token) works on every node from the start; roles allow what they name and
//! nothing more; a token made through one node works at once through another; a revoked
//! token is refused by every node at once; every bad token is UNAUTHENTICATED or
//! PERMISSION_DENIED with a message for the honest caller, nothing changed, and the attempt
//! logged with the caller's address.

mod common;

use std::process::Output;
use std::time::Duration;

use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::cluster_client::ClusterClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tokens_client::TokensClient;
use berth_proto::v1::*;
use common::*;
use tonic::Code;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `berth token create NAME --role ROLE` as the admin; the token's text.
fn create(c: &Cluster, name: &str, role: &str) -> String {
    let o = c.berth(&["token", "create", name, "--role", role]);
    assert!(o.status.success(), "{}", text(&o));
    let secret = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(secret.starts_with("berth_"), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("shown once"),
        "{}",
        text(&o)
    );
    secret
}

fn accessor(token: &str) -> &str {
    &token["berth_".len().."berth_".len() + 16]
}

async fn families(api: Api) -> Result<Vec<String>, tonic::Status> {
    TaskDefinitionsClient::new(api)
        .list(ListTaskDefinitionsRequest::default())
        .await
        .map(|r| {
            r.into_inner()
                .task_definitions
                .into_iter()
                .map(|d| d.family)
                .collect()
        })
}

fn refused(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, says: &str) {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(e.message().contains(says), "{says:?} in {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_allow_what_their_role_names_and_a_revoked_one_is_refused_on_every_node() {
    let c = Cluster::start(3, &[]);
    c.wait_leader(Duration::from_secs(30)).await;
    // The first admin token works through every node from the start.
    for id in 1..=3 {
        assert!(status(c.api(id)).await.leader_id != 0);
    }

    // No token, not a token, a forged one, another cluster's: UNAUTHENTICATED.
    let status_with = |id, token: Option<&str>| {
        let api = c.api_with(id, token);
        async move {
            ClusterClient::new(api)
                .status(ClusterStatusRequest {})
                .await
                .map(|r| r.into_inner())
        }
    };
    refused(status_with(1, None).await, Code::Unauthenticated, "--token");
    refused(
        status_with(2, Some("hunter2")).await,
        Code::Unauthenticated,
        "not a Berth token",
    );
    let admin = admin_token();
    let forged = format!("{}_{}", &admin[..22], "0".repeat(64));
    refused(
        status_with(3, Some(&forged)).await,
        Code::Unauthenticated,
        "does not match",
    );
    let stranger = format!("berth_{}_{}", "ab".repeat(8), "cd".repeat(32));
    refused(
        status_with(1, Some(&stranger)).await,
        Code::Unauthenticated,
        "not known",
    );

    // Made through node 1, used through nodes 3 and 2 at once.
    let operator = create(&c, "ci", "operator");
    let reader = create(&c, "dashboard", "reader");
    register(c.api_with(3, Some(&operator)), web_spec("by-operator"))
        .await
        .expect("an operator registers");
    assert_eq!(
        families(c.api_with(2, Some(&reader)))
            .await
            .expect("a reader lists"),
        vec!["by-operator".to_string()]
    );

    // Roles: a reader writes nothing, an operator does not administer.
    refused(
        register(c.api_with(2, Some(&reader)), web_spec("by-reader")).await,
        Code::PermissionDenied,
        "is a reader; this needs an operator",
    );
    refused(
        run(c.api_with(1, Some(&reader)), "by-operator", 1, "").await,
        Code::PermissionDenied,
        "reader",
    );
    refused(
        ClusterClient::new(c.api_with(3, Some(&operator)))
            .update_settings(UpdateSettingsRequest {
                free_sizing: Some(true),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "is an operator; this needs an admin",
    );
    refused(
        TokensClient::new(c.api_with(1, Some(&operator)))
            .create(CreateTokenRequest {
                name: "escalate".into(),
                role: "admin".into(),
                namespaces: vec![],
            })
            .await,
        Code::PermissionDenied,
        "needs an admin",
    );
    refused(
        AgentsClient::new(c.api_with(2, Some(&operator)))
            .drain(DrainAgentRequest {
                agent_id: "x".into(),
                drain: true,
            })
            .await,
        Code::PermissionDenied,
        "needs an admin",
    );
    // Nothing refused changed anything.
    assert_eq!(
        families(c.api(1)).await.expect("list"),
        vec!["by-operator".to_string()]
    );
    let o = c.berth(&["-o", "json", "token", "ls"]);
    let listed = text(&o);
    assert!(o.status.success(), "{listed}");
    for name in ["\"admin\"", "\"ci\"", "\"dashboard\""] {
        assert!(listed.contains(name), "{name} in {listed}");
    }
    assert!(!listed.contains("escalate"), "{listed}");
    for secret in [&admin, &operator, &reader] {
        assert!(!listed.contains(&secret[23..]), "a secret listed: {listed}");
    }

    // Revoked through node 1: refused by every node at once, reads and writes alike, and
    // status and membership calls, which are no state writes, too.
    let ops = create(&c, "ops", "admin");
    assert!(status_with(3, Some(&ops)).await.is_ok());
    let o = c.berth(&["token", "revoke", accessor(&operator)]);
    assert!(o.status.success(), "{}", text(&o));
    let o = c.berth(&["token", "revoke", accessor(&ops)]);
    assert!(o.status.success(), "{}", text(&o));
    for id in [3, 2] {
        refused(
            status_with(id, Some(&ops)).await,
            Code::Unauthenticated,
            "was revoked",
        );
        refused(
            ClusterClient::new(c.api_with(id, Some(&ops)))
                .leave(LeaveRequest { id: 1 })
                .await,
            Code::Unauthenticated,
            "was revoked",
        );
    }
    assert_eq!(status(c.api(2)).await.members.len(), 3, "nobody left");
    for id in [2, 3, 1] {
        refused(
            families(c.api_with(id, Some(&operator))).await,
            Code::Unauthenticated,
            "was revoked at revision",
        );
        refused(
            register(c.api_with(id, Some(&operator)), web_spec("after")).await,
            Code::Unauthenticated,
            "was revoked",
        );
    }
    // Revoking again answers it as it is; a token never made is not found; a name that
    // is no accessor is named.
    let o = c.berth(&["token", "revoke", accessor(&operator)]);
    assert!(o.status.success(), "{}", text(&o));
    let o = c.berth(&["token", "revoke", &"0".repeat(16)]);
    assert!(
        !o.status.success() && text(&o).contains("not found: no token has accessor"),
        "{}",
        text(&o)
    );
    let o = c.berth(&["token", "revoke", "ci"]);
    assert!(
        !o.status.success() && text(&o).contains("is not a token's accessor"),
        "{}",
        text(&o)
    );
    refused(
        TokensClient::new(c.api(2))
            .create(CreateTokenRequest {
                name: "x".into(),
                role: "root".into(),
                namespaces: vec![],
            })
            .await,
        Code::InvalidArgument,
        "not one of admin, operator, reader",
    );
    refused(
        TokensClient::new(c.api(3))
            .create(CreateTokenRequest {
                name: String::new(),
                role: "reader".into(),
                namespaces: vec![],
            })
            .await,
        Code::InvalidArgument,
        "token name",
    );
    // The reader still reads; the operator's families are unchanged.
    assert_eq!(
        families(c.api_with(3, Some(&reader))).await.expect("list"),
        vec!["by-operator".to_string()]
    );

    // Every refusal is logged with the caller's address, never with a secret.
    let logs: String = (1..=3).map(|id| c.log(id)).collect();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("API call refused"))
        .collect();
    assert!(refusals.len() >= 8, "{refusals:#?}");
    assert!(
        refusals.iter().all(|l| l.contains("peer=127.0.0.1:")),
        "{refusals:#?}"
    );
    for secret in [&admin, &operator, &reader, &ops, &forged] {
        assert!(!logs.contains(&secret[23..]), "a secret in the logs");
    }
}

/// The CLI says where a token comes from when it has none, and which one a refusal was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_without_a_token_is_told_where_one_comes_from() {
    let c = Cluster::start(1, &[]);
    c.wait_leader(Duration::from_secs(30)).await;
    let o = cli_command(&c.endpoint())
        .env_remove("BERTH_TOKEN_FILE")
        .args(["taskdef", "ls"])
        .output()
        .expect("run berth");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unauthenticated: this call needs a token: give --token"),
        "{}",
        text(&o)
    );
    let reader = create(&c, "ro", "reader");
    let o = cli_command(&c.endpoint())
        .env_remove("BERTH_TOKEN_FILE")
        .env("BERTH_TOKEN", &reader)
        .args(["cluster", "settings", "--free-sizing", "true"])
        .output()
        .expect("run berth");
    assert!(
        !o.status.success() && text(&o).contains("permission denied: token"),
        "{}",
        text(&o)
    );
    let missing = c.dir.path().join("nope.token");
    let o = cli_command(&c.endpoint())
        .env("BERTH_TOKEN_FILE", &missing)
        .args(["taskdef", "ls"])
        .output()
        .expect("run berth");
    assert!(
        !o.status.success() && text(&o).contains("--token-file") && text(&o).contains("nope.token"),
        "{}",
        text(&o)
    );
}
