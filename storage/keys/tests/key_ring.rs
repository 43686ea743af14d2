//! Wrapping a tenant key once per region and unwrapping it with whichever region's key is at hand.

use std::sync::Arc;

use coffer_keys::{KeyError, KeyProvider, KeyRing, LocalKeyProvider, TenantKey, tenant_context};

fn provider() -> Arc<dyn KeyProvider> {
    Arc::new(LocalKeyProvider::ephemeral().unwrap())
}

#[tokio::test]
async fn tenant_key_is_wrapped_once_per_region_and_each_region_unwraps_its_copy() {
    let (primary, replica) = (provider(), provider());
    let ring = KeyRing::new(primary.clone(), Some(replica.clone()));
    let tenant_key = TenantKey::generate().unwrap();
    let context = tenant_context(3);

    let copies = ring
        .wrap_for_each_region(&tenant_key, &context)
        .await
        .unwrap();

    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].key_id, primary.key_id());
    assert_eq!(copies[1].key_id, replica.key_id());
    let replica_only = KeyRing::new(replica, None);
    let unwrapped = replica_only.unwrap_any(&copies, &context).await.unwrap();
    assert_eq!(unwrapped.as_bytes(), tenant_key.as_bytes());
    let unwrapped = ring.unwrap_any(&copies, &context).await.unwrap();
    assert_eq!(unwrapped.as_bytes(), tenant_key.as_bytes());
}

#[tokio::test]
async fn fail_ring_without_a_matching_master_key() {
    let ring = KeyRing::new(provider(), None);
    let copies = ring
        .wrap_for_each_region(&TenantKey::generate().unwrap(), &tenant_context(3))
        .await
        .unwrap();
    assert_eq!(copies.len(), 1);

    let stranger = KeyRing::new(provider(), Some(provider()));
    let result = stranger.unwrap_any(&copies, &tenant_context(3)).await;
    assert_eq!(result.err(), Some(KeyError::NoMatchingMasterKey));
    let wrong_tenant = ring.unwrap_any(&copies, &tenant_context(4)).await;
    assert_eq!(wrong_tenant.err(), Some(KeyError::UnwrapFailed));
}
