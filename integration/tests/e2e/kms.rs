//! KMS master keys end to end: `coffer serve` with both regions on `aws-kms` keys held by the
//! KMS test server (moto, the real KMS wire protocol; `integration/start-kms`), driven by the
//! CLI, OpenSSH's sftp and curl.

use std::path::Path;
use std::process::Command;

use coffer_integration::kms::{
    self, KMS_ACCESS_KEY, KMS_SECRET_KEY, PRIMARY_KMS_REGION, REPLICA_KMS_REGION,
};

use crate::harness::{Env, assert_no_canary, bytes, contains, marker, sftp_password_batch, sha256};

const PASSWORD: &str = "correct horse battery";

fn kms_key_toml(region: &str, key_id: &str, kms_region: &str, endpoint: &str) -> String {
    format!(
        "[keys.{region}]\nkind = \"aws-kms\"\nkey_id = \"{key_id}\"\nregion = \"{kms_region}\"\n\
         endpoint = \"{endpoint}\"\naccess_key_id = \"{KMS_ACCESS_KEY}\"\n\
         secret_access_key = \"{KMS_SECRET_KEY}\"\n"
    )
}

/// Downloads `remote` of alice over HTTPS with curl into `out`; the HTTP status.
fn https_get(env: &Env, remote: &str, out: &Path) -> String {
    let result = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "120", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}", "-u", &format!("alice:{PASSWORD}")])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/files/{remote}",
            env.ports.https
        ))
        .output()
        .expect("curl is required for the KMS end-to-end test: apt-get install curl");
    String::from_utf8_lossy(&result.stdout).trim().to_owned()
}

#[test]
fn both_regions_on_kms_keys_sftp_up_https_down_and_no_plaintext_at_rest() {
    let Some(endpoint) = kms::kms_endpoint() else {
        return;
    };
    let (_, primary_arn) = kms::create_key_blocking(&endpoint, PRIMARY_KMS_REGION).unwrap();
    let (replica_key, _) = kms::create_key_blocking(&endpoint, REPLICA_KMS_REGION).unwrap();
    let alias = format!("alias/coffer-e2e-replica-{}", &replica_key[..8]);
    kms::create_alias_blocking(&endpoint, REPLICA_KMS_REGION, &alias, &replica_key).unwrap();
    // The primary by ARN, the replica by alias: both forms a deployment uses.
    let extra = kms_key_toml("primary", &primary_arn, PRIMARY_KMS_REGION, &endpoint)
        + &kms_key_toml("replica", &alias, REPLICA_KMS_REGION, &endpoint);
    let env = Env::new(&extra);
    let m = marker();
    // Tenant names are deployment identifiers, kept in the clear; the canary goes into what
    // the tenant's user stores: a file name and its content.
    env.add_user("acme", "alice", PASSWORD);
    let server = env.serve();

    let mut data = bytes(1024 * 1024 + 77, 11);
    data[5000..5000 + m.len()].copy_from_slice(m.as_bytes());
    let name = format!("report-{m}.bin");
    let local = env.dir.path().join("upload.bin");
    std::fs::write(&local, &data).unwrap();
    let up = sftp_password_batch(
        env.ports.sftp,
        "alice",
        PASSWORD,
        &format!("put upload.bin {name}\n"),
        env.dir.path(),
    );
    assert!(
        up.status.success(),
        "sftp put failed: {}\n{}",
        String::from_utf8_lossy(&up.stderr),
        server.logs()
    );
    let out = env.dir.path().join("download.bin");
    assert_eq!(https_get(&env, &name, &out), "200", "{}", server.logs());
    let got = std::fs::read(&out).unwrap();
    assert_eq!(sha256(&got), sha256(&data), "HTTPS returns the SFTP upload");
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&local).unwrap();

    let (stopped, log) = server.stop();
    assert!(stopped, "{log}");
    // At start the server names each region's provider and key id, and no secret.
    let start_lines: Vec<&str> = log.lines().filter(|l| l.contains("master key")).collect();
    assert!(
        start_lines
            .iter()
            .any(|l| l.contains("aws-kms") && l.contains(&primary_arn)),
        "{start_lines:?}"
    );
    assert!(
        start_lines
            .iter()
            .any(|l| l.contains("aws-kms") && l.contains(&alias)),
        "{start_lines:?}"
    );
    assert!(
        !log.contains(KMS_SECRET_KEY),
        "the KMS secret key is logged"
    );

    // The tenant key's copies are labelled with the KMS keys that wrapped them, and no local
    // master key file was created.
    let files = env.all_files();
    let labelled = |key: &str| {
        let needle = format!("aws-kms:{key}");
        files.iter().any(|f| {
            std::fs::read(f)
                .map(|b| contains(&b, needle.as_bytes()))
                .unwrap_or(false)
        })
    };
    assert!(labelled(&primary_arn), "no copy under the primary KMS key");
    assert!(labelled(&alias), "no copy under the replica KMS key");
    assert!(
        !env.data_dir().join("keys/primary.key").exists()
            && !env.data_dir().join("keys/replica.key").exists(),
        "a KMS deployment must not create local master key files"
    );
    // The SQLite database and both store directories hold no plaintext name or content.
    assert!(
        files.iter().any(|f| f.ends_with("meta.db")),
        "the database file is scanned: {files:?}"
    );
    assert_no_canary(&env.data_dir(), &[("server log", log.as_bytes())], &m);

    // A restart unwraps the tenant key from KMS again and serves the same bytes.
    let server = env.serve();
    assert_eq!(https_get(&env, &name, &out), "200", "{}", server.logs());
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&data));
    drop(server);
}

