//! The key ring the Vault wraps and unwraps every tenant key through: once per region, each
//! region opening its own copy, and the context binding that existing data depends on.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use coffer_keys::{
    KeyError, KeyProvider, KeyRing, KmsConnector, LocalKeyProvider, MemoryKms, PRIMARY_REGION,
    REPLICA_REGION, RegionKeys, TenantKey, TenantMasterKeys, WrapContext, WrappedTenantKey,
    tenant_key_context,
};

fn provider() -> Arc<dyn KeyProvider> {
    Arc::new(LocalKeyProvider::ephemeral().unwrap())
}

#[tokio::test]
async fn tenant_key_is_wrapped_once_per_region_and_each_region_unwraps_its_copy() {
    let (primary, replica) = (provider(), provider());
    let ring = KeyRing::new(primary.clone(), Some(replica.clone()));
    let tenant_key = TenantKey::generate().unwrap();

    let copies = ring
        .wrap_for_each_region(&tenant_key, 3, 1, &TenantMasterKeys::default())
        .await
        .unwrap();

    assert_eq!(copies.len(), 2);
    assert_eq!(
        (copies[0].region.as_str(), copies[0].key_id.clone()),
        (PRIMARY_REGION, primary.key_id())
    );
    assert_eq!(
        (copies[1].region.as_str(), copies[1].key_id.clone()),
        (REPLICA_REGION, replica.key_id())
    );
    let both = ring.unwrap_any(&copies, 3, 1).await.unwrap();
    assert_eq!(both.key.as_bytes(), tenant_key.as_bytes());
    assert_eq!(both.region, PRIMARY_REGION);
    assert!(both.failed.is_empty());
}

#[tokio::test]
async fn the_replica_copy_opens_when_the_primary_copy_does_not() {
    let (primary, replica) = (provider(), provider());
    let ring = KeyRing::new(primary, Some(replica));
    let tenant_key = TenantKey::generate().unwrap();
    let mut copies = ring
        .wrap_for_each_region(&tenant_key, 3, 1, &TenantMasterKeys::default())
        .await
        .unwrap();
    copies[0].blob[20] ^= 1; // the primary copy is damaged
    let got = ring.unwrap_any(&copies, 3, 1).await.unwrap();
    assert_eq!(got.key.as_bytes(), tenant_key.as_bytes());
    assert_eq!(got.region, REPLICA_REGION);
    assert_eq!(got.failed, [(PRIMARY_REGION, KeyError::UnwrapFailed)]);
}

#[tokio::test]
async fn a_ring_without_the_master_key_or_another_tenant_or_version_opens_nothing() {
    let ring = KeyRing::new(provider(), None);
    let copies = ring
        .wrap_for_each_region(
            &TenantKey::generate().unwrap(),
            3,
            1,
            &TenantMasterKeys::default(),
        )
        .await
        .unwrap();
    assert_eq!(copies.len(), 1);

    let stranger = KeyRing::new(provider(), None);
    let result = stranger.unwrap_any(&copies, 3, 1).await;
    assert_eq!(result.err(), Some(KeyError::UnwrapFailed));
    let wrong_tenant = ring.unwrap_any(&copies, 4, 1).await;
    assert_eq!(wrong_tenant.err(), Some(KeyError::UnwrapFailed));
    let wrong_version = ring.unwrap_any(&copies, 3, 2).await;
    assert_eq!(wrong_version.err(), Some(KeyError::UnwrapFailed));
    let no_copy_for_this_region = ring
        .unwrap_any(
            &[WrappedTenantKey {
                region: REPLICA_REGION.into(),
                ..copies[0].clone()
            }],
            3,
            1,
        )
        .await;
    assert_eq!(
        no_copy_for_this_region.err(),
        Some(KeyError::NoMatchingMasterKey)
    );
}

/// A tenant key wrapped by the local master key below, for tenant 7 version 1, as data
/// directories made since the first release hold it. If this test fails, the wrapping or its
/// context changed and existing data would no longer open.
const VECTOR_MASTER_KEY: [u8; 32] = *b"coffer test vector master key 01";
const VECTOR_TENANT_KEY: [u8; 32] = *b"coffer test vector tenant key 01";
const VECTOR_WRAPPED_HEX: &str = include_str!("key_ring_vector.hex");

#[tokio::test]
async fn a_tenant_key_wrapped_by_an_earlier_version_still_opens() {
    assert_eq!(tenant_key_context(7, 1), b"coffer/tenant-key/7/v1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("primary.key");
    std::fs::write(&path, VECTOR_MASTER_KEY).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let master: Arc<dyn KeyProvider> = Arc::new(LocalKeyProvider::load(&path).unwrap());
    let ring = KeyRing::new(master.clone(), None);
    let blob = hex::decode(VECTOR_WRAPPED_HEX.trim()).unwrap();
    let copies = [WrappedTenantKey {
        region: PRIMARY_REGION.into(),
        key_id: master.key_id(),
        blob,
    }];
    let got = ring.unwrap_any(&copies, 7, 1).await.unwrap();
    assert_eq!(got.key.as_bytes(), &VECTOR_TENANT_KEY);
}

/// Prints a fresh vector (run with `--ignored --nocapture` only when the format version is
/// deliberately changed, together with a migration for existing data).
#[tokio::test]
#[ignore = "generates the committed test vector; not a test"]
async fn print_a_test_vector() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("primary.key");
    std::fs::write(&path, VECTOR_MASTER_KEY).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let master = LocalKeyProvider::load(&path).unwrap();
    let blob = master
        .wrap(
            &TenantKey::from_bytes(VECTOR_TENANT_KEY),
            &WrapContext {
                tenant_id: 7,
                version: 1,
                region: PRIMARY_REGION,
            },
        )
        .await
        .unwrap();
    println!("{}", hex::encode(blob));
}

