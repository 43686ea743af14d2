//! The vault over MariaDB: nothing readable reaches the database (a full `mariadb-dump` holds
//! no name or content marker), and two nodes on one database share one namespace, one lockout
//! and one quota.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../meta/tests/support/mariadb.rs"]
mod mariadb;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use coffer_keys::{KeyRing, LocalKeyProvider};
use coffer_meta::{MySqlOptions, MySqlStore, MySqlTls};
use coffer_object::LocalDirStore;
use coffer_storage::{
    Backends, ErrorKind, LockoutPolicy, Password, Permissions, VPath, Vault, VaultOptions, Vfs,
    WriteOptions,
};

const CHUNK: u32 = 4096;

/// One Coffer node: its own spool and node name; the buckets, master keys and database are
/// shared with every other node of the cluster (`shared`, `url`).
async fn node(shared: &Path, url: &str, name: &str, lockout: LockoutPolicy) -> Vault {
    let meta = MySqlStore::open(&MySqlOptions {
        tls: MySqlTls::Disable,
        pool_size: 4,
        connect_timeout: std::time::Duration::from_secs(3),
        ..MySqlOptions::new(url)
    })
    .await
    .unwrap();
    meta.migrate().await.unwrap();
    let keys = KeyRing::new(
        Arc::new(LocalKeyProvider::load_or_create(&shared.join("keys/primary.key")).unwrap()),
        Some(Arc::new(
            LocalKeyProvider::load_or_create(&shared.join("keys/replica.key")).unwrap(),
        )),
    );
    let backends = Backends {
        meta: Arc::new(meta),
        primary: Arc::new(LocalDirStore::open(&shared.join("store/primary")).unwrap()),
        replica: Some(Arc::new(
            LocalDirStore::open(&shared.join("store/replica")).unwrap(),
        )),
        keys,
    };
    let options = VaultOptions {
        chunk_size: CHUNK,
        spool_dir: shared.join(format!("spool-{name}")),
        node_name: name.into(),
        max_buffered_write_bytes: 8 * 1024 * 1024,
        lockout,
        partial_uploads: coffer_storage::PartialUploads::KeepNewFiles,
        key_cache: coffer_storage::DEFAULT_KEY_CACHE,
        free_space_floor: coffer_storage::FreeSpaceFloor::NONE,
        local_store_dir: None,
        inline_max_bytes: coffer_storage::DEFAULT_INLINE_MAX_BYTES,
    };
    Vault::open(backends, options).await.unwrap()
}

async fn put(vfs: &Vfs, path: &str, data: &[u8]) -> coffer_storage::VfsResult<()> {
    let options = WriteOptions {
        truncate: true,
        exclusive: false,
    };
    let mut writer = vfs.create(path, options).await?;
    for (i, piece) in data.chunks(3000).enumerate() {
        writer.write_at((i * 3000) as u64, piece).await?;
    }
    writer.commit().await.map(|_| ())
}

async fn get(vfs: &Vfs, path: &str) -> Vec<u8> {
    let reader = vfs.open_read(path).await.unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < reader.size() {
        let piece = reader.read_at(out.len() as u64, 5000).await.unwrap();
        assert!(!piece.is_empty(), "short read");
        out.extend_from_slice(&piece);
    }
    out
}

/// Creates a tenant and a user with every permission; returns the user's password.
async fn user(vault: &Vault, tenant: &str, name: &str, quota: Option<i64>) -> Password {
    let tenant = vault.create_tenant(tenant, quota).await.unwrap();
    let password = Password::new(format!("pw-{name}-secret"));
    vault
        .create_user(
            &tenant,
            name,
            Some(&password),
            &VPath::parse("/").unwrap(),
            Permissions::ALL,
        )
        .await
        .unwrap();
    password
}

/// `(host, port, user, password, database)` of a `mysql://user:password@host:port/db` URL.
fn url_parts(url: &str) -> (String, String, String, String, String) {
    let rest = url.strip_prefix("mysql://").unwrap();
    let (credentials, location) = rest.rsplit_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    let (host_port, database) = location.split_once('/').unwrap();
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "3306"));
    (
        host.into(),
        port.into(),
        user.into(),
        password.into(),
        database.into(),
    )
}

