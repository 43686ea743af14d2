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

/// Files the rotation test uploads in one SFTP session (`COFFER_E2E_ROTATE_FILES` overrides:
/// 10000 is the figure, measured by hand and in docs/PERFORMANCE.md).
fn rotate_files() -> usize {
    std::env::var("COFFER_E2E_ROTATE_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// A curl PUT of `data` to `path` as alice; the HTTP status.
fn curl_put(env: &Env, user: &str, path: &str, local: &std::path::Path) -> u16 {
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(local)
        .arg("-u")
        .arg(format!("{user}:{PW}"))
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/files/{path}",
            env.ports.https
        ))
        .output()
        .expect("curl is required (apt-get install curl)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn rotate_tenant_while_curl_uploads_and_lists_survives_sigkill_and_leaves_no_old_version() {
    let env = Env::new("");
    env.add_user("acme", "alice", PW);
    let server = env.serve();
    let canary = marker();
    let files = rotate_files();

    // Many small files in one SFTP session: the fast honest way to make rows.
    let src = env.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let name = |i: usize| format!("{canary}-{i:05} é.txt");
    let content = |i: usize| bytes(1 + (i * 131) % 3000, i as u64 + 7);
    for i in 0..files {
        std::fs::write(src.join(name(i)), content(i)).unwrap();
    }
    let began = std::time::Instant::now();
    let out = sftp_password_batch(
        env.ports.sftp,
        "alice",
        PW,
        "mkdir box\ncd box\nlcd src\nput *\n",
        env.dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{files} files uploaded over one SFTP session in {:?}",
        began.elapsed()
    );
    let total = sqlite_count(&env, "SELECT COUNT(*) FROM nodes");
    assert!(total >= files as i64 + 2, "{total} rows");

    // A client uploads and lists over HTTPS throughout; every request must succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let https = env.ports.https;
        let dir = env.dir.path().to_owned();
        std::thread::spawn(move || {
            let mut done = Vec::new();
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let local = dir.join(format!("live-{n}.bin"));
                let data = bytes(100 + n * 17 % 5000, 90_000 + n as u64);
                std::fs::write(&local, &data).unwrap();
                let put = Command::new("curl")
                    .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
                    .arg(&local)
                    .arg("-u")
                    .arg(format!("alice:{PW}"))
                    .arg(format!(
                        "https://127.0.0.1:{https}/api/v1/files/live/{n}.bin"
                    ))
                    .output()
                    .unwrap();
                let code = String::from_utf8_lossy(&put.stdout).trim().to_owned();
                if code == "201" || code == "200" || code == "204" {
                    done.push((n, data));
                } else {
                    failures.push(format!("PUT live/{n}.bin: {code}"));
                }
                let list = Command::new("curl")
                    .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-u"])
                    .arg(format!("alice:{PW}"))
                    .arg(format!("https://127.0.0.1:{https}/api/v1/list/box"))
                    .output()
                    .unwrap();
                let code = String::from_utf8_lossy(&list.stdout).trim().to_owned();
                if code != "200" {
                    failures.push(format!("GET list/box: {code}"));
                }
                n += 1;
            }
            (done, failures)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));

    // The rotation, SIGKILLed once it has rewritten some rows but not all.
    // Every path below kills and waits for it; only a failed assertion (which ends the test)
    // leaves it to be reaped with the test binary.
    #[allow(clippy::zombie_processes)]
    let mut rotate = crate::harness::coffer_command()
        .arg("--config")
        .arg(&env.config)
        .args(["keys", "rotate-tenant", "acme", "--batch", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut killed_at = None;
    while std::time::Instant::now() < deadline {
        let done = sqlite_count(
            &env,
            "SELECT COALESCE(MAX(rewritten), -1) FROM key_rotations",
        );
        if done > 0 && done < total - 20 {
            rotate.kill().unwrap();
            rotate.wait().unwrap();
            killed_at = Some(done);
            break;
        }
        if rotate.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if killed_at.is_none() {
        let _ = rotate.kill();
        let _ = rotate.wait();
    }
    let killed_at = killed_at
        .expect("the rotation was SIGKILLed midway (it ended first, or made no progress in 60 s)");
    println!("SIGKILL after {killed_at} of {total} rows");
    let status = env.ok(&["keys", "status"], "");
    assert!(status.contains("ROTATING since"), "{status}");
    assert!(status.contains("acme: key v1 -> v2"), "{status}");

    let began = std::time::Instant::now();
    let resumed = env.ok(&["keys", "rotate-tenant", "acme"], "");
    println!("{resumed}resumed run took {:?}", began.elapsed());
    assert!(resumed.contains("resumed"), "{resumed}");
    assert!(
        resumed.contains("no row is under v1 any more; its 2 wrapped copies are destroyed"),
        "{resumed}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (live, failures) = traffic.join().unwrap();
    assert!(
        failures.is_empty(),
        "requests failed during the rotation: {failures:?}"
    );
    assert!(!live.is_empty());
    println!(
        "{} uploads and listings over HTTPS during the rotation, none failed",
        live.len()
    );

    // Nothing is under version 1; only version 2's copies are left.
    assert_eq!(
        sqlite_count(
            &env,
            "SELECT COUNT(*) FROM nodes WHERE name_key_version <> 2 OR key_version <> 2"
        ),
        0
    );
    assert_eq!(
        sqlite_count(&env, "SELECT COUNT(*) FROM tenant_keys WHERE version <> 2"),
        0
    );
    assert_eq!(
        sqlite_count(&env, "SELECT COUNT(*) FROM tenant_keys WHERE version = 2"),
        2
    );
    assert_eq!(sqlite_count(&env, "SELECT COUNT(*) FROM key_rotations"), 0);
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["keys", "status", "--json"], "")).unwrap();
    assert_eq!(json["tenants"][0]["current_version"], 2);
    assert!(json["tenants"][0]["rotation"].is_null());

    // Every file reads back byte-identical under its name, over SFTP and HTTPS.
    let out_dir = env.dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let got = sftp_password_batch(
        env.ports.sftp,
        "alice",
        PW,
        "lcd out\ncd box\nget *\n",
        env.dir.path(),
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    for i in 0..files {
        assert_eq!(
            std::fs::read(out_dir.join(name(i))).unwrap(),
            content(i),
            "{}",
            name(i)
        );
    }
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), files);
    for (n, data) in live.iter().step_by(7) {
        assert_eq!(
            curl_get(&env, "alice", &format!("live/{n}.bin")),
            (200, data.clone())
        );
    }
    // And writes after the rotation work as before.
    let after = env.dir.path().join("after.bin");
    std::fs::write(&after, b"after").unwrap();
    assert_eq!(curl_put(&env, "alice", "box/after.bin", &after), 201);

    let (_, logs) = server.stop();
    assert_no_canary(
        &env.data_dir(),
        &[
            ("server log", logs.as_bytes()),
            ("rotate output", resumed.as_bytes()),
        ],
        &canary,
    );
}
