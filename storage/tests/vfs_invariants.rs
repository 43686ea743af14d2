//! DESIGN.md's invariants, each pinned at the Vfs level over real SQLite and local directories:
//! no plaintext at rest, tampering refused, tenants isolated, hostile paths refused, lockout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use coffer_storage::{ErrorKind, LockoutPolicy, Password};
use common::{bytes, get, put, vault, vault_with};

/// The marker and its encodings that must not appear anywhere at rest.
fn canary_forms(marker: &str) -> Vec<Vec<u8>> {
    let utf16le: Vec<u8> = marker.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let utf16be: Vec<u8> = marker.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(marker.as_bytes());
    // base64 of the marker at each of the three alignments inside a longer buffer.
    let mut forms = vec![
        marker.as_bytes().to_vec(),
        utf16le,
        utf16be,
        b64.trim_end_matches('=').as_bytes().to_vec(),
    ];
    for pad in 1..3 {
        let mut v = vec![b'x'; pad];
        v.extend_from_slice(marker.as_bytes());
        let enc = base64::engine::general_purpose::STANDARD.encode(&v);
        // Drop the characters that mix padding bytes with marker bytes.
        forms.push(enc.as_bytes()[4..enc.len() - 4].to_vec());
    }
    forms
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn plaintext_canary_appears_nowhere_under_the_data_directory() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let marker = format!("CANARY{}", hex::encode(bytes(8, 99)));
    let mut content = bytes(30_000, 5);
    for at in [0, 4090, 20_000] {
        content[at..at + marker.len()].copy_from_slice(marker.as_bytes());
    }
    vfs.mkdir(&format!("/dir-{marker}")).await.unwrap();
    put(&vfs, &format!("/dir-{marker}/file-{marker}.txt"), &content).await;
    put(&vfs, &format!("/{marker}"), marker.as_bytes()).await;
    vfs.rename(&format!("/{marker}"), &format!("/renamed-{marker}"), false)
        .await
        .unwrap();
    // An upload left in flight: its spool file must be sealed too. (Small uploads stay in
    // memory until commit; this one is large enough to reach the spool.)
    let mut inflight = vfs
        .create(&format!("/inflight-{marker}"), Default::default())
        .await
        .unwrap();
    let large = content.repeat(80);
    inflight.write_at(0, &large).await.unwrap();
    tv.vault.replicate_once(100).await.unwrap();
    tv.vault.flush_audit().await;

    // The canary check must be able to fail: the marker is in what a user reads back.
    assert!(find(
        &get(&vfs, &format!("/dir-{marker}/file-{marker}.txt"))
            .await
            .unwrap(),
        marker.as_bytes()
    ));
    let files = tv.all_files();
    assert!(
        files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "spool")),
        "an in-flight spool file exists"
    );
    assert!(
        files
            .iter()
            .any(|p| p.to_string_lossy().ends_with("meta.db"))
    );
    for path in files {
        let data = std::fs::read(&path).unwrap();
        for form in canary_forms(&marker) {
            assert!(
                !find(&data, &form),
                "{} holds the canary ({} bytes form)",
                path.display(),
                form.len()
            );
        }
        assert!(
            !path.to_string_lossy().contains(&marker),
            "a path holds the canary"
        );
    }
    inflight.abort().await;
}

async fn two_files(tv: &common::TestVault) -> (coffer_storage::Vfs, Vec<u8>, Vec<u8>) {
    let vfs = tv.user("acme", "alice").await;
    let a = bytes(5 * common::CHUNK as usize + 10, 1);
    let b = bytes(5 * common::CHUNK as usize + 10, 2);
    put(&vfs, "/a", &a).await;
    put(&vfs, "/b", &b).await;
    (vfs, a, b)
}

fn object_of(tv: &common::TestVault, vfs_path_count: usize) -> Vec<std::path::PathBuf> {
    let objs = tv.primary_objects();
    assert_eq!(objs.len(), vfs_path_count);
    objs
}