#[test]
fn an_unknown_kms_key_fails_the_command_naming_the_key() {
    let Some(endpoint) = kms::kms_endpoint() else {
        return;
    };
    let missing = "11111111-2222-4333-8444-555555555555";
    let (replica_key, _) = kms::create_key_blocking(&endpoint, REPLICA_KMS_REGION).unwrap();
    let extra = kms_key_toml("primary", missing, PRIMARY_KMS_REGION, &endpoint)
        + &kms_key_toml("replica", &replica_key, REPLICA_KMS_REGION, &endpoint);
    let env = Env::new(&extra);
    let out = env.coffer(
        &[
            "user",
            "add",
            "alice",
            "--tenant",
            "acme",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the tenant must not be created");
    assert!(stderr.contains(missing), "names the key: {stderr}");
    assert!(stderr.contains("NotFound"), "names the KMS error: {stderr}");
    assert!(!stderr.contains(KMS_SECRET_KEY));
}

#[test]
fn a_local_key_data_dir_in_the_old_config_form_opens_unchanged() {
    // The configuration form from before KMS (`kind` and `path` only), and a data dir whose
    // tenant keys are wrapped by local key files: it opens and reads back after a restart.
    let env = Env::new("");
    let data = env.data_dir();
    let mut toml = std::fs::read_to_string(&env.config).unwrap();
    toml.push_str(&format!(
        "[keys.primary]\nkind = \"local\"\npath = \"{}\"\n[keys.replica]\nkind = \"local\"\npath = \"{}\"\n",
        data.join("keys/primary.key").display(),
        data.join("keys/replica.key").display()
    ));
    std::fs::write(&env.config, toml).unwrap();
    env.add_user("acme", "alice", PASSWORD);
    let payload = bytes(200_000, 12);
    let local = env.dir.path().join("old.bin");
    std::fs::write(&local, &payload).unwrap();
    env.ok(
        &[
            "files",
            "put",
            local.to_str().unwrap(),
            "/old.bin",
            "--user",
            "alice",
        ],
        "",
    );
    let server = env.serve();
    let out = env.dir.path().join("old-back.bin");
    assert_eq!(https_get(&env, "old.bin", &out), "200", "{}", server.logs());
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    let (_, log) = server.stop();
    assert!(
        log.lines()
            .any(|l| l.contains("master key") && l.contains("local:")),
        "the start log names the local key ids: {log}"
    );
}

#[test]
fn a_hung_kms_fails_downloads_cleanly_and_they_work_again_when_it_answers() {
    let Some(kms_server) = kms::KmsServer::start() else {
        return;
    };
    let endpoint = kms_server.endpoint();
    let (primary_key, _) = kms::create_key_blocking(&endpoint, PRIMARY_KMS_REGION).unwrap();
    let (replica_key, _) = kms::create_key_blocking(&endpoint, REPLICA_KMS_REGION).unwrap();
    let extra = kms_key_toml("primary", &primary_key, PRIMARY_KMS_REGION, &endpoint)
        + &kms_key_toml("replica", &replica_key, REPLICA_KMS_REGION, &endpoint);
    let env = Env::new(&extra);
    env.add_user("acme", "alice", PASSWORD);
    let payload = bytes(300_000, 13);
    let local = env.dir.path().join("f.bin");
    std::fs::write(&local, &payload).unwrap();
    env.ok(
        &[
            "files",
            "put",
            local.to_str().unwrap(),
            "/f.bin",
            "--user",
            "alice",
        ],
        "",
    );

    // A fresh server holds no unwrapped tenant key; the KMS hangs.
    kms_server.freeze(true);
    let server = env.serve();
    let out = env.dir.path().join("back.bin");
    let status = https_get(&env, "f.bin", &out);
    println!("HTTPS status while the KMS hangs: {status}");
    assert_ne!(status, "200", "the file cannot be read without its key");
    assert_eq!(
        status, "503",
        "a retryable 'unavailable', not another error"
    );
    assert_eq!(
        crate::harness::http_get(server.admin, "/healthz").map(|(code, _)| code),
        Some(200),
        "the server keeps running"
    );
    assert!(
        server.logs().contains(&primary_key),
        "the log names the KMS key: {}",
        server.logs()
    );

    // The KMS answers again: the same server reads the file, without a restart. For 5 s
    // after a failure the server gives the same answer without asking the KMS again (no
    // stampede), so a client retrying on 503 gets the file within a few seconds.
    kms_server.freeze(false);
    let _ = std::fs::remove_file(&out);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut status = https_get(&env, "f.bin", &out);
    while status == "503" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        status = https_get(&env, "f.bin", &out);
    }
    assert_eq!(status, "200", "{}", server.logs());
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    drop(server);
}

/// A local deployment key with a KMS reached for tenants' own keys.
fn local_with_kms_toml(env_data: &str, region: &str, kms_region: &str, endpoint: &str) -> String {
    format!(
        "[keys.{region}]\nkind = \"local\"\npath = \"{env_data}/keys/{region}.key\"\n\
         kms_region = \"{kms_region}\"\nkms_endpoint = \"{endpoint}\"\n\
         access_key_id = \"{KMS_ACCESS_KEY}\"\nsecret_access_key = \"{KMS_SECRET_KEY}\"\n"
    )
}

fn curl_status(env: &Env, user: &str, remote: &str, out: &Path) -> String {
    let result = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "60", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}", "-u", &format!("{user}:{PASSWORD}")])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/files/{remote}",
            env.ports.https
        ))
        .output()
        .expect("curl is required: apt-get install curl");
    String::from_utf8_lossy(&result.stdout).trim().to_owned()
}