/// A full `mariadb-dump` of the database, as raw bytes.
fn dump(url: &str) -> Vec<u8> {
    let (host, port, user, password, database) = url_parts(url);
    let output = Command::new("mariadb-dump")
        .args(["--no-defaults", "--single-transaction", "--skip-ssl"])
        .args(["-h", &host, "-P", &port, "-u", &user, &database])
        .env("MYSQL_PWD", password)
        .output()
        .expect("mariadb-dump must be installed (apt-get install -y mariadb-client)");
    assert!(
        output.status.success(),
        "mariadb-dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Every way the marker could show up in a dump: UTF-8, UTF-16 (both orders), base64 at each
/// alignment, hex.
fn encodings(marker: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![marker.as_bytes().to_vec()];
    forms.push(marker.encode_utf16().flat_map(u16::to_le_bytes).collect());
    forms.push(marker.encode_utf16().flat_map(u16::to_be_bytes).collect());
    for pad in 0..3 {
        let padded = [vec![b'x'; pad], marker.as_bytes().to_vec()].concat();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&padded);
        // Skip the characters that mix padding bits; keep a long stable middle.
        let stable = &encoded[(pad * 4).div_ceil(3) + 1..encoded.len() - 4];
        forms.push(stable.as_bytes().to_vec());
    }
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    forms.push(hex.clone().into_bytes());
    forms.push(hex.to_uppercase().into_bytes());
    forms
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_dump_holds_no_name_folder_or_content_marker() {
    let Some(server) = mariadb::shared() else {
        return;
    };
    let url = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let vault = node(dir.path(), &url, "canary-node", LockoutPolicy::default()).await;
    user(&vault, "canary-tenant", "canary-user", None).await;
    let vfs = vault.operator_session("canary-user").await.unwrap();

    let marker = "QZXMARKER7731";
    let folder = format!("/{marker}-folder é");
    vfs.mkdir(&folder).await.unwrap();
    let content = format!("{marker} secret content ").repeat(2_000);
    put(
        &vfs,
        &format!("{folder}/{marker}-report &+-é\" .txt"),
        content.as_bytes(),
    )
    .await
    .unwrap();
    put(&vfs, &format!("/{marker}.bin"), marker.as_bytes())
        .await
        .unwrap();
    vfs.rename(
        &format!("/{marker}.bin"),
        &format!("{folder}/{marker}-renamed.bin"),
        false,
    )
    .await
    .unwrap();
    vault.flush_audit().await;

    let dumped = dump(&url);
    assert!(
        contains(&dumped, b"INSERT INTO `nodes`"),
        "the dump holds the namespace"
    );
    assert!(
        contains(&dumped, b"canary-tenant"),
        "the dump holds the rows"
    );
    for form in encodings(marker) {
        assert!(
            !contains(&dumped, &form),
            "the dump contains the marker as {:?}",
            String::from_utf8_lossy(&form)
        );
    }
    assert_eq!(
        get(&vfs, &format!("{folder}/{marker}-renamed.bin")).await,
        marker.as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_through_one_node_is_listed_and_read_through_another() {
    let Some(server) = mariadb::shared() else {
        return;
    };
    let url = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), &url, "node-a", LockoutPolicy::default()).await;
    let b = node(dir.path(), &url, "node-b", LockoutPolicy::default()).await;
    user(&a, "acme", "alice", None).await;
    let on_a = a.operator_session("alice").await.unwrap();
    let on_b = b.operator_session("alice").await.unwrap();

    on_a.mkdir("/reports é").await.unwrap();
    let data: Vec<u8> = (0..20_000_u32).map(|i| (i % 251) as u8).collect();
    put(&on_a, "/reports é/q3 &+-.csv", &data).await.unwrap();

    let listed = on_b.list("/reports é").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["q3 &+-.csv"]);
    assert_eq!(listed[0].size, 20_000);
    assert_eq!(get(&on_b, "/reports é/q3 &+-.csv").await, data);

    // And back: B replaces, A reads the new content.
    put(&on_b, "/reports é/q3 &+-.csv", b"second version")
        .await
        .unwrap();
    assert_eq!(get(&on_a, "/reports é/q3 &+-.csv").await, b"second version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_on_one_node_lock_new_addresses_out_on_another() {
    let Some(server) = mariadb::shared() else {
        return;
    };
    let url = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let lockout = LockoutPolicy {
        max_failures: 3,
        window_ms: 60_000,
        lock_ms: 600_000,
    };
    let a = node(dir.path(), &url, "node-a", lockout).await;
    let b = node(dir.path(), &url, "node-b", lockout).await;
    let password = user(&a, "acme", "bob", None).await;
    let owner = || Some("192.0.2.10:2222".to_owned());
    b.authenticate_password("bob", &password, "sftp", owner())
        .await
        .expect("the right password works on B before the lockout");

    // Guesses from three addresses on A: each address stays under its own limit.
    let wrong = Password::new("not-the-password".into());
    for i in 0..3 {
        let from = Some(format!("198.51.100.{i}:4000"));
        let refused = a.authenticate_password("bob", &wrong, "sftp", from).await;
        assert!(refused.is_err());
    }
    a.flush_audit().await;
    let new_address = b
        .authenticate_password("bob", &password, "sftp", Some("192.0.2.77:1".into()))
        .await;
    assert_eq!(
        new_address.err().map(|e| e.kind()),
        Some(ErrorKind::AuthFailed),
        "three failures counted on A stop password logins to bob from new addresses on B"
    );
    b.authenticate_password("bob", &password, "sftp", owner())
        .await
        .expect("bob's own address on B still logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_holds_across_nodes() {
    let Some(server) = mariadb::shared() else {
        return;
    };
    let url = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), &url, "node-a", LockoutPolicy::default()).await;
    let b = node(dir.path(), &url, "node-b", LockoutPolicy::default()).await;
    user(&a, "small", "carol", Some(10_000)).await;
    let on_a = a.operator_session("carol").await.unwrap();
    let on_b = b.operator_session("carol").await.unwrap();
    put(&on_a, "/one", &[1; 6_000]).await.unwrap();
    let over = put(&on_b, "/two", &[2; 6_000]).await.unwrap_err();
    assert_eq!(over.kind(), ErrorKind::QuotaExceeded);
    let names: Vec<String> = on_a
        .list("/")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["one"]);
}