#[tokio::test]
async fn a_flipped_byte_anywhere_in_an_object_is_an_integrity_error() {
    let tv = vault().await;
    let (vfs, a, _) = two_files(&tv).await;
    let objs = object_of(&tv, 2);
    let len = std::fs::metadata(&objs[0]).unwrap().len() as usize;
    // Header, first nonce, ciphertext, tag, last chunk.
    for at in [3, 20, 70, 80, 5000, 4096 + 64 + 28 - 1, len - 1] {
        let mut data = std::fs::read(&objs[0]).unwrap();
        let orig = data.clone();
        data[at] ^= 0x01;
        std::fs::write(&objs[0], &data).unwrap();
        let errs: Vec<_> = futures_results(&vfs).await;
        assert!(
            errs.iter()
                .any(|e| e.as_ref().err().map(|e| e.kind()) == Some(ErrorKind::Integrity)),
            "flip at {at} not detected"
        );
        std::fs::write(&objs[0], &orig).unwrap();
    }
    // Restored, both read fine again: the check is not just "always fails".
    let back = futures_results(&vfs).await;
    assert!(back.iter().all(Result::is_ok));
    assert!(back.iter().any(|r| r.as_ref().ok() == Some(&a)));
}

async fn futures_results(
    vfs: &coffer_storage::Vfs,
) -> Vec<Result<Vec<u8>, coffer_storage::VfsError>> {
    vec![get(vfs, "/a").await, get(vfs, "/b").await]
}

#[tokio::test]
async fn truncated_objects_are_refused_at_and_between_chunk_boundaries() {
    let tv = vault().await;
    let (vfs, _, _) = two_files(&tv).await;
    let objs = object_of(&tv, 2);
    let orig = std::fs::read(&objs[0]).unwrap();
    let sealed = common::CHUNK as usize + 28;
    for cut in [
        orig.len() - 1,
        64 + 5 * sealed,
        64 + 2 * sealed + 100,
        64,
        10,
        0,
    ] {
        std::fs::write(&objs[0], &orig[..cut]).unwrap();
        let r = futures_results(&vfs).await;
        assert!(
            r.iter()
                .any(|e| e.as_ref().err().map(|e| e.kind()) == Some(ErrorKind::Integrity)),
            "cut at {cut}"
        );
    }
}

/// Files of up to 16 chunks are read whole when opened; larger ones header first, then window
/// by window. Damage past the first window must be caught on that path too.
#[tokio::test]
async fn damage_beyond_the_first_read_window_is_refused() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let content = bytes(40 * common::CHUNK as usize + 123, 3);
    put(&vfs, "/large", &content).await;
    let obj = object_of(&tv, 1).remove(0);
    let orig = std::fs::read(&obj).unwrap();
    let sealed = common::CHUNK as usize + 28;
    let mut flipped = orig.clone();
    flipped[64 + 30 * sealed + 40] ^= 0x80;
    std::fs::write(&obj, &flipped).unwrap();
    assert_eq!(
        get(&vfs, "/large").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    std::fs::write(&obj, &orig[..64 + 20 * sealed]).unwrap();
    assert_eq!(
        get(&vfs, "/large").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    std::fs::write(&obj, &orig).unwrap();
    assert_eq!(get(&vfs, "/large").await.unwrap(), content);
}

#[tokio::test]
async fn swapped_objects_and_reordered_chunks_are_refused() {
    let tv = vault().await;
    let (vfs, _, _) = two_files(&tv).await;
    let objs = object_of(&tv, 2);
    let (x, y) = (
        std::fs::read(&objs[0]).unwrap(),
        std::fs::read(&objs[1]).unwrap(),
    );
    std::fs::write(&objs[0], &y).unwrap();
    std::fs::write(&objs[1], &x).unwrap();
    for r in futures_results(&vfs).await {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Integrity);
    }
    // Reorder chunks 1 and 2 inside one object.
    std::fs::write(&objs[0], &x).unwrap();
    std::fs::write(&objs[1], &y).unwrap();
    let sealed = common::CHUNK as usize + 28;
    let mut z = x.clone();
    let (c1, c2) = (64 + sealed, 64 + 2 * sealed);
    let chunk1 = x[c1..c1 + sealed].to_vec();
    z.copy_within(c2..c2 + sealed, c1);
    z[c2..c2 + sealed].copy_from_slice(&chunk1);
    std::fs::write(&objs[0], &z).unwrap();
    let r = futures_results(&vfs).await;
    assert!(
        r.iter()
            .any(|e| e.as_ref().err().map(|e| e.kind()) == Some(ErrorKind::Integrity))
    );
}