#[test]
fn a_tenant_on_its_own_kms_keys_is_cut_off_when_they_go_and_other_tenants_are_not() {
    let Some(mut kms_server) = kms::KmsServer::start() else {
        return;
    };
    let endpoint = kms_server.endpoint();
    let (_, customer_eu) = kms::create_key_blocking(&endpoint, PRIMARY_KMS_REGION).unwrap();
    let (_, customer_de) = kms::create_key_blocking(&endpoint, REPLICA_KMS_REGION).unwrap();
    // The deployment's own keys stay local files; its regions reach the KMS for the customer's.
    let env = Env::new("");
    let data = env.data_dir().display().to_string();
    let extra = format!(
        "[keys]\ncache_secs = 2\n{}{}",
        local_with_kms_toml(&data, "primary", PRIMARY_KMS_REGION, &endpoint),
        local_with_kms_toml(&data, "replica", REPLICA_KMS_REGION, &endpoint)
    );
    let mut toml = std::fs::read_to_string(&env.config).unwrap();
    toml.push_str(&extra);
    std::fs::write(&env.config, toml).unwrap();

    env.ok(
        &[
            "tenant",
            "add",
            "acme",
            "--kms-key",
            &format!("primary={customer_eu}"),
            "--kms-key",
            &format!("replica={customer_de}"),
        ],
        "",
    );
    env.add_user("acme", "alice", PASSWORD);
    env.add_user("other", "bob", PASSWORD);
    let server = env.serve();
    let m = marker();
    let mut payload = bytes(200_000, 21);
    payload[1000..1000 + m.len()].copy_from_slice(m.as_bytes());
    std::fs::write(env.dir.path().join("up.bin"), &payload).unwrap();
    for user in ["alice", "bob"] {
        let up = sftp_password_batch(
            env.ports.sftp,
            user,
            PASSWORD,
            &format!("put up.bin {m}.bin\n"),
            env.dir.path(),
        );
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
    }
    let out = env.dir.path().join("down.bin");
    assert_eq!(curl_status(&env, "alice", &format!("{m}.bin"), &out), "200");
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    // acme's copies are wrapped under the customer's keys only.
    let copies = Command::new("sqlite3")
        .arg(env.data_dir().join("meta.db"))
        .arg("SELECT master_key_id FROM tenant_keys JOIN tenants ON tenants.id = tenant_id WHERE tenants.name = 'acme' ORDER BY region")
        .output()
        .expect("sqlite3 is required: apt-get install sqlite3");
    assert_eq!(
        String::from_utf8_lossy(&copies.stdout),
        format!("aws-kms:{customer_eu}\naws-kms:{customer_de}\n")
    );
    let status = env.ok(&["keys", "status"], "");
    assert!(status.contains("acme\tkey v1\tok"), "{status}");
    assert!(
        status.contains(&format!("own key primary: {customer_eu}")),
        "{status}"
    );

    // The customer's keys are gone (the KMS test server restarts empty): after the cache bound
    // acme's files are unreadable with a clean 503; bob is unaffected; the log and
    // `keys status` name the tenant.
    kms_server.restart();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(curl_status(&env, "alice", &format!("{m}.bin"), &out), "503");
    assert_eq!(curl_status(&env, "bob", &format!("{m}.bin"), &out), "200");
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    let logs = server.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("tenant key unavailable") && l.contains("acme")),
        "{logs}"
    );
    let status = env.coffer(&["keys", "status"], "");
    assert!(
        !status.status.success(),
        "keys status fails while a tenant key is unavailable"
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("acme\tkey v1\tUNAVAILABLE"), "{text}");
    assert!(text.contains("other\tkey v1\tok"), "{text}");
    let (_, logs) = server.stop();
    assert_no_canary(&env.data_dir(), &[("server log", logs.as_bytes())], &m);
}