/// The database stops while an upload is in flight: the commit fails with a temporary error
/// and no file appears; once the database is back the same nodes serve again, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_during_upload_leaves_no_file_and_both_nodes_recover() {
    let Some(server) = mariadb::private() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), &server.url, "node-a", LockoutPolicy::default()).await;
    let b = node(dir.path(), &server.url, "node-b", LockoutPolicy::default()).await;
    user(&a, "acme", "dave", None).await;
    let on_a = a.operator_session("dave").await.unwrap();
    let on_b = b.operator_session("dave").await.unwrap();
    put(&on_a, "/before.txt", b"committed before the outage")
        .await
        .unwrap();

    let options = WriteOptions {
        truncate: true,
        exclusive: false,
    };
    let mut writer = on_a.create("/during.txt", options).await.unwrap();
    writer.write_at(0, &[7; 10_000]).await.unwrap();
    server.stop();
    let failed = writer.commit().await.unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::Unavailable, "{failed}");
    assert_eq!(
        on_b.list("/").await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );

    server.restart();
    for vfs in [&on_a, &on_b] {
        let names: Vec<String> = vfs
            .list("/")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["before.txt"], "no partial file after the outage");
    }
    put(&on_b, "/during.txt", b"again").await.unwrap();
    assert_eq!(get(&on_a, "/during.txt").await, b"again");
    assert_eq!(
        get(&on_b, "/before.txt").await,
        b"committed before the outage"
    );
}

/// Two nodes race, many times: two uploads of one new path, and a rename onto a path an
/// upload is creating. Each round leaves one entry under the name with one whole version,
/// and a loser hears a clear error, never a silent success that did not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_between_nodes_leave_one_consistent_namespace() {
    let Some(server) = mariadb::shared() else {
        return;
    };
    let url = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), &url, "node-a", LockoutPolicy::default()).await;
    let b = node(dir.path(), &url, "node-b", LockoutPolicy::default()).await;
    user(&a, "acme", "erin", None).await;
    let on_a = a.operator_session("erin").await.unwrap();
    let on_b = b.operator_session("erin").await.unwrap();
    let clear_loss =
        |kind: ErrorKind| matches!(kind, ErrorKind::Conflict | ErrorKind::AlreadyExists);

    for round in 0..10 {
        let path = format!("/same-{round}.bin");
        let (from_a, from_b) = tokio::join!(
            put(&on_a, &path, &[b'a'; 9_000]),
            put(&on_b, &path, &[b'b'; 7_000])
        );
        for result in [&from_a, &from_b] {
            if let Err(error) = result {
                assert!(clear_loss(error.kind()), "round {round}: {error}");
            }
        }
        assert!(
            from_a.is_ok() || from_b.is_ok(),
            "round {round}: one upload wins"
        );
        let content = get(&on_a, &path).await;
        assert!(
            content == [b'a'; 9_000] || content == [b'b'; 7_000],
            "round {round}: one whole version"
        );
        assert_eq!(get(&on_b, &path).await, content);

        let target = format!("/target-{round}.txt");
        let source = format!("/source-{round}.txt");
        put(&on_b, &source, b"moved").await.unwrap();
        let (uploaded, renamed) = tokio::join!(
            put(&on_a, &target, b"uploaded"),
            on_b.rename(&source, &target, false)
        );
        if let Err(error) = &uploaded {
            assert!(clear_loss(error.kind()), "round {round}: {error}");
        }
        if let Err(error) = &renamed {
            assert!(clear_loss(error.kind()), "round {round}: {error}");
        }
        let listed: Vec<String> = on_a
            .list("/")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        let at_target = listed.iter().filter(|n| **n == target[1..]).count();
        assert_eq!(at_target, 1, "round {round}: {listed:?}");
        let content = get(&on_b, &target).await;
        match (&uploaded, &renamed) {
            (Ok(()), Err(_)) => assert_eq!(content, b"uploaded"),
            (Err(_), Ok(())) => assert_eq!(content, b"moved"),
            (Ok(()), Ok(())) => assert_eq!(content, b"uploaded", "the rename came first"),
            (Err(_), Err(_)) => panic!("round {round}: both lost"),
        }
        assert_eq!(listed.contains(&source[1..].to_owned()), renamed.is_err());
    }
}
