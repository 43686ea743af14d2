//! The key ring the Vault wraps and unwraps every tenant key through: once per region, each
//! region opening its own copy, and the context binding that existing data depends on.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use coffer_keys::{
    KeyError, KeyProvider, KeyRing, LocalKeyProvider, PRIMARY_REGION, REPLICA_REGION, TenantKey,
    WrappedTenantKey, tenant_key_context,
};

fn provider() -> Arc<dyn KeyProvider> {
    Arc::new(LocalKeyProvider::ephemeral().unwrap())
}

#[tokio::test]
async fn tenant_key_is_wrapped_once_per_region_and_each_region_unwraps_its_copy() {
    let (primary, replica) = (provider(), provider());
    let ring = KeyRing::new(primary.clone(), Some(replica.clone()));
    let tenant_key = TenantKey::generate().unwrap();

    let copies = ring.wrap_for_each_region(&tenant_key, 3, 1).await.unwrap();

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
    let mut copies = ring.wrap_for_each_region(&tenant_key, 3, 1).await.unwrap();
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
        .wrap_for_each_region(&TenantKey::generate().unwrap(), 3, 1)
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
            &tenant_key_context(7, 1),
        )
        .await
        .unwrap();
    println!("{}", hex::encode(blob));
}
