//! Keys that customers own, at the Vault level: a tenant's own KMS keys wrap its key; when the
//! customer disables or deletes them the tenant becomes unreadable within the cache bound and
//! readable again when they come back, while other tenants are untouched; master-key rotation
//! moves copies without touching contents; shredding destroys the keys first.
//!
//! The KMS here is `MemoryKms`: moto (the real KMS wire protocol, tested in
//! `storage/keys/tests/aws_kms.rs` and the e2e suite) does not model disabled keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use coffer_keys::{KeyMetrics, MemoryKms};
use coffer_storage::{ErrorKind, Password, Permissions, VPath};
use common::{TestKms, bytes, get, put};

const CACHE: Duration = Duration::from_millis(600);

fn kms() -> TestKms {
    let kms = MemoryKms::new(std::sync::Arc::new(KeyMetrics::default()));
    kms.create_key("customer-eu").unwrap();
    kms.create_key("customer-de").unwrap();
    kms.create_key("deployment-next").unwrap();
    TestKms {
        kms,
        key_cache: CACHE,
        primary_master: None,
    }
}

fn own() -> Vec<(String, String)> {
    vec![
        ("primary".into(), "customer-eu".into()),
        ("replica".into(), "customer-de".into()),
    ]
}

async fn user_of(tv: &common::TestVault, tenant: &str, name: &str) -> coffer_storage::Vfs {
    let t = tv.vault.admin().tenant(tenant).await.unwrap();
    tv.vault
        .create_user(
            &t,
            name,
            Some(&Password::new(format!("pw-{name}-secret"))),
            &VPath::parse("/").unwrap(),
            Permissions::ALL,
        )
        .await
        .unwrap();
    tv.vault.operator_session(name).await.unwrap()
}