fn kms_ring(kms: &MemoryKms) -> KeyRing {
    let region = |p| RegionKeys {
        current: p,
        previous: Vec::new(),
        kms: Some(Arc::new(kms.clone()) as Arc<dyn KmsConnector>),
    };
    KeyRing::of_regions(region(provider()), Some(region(provider())))
}

#[tokio::test]
async fn a_tenants_own_kms_keys_wrap_its_copies_and_only_they_open_them() {
    let kms = MemoryKms::new(Arc::default());
    kms.create_key("customer-eu").unwrap();
    kms.create_key("customer-de").unwrap();
    let ring = kms_ring(&kms);
    let own = TenantMasterKeys {
        keys: vec![
            ("primary".into(), "customer-eu".into()),
            ("replica".into(), "customer-de".into()),
        ],
    };
    let tenant_key = TenantKey::generate().unwrap();
    let copies = ring
        .wrap_for_each_region(&tenant_key, 9, 1, &own)
        .await
        .unwrap();
    let ids: Vec<&str> = copies.iter().map(|c| c.key_id.as_str()).collect();
    assert_eq!(ids, ["aws-kms:customer-eu", "aws-kms:customer-de"]);

    let got = ring.unwrap_any(&copies, 9, 1).await.unwrap();
    assert_eq!(got.key.as_bytes(), tenant_key.as_bytes());
    // The deployment's own master keys do not open the tenant's copies.
    let deployment_only = KeyRing::new(ring.primary.current.clone(), None);
    assert!(deployment_only.unwrap_any(&copies, 9, 1).await.is_err());

    // The customer disables its primary key: the replica copy still opens; with both
    // disabled nothing does, and the error says the key is unavailable, not damaged.
    kms.set_enabled("customer-eu", false);
    let got = ring.unwrap_any(&copies, 9, 1).await.unwrap();
    assert_eq!(got.region, REPLICA_REGION);
    kms.set_enabled("customer-de", false);
    let err = ring.unwrap_any(&copies, 9, 1).await.unwrap_err();
    assert!(
        matches!(err, KeyError::Unavailable(ref m) if m.contains("Disabled")),
        "{err:?}"
    );
    // Enabled again: readable again.
    kms.set_enabled("customer-eu", true);
    assert!(ring.unwrap_any(&copies, 9, 1).await.is_ok());
    // The same copy replayed for another tenant is refused by the encryption context.
    assert_eq!(
        ring.unwrap_any(&copies[..1], 10, 1).await.err(),
        Some(KeyError::UnwrapFailed)
    );
    // A key that is deleted is gone for good.
    kms.delete_key("customer-eu");
    kms.delete_key("customer-de");
    assert!(matches!(
        ring.unwrap_any(&copies, 9, 1).await.err(),
        Some(KeyError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_rotation_rewraps_under_the_new_key_and_previous_keys_still_open_old_copies() {
    let (old, new) = (provider(), provider());
    let before = KeyRing::new(old.clone(), None);
    let tenant_key = TenantKey::generate().unwrap();
    let copies = before
        .wrap_for_each_region(&tenant_key, 4, 2, &TenantMasterKeys::default())
        .await
        .unwrap();
    // The configuration now names the new key, the old one as previous.
    let during = KeyRing::of_regions(
        RegionKeys {
            current: new.clone(),
            previous: vec![old.clone()],
            kms: None,
        },
        None,
    );
    assert!(
        during.unwrap_any(&copies, 4, 2).await.is_ok(),
        "old copy opens"
    );
    let moved = during.rewrap(&copies[0], 4, 2, &new).await.unwrap();
    assert_eq!(moved.key_id, new.key_id());
    assert_eq!(moved.region, PRIMARY_REGION);
    let after = KeyRing::new(new.clone(), None);
    let got = after.unwrap_any(&[moved], 4, 2).await.unwrap();
    assert_eq!(got.key.as_bytes(), tenant_key.as_bytes());
    // Without the old key the old copy is unreadable.
    assert!(after.unwrap_any(&copies, 4, 2).await.is_err());
}

#[tokio::test]
async fn an_unreachable_kms_is_key_unavailable_and_counted() {
    let metrics = Arc::new(coffer_keys::KeyMetrics::default());
    let kms = MemoryKms::new(metrics.clone());
    kms.create_key("k").unwrap();
    let key = kms.key("k");
    let ctx = WrapContext {
        tenant_id: 1,
        version: 1,
        region: PRIMARY_REGION,
    };
    let blob = key
        .wrap(&TenantKey::generate().unwrap(), &ctx)
        .await
        .unwrap();
    kms.set_reachable(false);
    assert!(matches!(
        key.unwrap(&blob, &ctx).await.err(),
        Some(KeyError::Unavailable(_))
    ));
    let snap = metrics.snapshot();
    assert_eq!((snap.kms_calls, snap.kms_errors), (2, 1));
}
