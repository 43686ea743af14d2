//! Tenant keys through the `coffer` binary and real clients: `keys status`, and a tenant
//! crypto-shredded with `tenant delete --shred` while the server runs (OpenSSH sftp uploads,
//! curl downloads), its keys gone from the database and its objects from both stores, another
//! tenant untouched. The KMS-backed cases (a tenant's own keys on moto) are in `kms.rs`.

use std::process::Command;

use crate::harness::{Env, assert_no_canary, bytes, marker, sftp_password_batch};

const PW: &str = "correct horse battery";

fn curl_get(env: &Env, user: &str, path: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-u"])
        .arg(format!("{user}:{PW}"))
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/files/{path}",
            env.ports.https
        ))
        .output()
        .expect("curl is required (apt-get install curl)");
    let mut body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[split + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    (code, body)
}

fn sqlite_count(env: &Env, sql: &str) -> i64 {
    let out = Command::new("sqlite3")
        .arg(env.data_dir().join("meta.db"))
        .arg(sql)
        .output()
        .expect("sqlite3 is required (apt-get install sqlite3)");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_shredded_tenant_is_gone_from_the_database_and_both_stores_and_others_are_untouched() {
    let env = Env::new("");
    env.add_user("acme", "alice", PW);
    env.add_user("other", "bob", PW);
    let server = env.serve();
    let secret_name = marker();
    let content_marker = marker();
    let mut content = bytes(300_000, 9);
    content.extend_from_slice(content_marker.as_bytes());
    let local = env.dir.path().join("upload.bin");
    std::fs::write(&local, &content).unwrap();
    for user in ["alice", "bob"] {
        let out = sftp_password_batch(
            env.ports.sftp,
            user,
            PW,
            &format!("put {} /{secret_name}.pdf\n", local.display()),
            env.dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        curl_get(&env, "alice", &format!("{secret_name}.pdf")),
        (200, content.clone())
    );
    // Let replication copy both files to the replica store.
    let replica = env.data_dir().join("store/replica");
    let objects = |dir: &std::path::Path| {
        crate::harness::walk(dir)
            .into_iter()
            .filter(|p| {
                !p.strip_prefix(dir)
                    .unwrap()
                    .components()
                    .any(|c| c.as_os_str() == ".tmp")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while objects(&replica) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(objects(&replica), 2, "both files replicated");

    let status = env.ok(&["keys", "status"], "");
    assert!(status.contains("acme\tkey v1\tok"), "{status}");
    assert!(status.contains("other\tkey v1\tok"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["keys", "status", "--json"], "")).unwrap();
    assert_eq!(json["regions"][0]["kind"], "local");
    assert_eq!(json["tenants"].as_array().unwrap().len(), 2);

    // Refused without the explicit flags, with a message that says what to type.
    let refused = env.coffer(&["tenant", "delete", "acme"], "");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--shred --confirm acme"));
    let refused = env.coffer(
        &["tenant", "delete", "acme", "--shred", "--confirm", "acm"],
        "",
    );
    assert!(!refused.status.success());

    let acme_id = sqlite_count(&env, "SELECT id FROM tenants WHERE name = 'acme'");
    let out = env.ok(
        &["tenant", "delete", "acme", "--shred", "--confirm", "acme"],
        "",
    );
    assert!(out.contains("1 objects queued"), "{out}");
    assert_eq!(
        sqlite_count(
            &env,
            &format!("SELECT COUNT(*) FROM tenant_keys WHERE tenant_id = {acme_id}")
        ),
        0
    );
    assert_eq!(
        sqlite_count(
            &env,
            &format!("SELECT COUNT(*) FROM nodes WHERE tenant_id = {acme_id}")
        ),
        0
    );

    // The running server refuses acme's user at once, and still serves bob.
    let (code, _) = curl_get(&env, "alice", &format!("{secret_name}.pdf"));
    assert_eq!(code, 401);
    assert_eq!(
        curl_get(&env, "bob", &format!("{secret_name}.pdf")),
        (200, content.clone())
    );

    // Garbage collection deletes acme's object from both stores; bob's stays.
    let gc = env.ok(&["gc", "--min-age-minutes", "0"], "");
    let primary = env.data_dir().join("store/primary");
    assert_eq!(
        objects(&primary),
        1,
        "{gc} garbage rows: {}",
        sqlite_count(&env, "SELECT COUNT(*) FROM garbage")
    );
    // The server's replicator deletes the replica's copy (queued by the shred).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while objects(&replica) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(objects(&replica), 1);
    assert_eq!(
        curl_get(&env, "bob", &format!("{secret_name}.pdf")),
        (200, content)
    );
    let audit = sqlite_count(
        &env,
        "SELECT COUNT(*) FROM audit WHERE action = 'tenant_shredded' AND protocol = 'cli'",
    );
    assert_eq!(audit, 1);
    let (_, logs) = server.stop();
    assert_no_canary(
        &env.data_dir(),
        &[("server log", logs.as_bytes())],
        &secret_name,
    );
    assert_no_canary(&env.data_dir(), &[], &content_marker);
}