#[test]
fn rotating_the_master_keys_while_clients_upload_and_download_fails_no_request() {
    let Some(endpoint) = kms::kms_endpoint() else {
        return;
    };
    let (old_primary, _) = kms::create_key_blocking(&endpoint, PRIMARY_KMS_REGION).unwrap();
    let (old_replica, _) = kms::create_key_blocking(&endpoint, REPLICA_KMS_REGION).unwrap();
    let (new_primary, _) = kms::create_key_blocking(&endpoint, PRIMARY_KMS_REGION).unwrap();
    let (new_replica, _) = kms::create_key_blocking(&endpoint, REPLICA_KMS_REGION).unwrap();
    let toml = |p: &str, r: &str| {
        kms_key_toml("primary", p, PRIMARY_KMS_REGION, &endpoint)
            + &kms_key_toml("replica", r, REPLICA_KMS_REGION, &endpoint)
    };
    let env = Env::new(&format!(
        "[keys]\ncache_secs = 1\n{}",
        toml(&old_primary, &old_replica)
    ));
    for t in ["t1", "t2", "t3"] {
        env.add_user(t, &format!("{t}-user"), PASSWORD);
    }
    env.add_user("acme", "alice", PASSWORD);
    let server = env.serve();
    let payload = bytes(150_000, 5);
    let local = env.dir.path().join("p.bin");
    std::fs::write(&local, &payload).unwrap();

    // A client uploads and downloads without pause while both regions rotate. The 1 s cache
    // bound makes the server unwrap the tenant key again (from rewrapped copies) meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        let port = env.ports.https;
        let local = local.clone();
        let dir = env.dir.path().to_path_buf();
        let payload = payload.clone();
        std::thread::spawn(move || {
            let mut results = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 4 {
                let url = format!("https://127.0.0.1:{port}/api/v1/files/f{i}.bin");
                let put = Command::new("curl")
                    .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
                    .arg(&local)
                    .args(["-u", &format!("alice:{PASSWORD}"), &url])
                    .output()
                    .unwrap();
                let out = dir.join(format!("back{i}.bin"));
                let get = Command::new("curl")
                    .args(["-sk", "-w", "%{http_code}", "-o"])
                    .arg(&out)
                    .args(["-u", &format!("alice:{PASSWORD}"), &url])
                    .output()
                    .unwrap();
                let same = std::fs::read(&out).ok().as_deref() == Some(&payload[..]);
                results.push((
                    String::from_utf8_lossy(&put.stdout).into_owned(),
                    String::from_utf8_lossy(&get.stdout).into_owned(),
                    same,
                ));
                i += 1;
            }
            results
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let primary = env.ok(
        &["keys", "rotate-master", "primary", "--to", &new_primary],
        "",
    );
    assert!(primary.contains("4 copies rewrapped"), "{primary}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let replica = env.ok(
        &["keys", "rotate-master", "replica", "--to", &new_replica],
        "",
    );
    assert!(replica.contains("4 copies rewrapped"), "{replica}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = client.join().unwrap();
    assert!(results.len() >= 4, "{results:?}");
    for (put, get, same) in &results {
        assert!(
            put == "201" || put == "204",
            "upload during rotation: {results:?}"
        );
        assert!(
            get == "200" && *same,
            "download during rotation: {results:?}"
        );
    }
    // Run again (a resumed rotation): nothing left to move.
    let again = env.ok(
        &["keys", "rotate-master", "primary", "--to", &new_primary],
        "",
    );
    assert!(
        again.contains("0 copies rewrapped") && again.contains("4 already"),
        "{again}"
    );
    drop(server);

    // The configuration now names the new keys; the old ones are no longer used: a
    // restarted server reads every file, and no copy is left under an older key.
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg = cfg
        .replace(&old_primary, &new_primary)
        .replace(&old_replica, &new_replica);
    std::fs::write(&env.config, cfg).unwrap();
    let server = env.serve();
    let out = env.dir.path().join("after.bin");
    assert_eq!(https_get(&env, "f0.bin", &out), "200", "{}", server.logs());
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["keys", "status", "--json"], "")).unwrap();
    for region in status["regions"].as_array().unwrap() {
        assert_eq!(region["copies_under_older_keys"], 0, "{status}");
    }
}

#[test]
fn older_local_key_files_in_previous_paths_still_open_existing_copies() {
    let env = Env::new("");
    env.add_user("acme", "alice", PASSWORD);
    let payload = bytes(70_000, 14);
    let local = env.dir.path().join("kept.bin");
    std::fs::write(&local, &payload).unwrap();
    env.ok(
        &[
            "files",
            "put",
            local.to_str().unwrap(),
            "/kept.bin",
            "--user",
            "alice",
        ],
        "",
    );
    let base = std::fs::read_to_string(&env.config).unwrap();
    let keys = env.data_dir().join("keys");
    let moved = |previous: bool| {
        let mut toml = base.clone();
        for region in ["primary", "replica"] {
            toml.push_str(&format!(
                "[keys.{region}]\nkind = \"local\"\npath = \"{}\"\n",
                keys.join(format!("{region}-2.key")).display()
            ));
            if previous {
                toml.push_str(&format!(
                    "previous_paths = [\"{}\"]\n",
                    keys.join(format!("{region}.key")).display()
                ));
            }
        }
        std::fs::write(&env.config, toml).unwrap();
    };
    let out = env.dir.path().join("kept-back.bin");
    let get = || {
        let _ = std::fs::remove_file(&out);
        env.coffer(
            &[
                "files",
                "get",
                "/kept.bin",
                out.to_str().unwrap(),
                "--user",
                "alice",
            ],
            "",
        )
    };

    // New key files in both regions and the old ones forgotten: the tenant key does not open.
    moved(false);
    let refused = get();
    assert!(
        !refused.status.success(),
        "a tenant key wrapped by forgotten master keys must not open"
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("could not be unwrapped"), "{why}");
    // The old files listed as previous keys: the copies open again; new keys wrap new tenants.
    moved(true);
    let opened = get();
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    env.add_user("globex", "bob", PASSWORD);
    assert!(keys.join("primary-2.key").exists() && keys.join("replica-2.key").exists());
}