async fn wait_past_cache() {
    tokio::time::sleep(CACHE + Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_revoked_customer_key_cuts_its_tenant_off_within_the_bound_and_back_on_when_restored() {
    let k = kms();
    let tv = common::vault_with_kms(&k).await;
    let admin = tv.vault.admin();
    admin
        .create_tenant_with_keys("acme", None, &own())
        .await
        .unwrap();
    admin.create_tenant("other", None).await.unwrap();
    let acme = user_of(&tv, "acme", "alice").await;
    let other = user_of(&tv, "other", "bob").await;
    let data = bytes(3 * common::CHUNK as usize + 5, 7);
    put(&acme, "/invoice.pdf", &data).await;
    put(&other, "/x", b"other tenant").await;

    // Its copies are wrapped only under the customer's keys.
    let t = admin.tenant("acme").await.unwrap();
    let ids: Vec<String> = tv
        .meta
        .tenant_keys(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.master_key_id)
        .collect();
    assert_eq!(ids, ["aws-kms:customer-eu", "aws-kms:customer-de"]);

    // The customer disables both keys: within the cache bound the open session fails with
    // "key unavailable" on listing and reading, and so does a new session.
    k.kms.set_enabled("customer-eu", false);
    k.kms.set_enabled("customer-de", false);
    wait_past_cache().await;
    let err = acme.list("/").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert_eq!(
        get(&acme, "/invoice.pdf").await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );
    assert_eq!(
        tv.vault.operator_session("alice").await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );
    // The other tenant is untouched.
    assert_eq!(get(&other, "/x").await.unwrap(), b"other tenant");
    let status = admin.key_status(365).await.unwrap();
    let acme_status = status.tenants.iter().find(|t| t.tenant == "acme").unwrap();
    assert!(
        acme_status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("unavailable")),
        "{acme_status:?}"
    );
    assert!(
        status
            .tenants
            .iter()
            .find(|t| t.tenant == "other")
            .unwrap()
            .error
            .is_none()
    );

    // The key comes back: access comes back without a restart.
    k.kms.set_enabled("customer-eu", true);
    wait_past_cache().await;
    assert_eq!(get(&acme, "/invoice.pdf").await.unwrap(), data);
    assert_eq!(acme.list("/").await.unwrap().len(), 1);

    // Deleted for good: unreadable for good, the other tenant still fine.
    k.kms.delete_key("customer-eu");
    k.kms.delete_key("customer-de");
    wait_past_cache().await;
    assert_eq!(
        get(&acme, "/invoice.pdf").await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );
    assert_eq!(get(&other, "/x").await.unwrap(), b"other tenant");
}

#[tokio::test]
async fn attaching_and_detaching_own_keys_rewraps_the_key_and_keeps_every_file() {
    let k = kms();
    let tv = common::vault_with_kms(&k).await;
    let admin = tv.vault.admin();
    admin.create_tenant("acme", None).await.unwrap();
    let alice = user_of(&tv, "acme", "alice").await;
    put(&alice, "/a", b"before").await;

    admin.set_tenant_master_keys("acme", &own()).await.unwrap();
    let t = admin.tenant("acme").await.unwrap();
    let rows = tv.meta.tenant_keys(t.id).await.unwrap();
    assert!(
        rows.iter()
            .all(|r| r.master_key_id.starts_with("aws-kms:customer-"))
    );
    assert_eq!(get(&alice, "/a").await.unwrap(), b"before");

    // Without the customer's keys the tenant is unreadable: the deployment's keys no longer
    // open its copies.
    k.kms.set_enabled("customer-eu", false);
    k.kms.set_enabled("customer-de", false);
    wait_past_cache().await;
    assert_eq!(
        get(&alice, "/a").await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );
    // A change needs the current keys to open: refused while they are disabled.
    assert!(admin.set_tenant_master_keys("acme", &[]).await.is_err());
    k.kms.set_enabled("customer-eu", true);
    admin.set_tenant_master_keys("acme", &[]).await.unwrap();
    let rows = tv.meta.tenant_keys(t.id).await.unwrap();
    assert!(
        rows.iter().all(|r| r.master_key_id.starts_with("local:")),
        "{rows:?}"
    );
    assert!(tv.meta.tenant_master_keys(t.id).await.unwrap().is_empty());
    // Back on the deployment's keys, the customer's keys no longer matter.
    k.kms.set_enabled("customer-eu", false);
    wait_past_cache().await;
    assert_eq!(get(&alice, "/a").await.unwrap(), b"before");

    // A key the KMS does not have is refused when attached, and nothing changes.
    let err = admin
        .set_tenant_master_keys("acme", &[("primary".into(), "no-such-key".into())])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable);
    assert!(tv.meta.tenant_master_keys(t.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn rotating_the_master_key_moves_every_copy_and_the_old_key_is_then_not_needed() {
    let k = kms();
    let tv = common::vault_with_kms(&k).await;
    let admin = tv.vault.admin();
    admin.create_tenant("a", None).await.unwrap();
    admin
        .create_tenant_with_keys("b", None, &own())
        .await
        .unwrap();
    let alice = user_of(&tv, "a", "alice").await;
    let data = bytes(2 * common::CHUNK as usize, 3);
    put(&alice, "/f", &data).await;

    let report = admin
        .rotate_master_key("primary", Some("deployment-next"))
        .await
        .unwrap();
    assert_eq!(report.target_key_id, "aws-kms:deployment-next");
    assert_eq!(
        (report.rewrapped, report.tenant_owned),
        (1, 1),
        "{report:?}"
    );
    assert!(report.failed.is_empty());
    // Run again (a resumed rotation): nothing left to move.
    let again = admin
        .rotate_master_key("primary", Some("deployment-next"))
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.already), (0, 1));

    // A node whose primary master key is now the KMS key, without the old local key file
    // and without the replica, reads tenant a's files.
    let moved = TestKms {
        primary_master: Some("deployment-next".into()),
        ..k.clone()
    };
    let root = tv.root().to_path_buf();
    std::fs::remove_file(root.join("keys/primary.key")).unwrap();
    std::fs::remove_file(root.join("keys/replica.key")).unwrap();
    let (node2, _, _) = common::open_vault(
        &root,
        "node-2",
        "spool-2",
        coffer_storage::LockoutPolicy::default(),
        Some(&moved),
    )
    .await;
    let alice2 = node2.operator_session("alice").await.unwrap();
    assert_eq!(get(&alice2, "/f").await.unwrap(), data);
    let status = node2.admin().key_status(365).await.unwrap();
    let primary = &status.regions[0];
    assert_eq!(
        (primary.key_id.as_str(), primary.copies_under_older_keys),
        ("aws-kms:deployment-next", 0)
    );
    assert!(status.metrics.kms_calls > 0);
}

#[tokio::test]
async fn shredding_destroys_the_keys_and_leaves_other_tenants_alone() {
    let k = kms();
    let tv = common::vault_with_kms(&k).await;
    let admin = tv.vault.admin();
    admin
        .create_tenant_with_keys("gone", None, &own())
        .await
        .unwrap();
    admin.create_tenant("stays", None).await.unwrap();
    let g = user_of(&tv, "gone", "g").await;
    let s = user_of(&tv, "stays", "s").await;
    put(&g, "/secret", b"shred me").await;
    g.mkdir("/dir").await.unwrap();
    put(&g, "/dir/deeper", b"me too").await;
    put(&s, "/keep", b"kept").await;
    let t = admin.tenant("gone").await.unwrap();

    let queued = admin.shred_tenant("gone").await.unwrap();
    assert_eq!(queued, 2);
    assert!(tv.meta.tenant_keys(t.id).await.unwrap().is_empty());
    assert_eq!(
        admin.tenant("gone").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        tv.vault.operator_session("g").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // An open session of the shredded tenant reads nothing any more.
    assert!(get(&g, "/secret").await.is_err());
    assert_eq!(get(&s, "/keep").await.unwrap(), b"kept");
    // Its objects are garbage, the other tenant's are not.
    let garbage = tv.meta.garbage(1000).await.unwrap();
    assert_eq!(garbage.len(), 2);
    let audit = tv.meta.recent_audit(10).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "tenant_shredded"));
}

#[tokio::test]
async fn uploads_and_downloads_make_no_kms_calls_once_the_tenant_key_is_cached() {
    let k = TestKms {
        key_cache: Duration::from_secs(300),
        ..kms()
    };
    let tv = common::vault_with_kms(&k).await;
    tv.vault
        .admin()
        .create_tenant_with_keys("acme", None, &own())
        .await
        .unwrap();
    let alice = user_of(&tv, "acme", "alice").await;
    put(&alice, "/warm", b"x").await;
    let before = k.kms.metrics().snapshot();
    for i in 0..20 {
        let data = bytes(common::CHUNK as usize * 2 + i, i as u64);
        put(&alice, &format!("/f{i}"), &data).await;
        assert_eq!(get(&alice, &format!("/f{i}")).await.unwrap(), data);
    }
    alice.list("/").await.unwrap();
    let after = k.kms.metrics().snapshot();
    assert_eq!(
        after.kms_calls, before.kms_calls,
        "steady state: 0 KMS calls per transfer"
    );
    assert!(after.cache_hits > before.cache_hits);
}
