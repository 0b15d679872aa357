//! Access tokens in the state machine: one bootstrap, writes made with a token apply only
//! while it is live and its role allows them, and a revocation holds from its revision on.

use super::*;
use crate::access::{AccessToken, Role};

pub(super) fn token(n: u8, role: Role) -> AccessToken {
    AccessToken {
        accessor: format!("{n:016x}"),
        name: format!("token {n}"),
        role,
        digest: format!("{n:064x}"),
        created_at: 0,
        created_by: String::new(),
        revoked_at: None,
        namespaces: vec!["default".into()],
    }
}

pub(super) fn as_(accessor: &AccessToken, command: Command) -> Command {
    Command::As {
        accessor: accessor.accessor.clone(),
        command: Box::new(command),
    }
}

fn code(r: &CommandResult) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(Error::Unauthenticated(_)) => "unauthenticated",
        Err(Error::PermissionDenied(_)) => "permission denied",
        Err(Error::InvalidArgument(_)) => "invalid",
        Err(Error::FailedPrecondition(_)) => "precondition",
        Err(Error::AlreadyExists(_)) => "exists",
        Err(Error::NotFound(_)) => "not found",
    }
}

#[test]
fn the_first_token_is_an_admin_made_once() {
    let mut h = Harness::new();
    assert!(!h.state.access_bootstrapped());
    assert_eq!(
        code(&h.one(Command::BootstrapAccessToken(token(1, Role::Operator)))),
        "invalid"
    );
    let admin = token(1, Role::Admin);
    match h.one(Command::BootstrapAccessToken(admin.clone())) {
        Ok(Outcome::AccessToken(t)) => {
            assert_eq!(t.accessor, admin.accessor);
            assert_eq!(t.created_by, "");
        }
        other => panic!("{other:?}"),
    }
    assert!(h.state.access_bootstrapped());
    let again = h.one(Command::BootstrapAccessToken(token(2, Role::Admin)));
    assert_eq!(code(&again), "precondition", "{again:?}");
    assert!(h
        .state
        .access_token(&token(2, Role::Admin).accessor)
        .is_none());
    // A token is made only by an admin's token.
    assert_eq!(
        code(&h.one(Command::CreateAccessToken(token(3, Role::Admin)))),
        "invalid"
    );
}

#[test]
fn roles_decide_at_apply_and_a_revoked_token_writes_nothing_after_its_revision() {
    let mut h = Harness::new();
    let admin = token(1, Role::Admin);
    h.one(Command::BootstrapAccessToken(admin.clone())).unwrap();
    let (op, reader) = (token(2, Role::Operator), token(3, Role::Reader));
    for t in [&op, &reader] {
        match h.one(as_(&admin, Command::CreateAccessToken(t.clone()))) {
            Ok(Outcome::AccessToken(made)) => assert_eq!(made.created_by, admin.accessor),
            other => panic!("{other:?}"),
        }
    }
    let register = || Command::RegisterTaskDefinition { spec: spec("web") };
    assert_eq!(code(&h.one(as_(&op, register()))), "ok");
    let r = h.one(as_(&reader, register()));
    assert_eq!(code(&r), "permission denied");
    assert!(
        format!("{r:?}").contains("is a reader; this needs an operator"),
        "{r:?}"
    );
    // Operators do not administer.
    assert_eq!(
        code(&h.one(as_(&op, Command::CreateAccessToken(token(4, Role::Admin))))),
        "permission denied"
    );
    assert_eq!(
        code(&h.one(as_(&op, Command::UpdateSettings(Settings::default())))),
        "permission denied"
    );
    // No token may speak the agent protocol or the leader's own commands, nor nest.
    assert_eq!(
        code(&h.one(as_(&admin, agent("a1", 1024, 2048)))),
        "invalid"
    );
    assert_eq!(code(&h.one(as_(&admin, Command::Tick))), "invalid");
    assert_eq!(code(&h.one(as_(&admin, as_(&op, register())))), "invalid");
    // Unknown tokens write nothing.
    assert_eq!(
        code(&h.one(as_(&token(9, Role::Admin), register()))),
        "unauthenticated"
    );

    // Revoked in one entry: a write ordered after it in the same batch is refused, one
    // before it applied.
    let before = h.state.task_definition("web", None).map(|d| d.revision);
    let results = h.apply(vec![
        as_(&op, register()),
        as_(
            &admin,
            Command::RevokeAccessToken {
                accessor: op.accessor.clone(),
            },
        ),
        as_(&op, register()),
    ]);
    assert_eq!(code(&results[0]), "ok");
    assert_eq!(code(&results[1]), "ok");
    assert_eq!(code(&results[2]), "unauthenticated", "{:?}", results[2]);
    assert_eq!(
        h.state.task_definition("web", None).map(|d| d.revision),
        before.map(|r| r + 1)
    );
    let revoked = h
        .state
        .access_token(&op.accessor)
        .expect("kept for the record");
    let at = revoked.revoked_at.expect("revoked");
    assert_eq!(at, h.state.revision());
    assert!(format!("{:?}", results[2]).contains(&format!("revoked at revision {at}")));
    // Revoking again answers the same record; reads are refused as writes are.
    match h.one(Command::RevokeAccessToken {
        accessor: op.accessor.clone(),
    }) {
        Ok(Outcome::AccessToken(t)) => assert_eq!(t.revoked_at, Some(at)),
        other => panic!("{other:?}"),
    }
    assert!(h
        .state
        .authorize(&op.accessor, crate::access::Need::Read)
        .is_err());
    assert!(h
        .state
        .authorize(&reader.accessor, crate::access::Need::Read)
        .is_ok());
}

#[test]
fn tokens_survive_a_snapshot() {
    let mut h = Harness::new();
    h.one(Command::BootstrapAccessToken(token(1, Role::Admin)))
        .unwrap();
    let bytes = serde_json::to_vec(&h.state).expect("encode");
    let back: ClusterState = serde_json::from_slice(&bytes).expect("decode");
    assert_eq!(
        back.access_token(&token(1, Role::Admin).accessor)
            .map(|t| t.role),
        Some(Role::Admin)
    );
}

#[test]
fn every_write_made_with_a_token_is_audited_applied_or_refused() {
    let mut h = Harness::new();
    let admin = token(1, Role::Admin);
    h.one(Command::BootstrapAccessToken(admin.clone())).unwrap();
    let reader = token(3, Role::Reader);
    h.one(as_(&admin, Command::CreateAccessToken(reader.clone())))
        .unwrap();
    h.state.take_changes();
    let register = || Command::RegisterTaskDefinition { spec: spec("web") };
    h.one(as_(&admin, register())).unwrap();
    let r = h.one(as_(&reader, register()));
    assert_eq!(code(&r), "permission denied");
    // A write made without a token (the agent protocol, the leader's own) is not audited.
    h.one(agent("a1", 1024, 2048)).unwrap();
    let audits: Vec<_> = h
        .state
        .take_changes()
        .into_iter()
        .filter_map(|c| match c {
            Change::Audit {
                accessor,
                name,
                action,
                refused,
                ..
            } => Some((accessor, name, action, refused.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(
        audits,
        vec![
            (
                admin.accessor.clone(),
                admin.name.clone(),
                "RegisterTaskDefinition web".to_string(),
                false
            ),
            (
                reader.accessor.clone(),
                reader.name.clone(),
                "RegisterTaskDefinition web".to_string(),
                true
            ),
        ]
    );
}
