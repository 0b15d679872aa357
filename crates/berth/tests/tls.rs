//! `berth tls`: a cluster CA and certificates made from the CLI, each naming its holder's
//! role and id; nothing overwritten; bad input refused by name with nothing written.

use std::path::Path;
use std::process::{Command, Output};

use berth_tls::{files, inspect_pem, Identity};

const BIN: &str = env!("CARGO_BIN_EXE_berth");

fn berth(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run berth")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn identity(dir: &Path, stem: &str) -> Option<Identity> {
    let pem = files::read(&dir.join(format!("{stem}.pem"))).expect("read cert");
    inspect_pem(&pem).expect("inspect").identity
}

#[test]
fn init_issue_and_show_make_a_cluster_identity_and_never_overwrite_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let d = dir.to_str().expect("utf-8 path");

    let o = berth(&[
        "tls",
        "init",
        "--out",
        d,
        "--agent",
        "agent-a,agent-b",
        "--host",
        "10.1.2.3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for id in 1..=3 {
        assert_eq!(
            identity(&dir, &format!("control-{id}")),
            Some(Identity::control(id))
        );
    }
    assert_eq!(
        identity(&dir, "agent-agent-b"),
        Some(Identity::agent("agent-b").expect("id"))
    );
    let ca = inspect_pem(&files::read(&dir.join("ca.pem")).expect("ca")).expect("ca");
    assert!(ca.is_ca && ca.identity.is_none());
    let node = inspect_pem(&files::read(&dir.join("control-2.pem")).expect("n")).expect("n");
    for h in ["localhost", "127.0.0.1", "::1", "control-2", "10.1.2.3"] {
        assert!(node.hosts.iter().any(|x| x == h), "{h} in {:?}", node.hosts);
    }

    // A second init into the same place writes nothing: one cluster, one CA.
    let before = files::read(&dir.join("ca.pem")).expect("ca");
    let o = berth(&["tls", "init", "--out", d]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("already exists; nothing was written"),
        "{}",
        text(&o)
    );
    assert_eq!(files::read(&dir.join("ca.pem")).expect("ca"), before);

    // More certificates from the same CA.
    let o = berth(&[
        "tls", "issue", "--dir", d, "--agent", "agent-c", "--days", "30",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let c = inspect_pem(&files::read(&dir.join("agent-agent-c.pem")).expect("c")).expect("c");
    assert_eq!(c.identity, Some(Identity::agent("agent-c").expect("id")));
    assert_eq!(c.issuer, ca.subject);
    let o = berth(&[
        "tls",
        "show",
        &format!("{d}/agent-agent-c.pem"),
        &format!("{d}/ca.pem"),
    ]);
    let shown = text(&o);
    assert!(o.status.success(), "{shown}");
    assert!(
        shown.contains("agent agent-c (berth://agent/agent-c), valid"),
        "{shown}"
    );
    assert!(shown.contains("ca.pem: a CA"), "{shown}");

    // Bad input: refused by name, nothing written.
    for (args, says) in [
        (
            vec!["tls", "issue", "--dir", d, "--agent", "has space"],
            "contains ` `",
        ),
        (
            vec!["tls", "issue", "--dir", d, "--control", "0"],
            "start at 1",
        ),
        (
            vec!["tls", "issue", "--dir", d, "--agent", "x", "--days", "0"],
            "--days 0",
        ),
        (
            vec!["tls", "issue", "--dir", d, "--agent", "agent-c"],
            "already exists",
        ),
        (vec!["tls", "issue", "--dir", d], "--control"),
    ] {
        let o = berth(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let missing = tmp.path().join("none");
    let o = berth(&[
        "tls",
        "issue",
        "--dir",
        missing.to_str().expect("path"),
        "--agent",
        "x",
    ]);
    assert!(
        text(&o).contains("none/ca.pem: No such file"),
        "{}",
        text(&o)
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    // The CA, three nodes and three agents: a certificate and a key each.
    assert_eq!(names.len(), 14, "{names:?}");
}