#[tokio::test]
async fn tenants_are_isolated_by_tree_and_by_key() {
    // Objects in the store, so they can be swapped on disk.
    let tv = common::vault_inlining(0).await;
    let alice = tv.user("acme", "alice").await;
    let bob = tv.user("globex", "bob").await;
    put(&alice, "/report.pdf", b"acme secret").await;
    put(&bob, "/report.pdf", b"globex secret").await;
    assert_eq!(get(&alice, "/report.pdf").await.unwrap(), b"acme secret");
    assert_eq!(get(&bob, "/report.pdf").await.unwrap(), b"globex secret");
    assert_eq!(alice.list("/").await.unwrap().len(), 1);
    // Overwriting "the same name" only touches one's own tree.
    put(&bob, "/report.pdf", b"globex v2").await;
    assert_eq!(get(&alice, "/report.pdf").await.unwrap(), b"acme secret");
    // Point bob's row at alice's object: bob's key cannot open it.
    let objs = tv.primary_objects();
    assert_eq!(
        objs.len(),
        3 - 1 + 1,
        "bob's replaced object is garbage, not yet collected"
    );
    tv.vault
        .collect_garbage(10, coffer_storage::GarbageAges::NOW)
        .await
        .unwrap();
    let objs = tv.primary_objects();
    assert_eq!(objs.len(), 2);
    let (o0, o1) = (
        std::fs::read(&objs[0]).unwrap(),
        std::fs::read(&objs[1]).unwrap(),
    );
    std::fs::write(&objs[0], &o1).unwrap();
    std::fs::write(&objs[1], &o0).unwrap();
    assert_eq!(
        get(&alice, "/report.pdf").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    assert_eq!(
        get(&bob, "/report.pdf").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
}

#[tokio::test]
async fn a_user_home_is_their_root_and_dotdot_cannot_leave_it() {
    let tv = vault().await;
    let admin = tv.user("acme", "admin").await;
    admin.mkdir("/private").await.unwrap();
    put(&admin, "/private/secret", b"s").await;
    let jail = tv
        .user_with(
            "acme",
            "jailed",
            coffer_storage::Permissions::ALL,
            "/partners/p1",
        )
        .await;
    put(&jail, "/mine", b"m").await;
    assert_eq!(get(&admin, "/partners/p1/mine").await.unwrap(), b"m");
    for hostile in [
        "../private/secret",
        "/../private/secret",
        "/a/../../private/secret",
        "..",
        "/./../..",
    ] {
        let e = jail.open_read(hostile).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPath, "{hostile}");
        assert!(e.message().contains(".."), "{}", e.message());
    }
    assert_eq!(
        jail.open_read("/private/secret").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let names: Vec<_> = jail
        .list("/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["mine"]);
}

#[tokio::test]
async fn hostile_names_are_refused_and_nothing_is_created() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let long = "x".repeat(256);
    let deep = "/d".repeat(2100);
    for bad in [
        "/a\0b",
        "/tab\there",
        "/nl\nx",
        long.as_str(),
        deep.as_str(),
        "/..",
        "/x/../../y",
    ] {
        let e = vfs
            .create(bad, Default::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidPath,
            "{:?}",
            &bad[..bad.len().min(20)]
        );
        let e = vfs.mkdir(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPath);
    }
    assert!(vfs.list("/").await.unwrap().is_empty());
    assert_eq!(
        tv.meta
            .usage(vfs.principal().user.tenant_id)
            .await
            .unwrap()
            .files,
        0
    );
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_that_address_out_and_the_answer_never_changes() {
    let policy = LockoutPolicy {
        max_failures: 3,
        window_ms: 60_000,
        lock_ms: 60_000,
    };
    let tv = vault_with(policy).await;
    tv.user("acme", "alice").await;
    let right = Password::new("pw-alice-secret".into());
    assert!(
        tv.vault
            .authenticate_password("alice", &right, "sftp", None)
            .await
            .is_ok()
    );
    for _ in 0..3 {
        let e = tv
            .vault
            .authenticate_password("alice", &Password::new("wrong".into()), "sftp", None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuthFailed);
    }
    let e = tv
        .vault
        .authenticate_password("alice", &right, "ftp", None)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::AuthFailed,
        "the same answer as a wrong password"
    );
    assert_eq!(e.to_string(), "authentication failed");
    let e = tv
        .vault
        .authenticate_password("nobody", &right, "https", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed);
    tv.vault.flush_audit().await;
    let audit = tv.meta.recent_audit(50).await.unwrap();
    assert!(audit.iter().filter(|a| a.action == "login_failed").count() >= 5);
    assert!(
        audit.iter().any(|a| a.outcome == "throttled_name_address"),
        "the audit says why"
    );
}

#[tokio::test]
async fn the_database_alone_cannot_open_a_tenant_key() {
    // A dump of the database holds wrapped keys only: without the master key file they do not open.
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/f", b"data").await;
    let other =
        coffer_keys::LocalKeyProvider::load_or_create(&tv.root().join("attacker.key")).unwrap();
    let rows = tv
        .meta
        .tenant_keys(vfs.principal().user.tenant_id)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "one wrapped copy per region");
    for row in rows {
        let ctx = coffer_keys::WrapContext {
            tenant_id: row.tenant_id,
            version: row.version,
            region: if row.region == "primary" {
                "primary"
            } else {
                "replica"
            },
        };
        assert!(
            coffer_keys::KeyProvider::unwrap(&other, &row.wrapped, &ctx)
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn a_damaged_or_missing_primary_object_is_served_from_the_verified_replica_and_fsck_repairs_it()
 {
    let tv = vault().await;
    let (vfs, a, b) = two_files(&tv).await;
    tv.vault.replicate_once(100).await.unwrap();
    let objs = object_of(&tv, 2);
    let before = coffer_storage::repaired_reads();

    // A flipped byte in one primary object: readers get the right bytes from the replica.
    let mut data = std::fs::read(&objs[0]).unwrap();
    data[5000] ^= 0x01;
    std::fs::write(&objs[0], &data).unwrap();
    let got = futures_results(&vfs).await;
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    let got: Vec<Vec<u8>> = got.into_iter().map(Result::unwrap).collect();
    assert!(got.contains(&a) && got.contains(&b));
    assert!(
        coffer_storage::repaired_reads() > before,
        "counted as an integrity event"
    );

    // fsck sees it; with --repair the primary gets the replica's verified copy back.
    let report = tv.vault.fsck(true, false).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(!report.problems[0].repaired);
    assert_eq!(report.problems[0].store, "primary");
    let report = tv.vault.fsck(true, true).await.unwrap();
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].repaired, "{report:?}");
    assert!(
        tv.vault
            .fsck(true, false)
            .await
            .unwrap()
            .problems
            .is_empty()
    );

    // A primary object that is gone entirely: served, then restored.
    std::fs::remove_file(&objs[1]).unwrap();
    let got = futures_results(&vfs).await;
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    let report = tv.vault.fsck(false, true).await.unwrap();
    assert!(report.problems.iter().all(|p| p.repaired), "{report:?}");
    assert!(objs[1].exists(), "the primary object is back");
    assert!(
        tv.vault
            .fsck(true, false)
            .await
            .unwrap()
            .problems
            .is_empty()
    );
}

#[tokio::test]
async fn a_primary_and_replica_both_damaged_stay_an_integrity_error_and_are_not_repaired() {
    let tv = vault().await;
    let (vfs, _, _) = two_files(&tv).await;
    tv.vault.replicate_once(100).await.unwrap();
    let objs = object_of(&tv, 2);
    let name = objs[0].file_name().unwrap().to_owned();
    let replica_obj = tv
        .all_files()
        .into_iter()
        .find(|p| p.starts_with(tv.root().join("store/replica")) && p.file_name() == Some(&name))
        .expect("the replica holds the same object key");
    for path in [&objs[0], &replica_obj] {
        let mut data = std::fs::read(path).unwrap();
        data[5000] ^= 0x01;
        std::fs::write(path, &data).unwrap();
    }
    let got = futures_results(&vfs).await;
    assert!(
        got.iter()
            .any(|r| r.as_ref().err().map(|e| e.kind()) == Some(ErrorKind::Integrity)),
        "no unverified bytes are served"
    );
    let report = tv.vault.fsck(true, true).await.unwrap();
    assert!(report.problems.iter().all(|p| !p.repaired), "{report:?}");
    assert_eq!(report.problems.len(), 2, "both copies reported: {report:?}");
}
