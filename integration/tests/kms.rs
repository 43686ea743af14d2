//! `coffer_keys::AwsKms` against the KMS test server (moto, the real KMS wire protocol):
//! wrap/unwrap by key id, ARN and alias; contexts that do not match are refused; unknown,
//! vanished and unreachable keys are `Unavailable`, and a KMS that comes back works again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_integration::kms::{
    self, KMS_ACCESS_KEY, KMS_SECRET_KEY, KmsServer, PRIMARY_KMS_REGION, REPLICA_KMS_REGION,
};
use coffer_keys::{
    AwsKms, AwsKmsSettings, KMS_OPERATION_TIMEOUT, KeyError, KeyMetrics, KeyRing, KmsConnector,
    KmsCredentials, RegionKeys, TenantKey, TenantMasterKeys, WrapContext,
};

fn ctx(tenant_id: i64, version: u32, region: &'static str) -> WrapContext {
    WrapContext {
        tenant_id,
        version,
        region,
    }
}

async fn connect(endpoint: &str, region: &str, metrics: Arc<KeyMetrics>) -> AwsKms {
    AwsKms::connect(
        AwsKmsSettings {
            region: region.to_owned(),
            endpoint: Some(endpoint.to_owned()),
            credentials: KmsCredentials::static_keys(KMS_ACCESS_KEY, KMS_SECRET_KEY),
        },
        metrics,
    )
    .await
}

fn unavailable(result: Result<TenantKey, KeyError>) -> String {
    match result {
        Err(KeyError::Unavailable(message)) => {
            println!("Unavailable: {message}");
            message
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("expected Unavailable, the key unwrapped"),
    }
}

#[tokio::test]
async fn wraps_and_unwraps_by_key_id_arn_and_alias() {
    let Some(endpoint) = kms::kms_endpoint() else {
        return;
    };
    let (key_id, arn) = kms::create_key(&endpoint, PRIMARY_KMS_REGION)
        .await
        .unwrap();
    let alias = format!("alias/coffer-test-{}", &key_id[..8]);
    kms::create_alias(&endpoint, PRIMARY_KMS_REGION, &alias, &key_id)
        .await
        .unwrap();
    let metrics = Arc::new(KeyMetrics::default());
    let kms = connect(&endpoint, PRIMARY_KMS_REGION, metrics.clone()).await;
    let context = ctx(7, 1, "primary");
    for name in [&key_id, &arn, &alias] {
        let provider = kms.key(name);
        assert_eq!(provider.key_id(), format!("aws-kms:{name}"));
        assert_eq!(provider.kind(), "aws-kms");
        let key = TenantKey::generate().unwrap();
        let wrapped = provider.wrap(&key, &context).await.unwrap();
        assert!(
            !wrapped
                .windows(key.as_bytes().len())
                .any(|w| w == key.as_bytes()),
            "the wrapped copy must not hold the tenant key in the clear"
        );
        let back = provider.unwrap(&wrapped, &context).await.unwrap();
        assert_eq!(back.as_bytes(), key.as_bytes(), "round trip by {name}");
    }
    let seen = metrics.snapshot();
    assert_eq!(seen.kms_calls, 6, "one call per wrap and per unwrap");
    assert_eq!(seen.kms_errors, 0);
    assert!(seen.kms_latency_micros > 0);
}

#[tokio::test]
async fn a_copy_replayed_under_another_context_is_refused() {
    let Some(endpoint) = kms::kms_endpoint() else {
        return;
    };
    let (key_id, _) = kms::create_key(&endpoint, PRIMARY_KMS_REGION)
        .await
        .unwrap();
    let kms = connect(&endpoint, PRIMARY_KMS_REGION, Arc::default()).await;
    let provider = kms.key(&key_id);
    let key = TenantKey::generate().unwrap();
    let wrapped = provider.wrap(&key, &ctx(7, 1, "primary")).await.unwrap();
    for (what, other) in [
        ("another tenant", ctx(8, 1, "primary")),
        ("another key version", ctx(7, 2, "primary")),
        ("another region", ctx(7, 1, "replica")),
    ] {
        match provider.unwrap(&wrapped, &other).await {
            Err(KeyError::UnwrapFailed) => {}
            Err(e) => panic!("{what}: expected UnwrapFailed, got {e:?}"),
            Ok(_) => panic!("{what}: a replayed copy unwrapped"),
        }
    }
    let mut tampered = wrapped.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    assert!(
        provider
            .unwrap(&tampered, &ctx(7, 1, "primary"))
            .await
            .is_err(),
        "a tampered copy must not unwrap"
    );
    let back = provider.unwrap(&wrapped, &ctx(7, 1, "primary")).await;
    assert_eq!(back.unwrap().as_bytes(), key.as_bytes());
}

#[tokio::test]
async fn an_unknown_key_is_unavailable_and_named() {
    let Some(endpoint) = kms::kms_endpoint() else {
        return;
    };
    let metrics = Arc::new(KeyMetrics::default());
    let kms = connect(&endpoint, PRIMARY_KMS_REGION, metrics.clone()).await;
    let missing = "0b7c7a52-0000-4000-8000-00000000dead";
    let key = TenantKey::generate().unwrap();
    match kms.key(missing).wrap(&key, &ctx(1, 1, "primary")).await {
        Err(KeyError::Unavailable(message)) => {
            println!("Unavailable: {message}");
            assert!(message.contains(missing), "names the key: {message}");
            assert!(
                message.contains("NotFound"),
                "names the KMS error: {message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let alias = kms.key("alias/coffer-no-such-alias");
    let message = match alias.wrap(&key, &ctx(1, 1, "primary")).await {
        Err(KeyError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    };
    assert!(message.contains("alias/coffer-no-such-alias"), "{message}");
    assert_eq!(metrics.snapshot().kms_errors, 2);
}

#[tokio::test]
async fn two_regions_wrap_under_their_own_keys_and_either_copy_opens() {
    let Some(endpoint) = kms::kms_endpoint() else {
        return;
    };
    let (primary_key, _) = kms::create_key(&endpoint, PRIMARY_KMS_REGION)
        .await
        .unwrap();
    let (replica_key, _) = kms::create_key(&endpoint, REPLICA_KMS_REGION)
        .await
        .unwrap();
    let metrics = Arc::new(KeyMetrics::default());
    let primary_kms = Arc::new(connect(&endpoint, PRIMARY_KMS_REGION, metrics.clone()).await);
    let replica_kms = Arc::new(connect(&endpoint, REPLICA_KMS_REGION, metrics.clone()).await);
    let mut ring = KeyRing::of_regions(
        RegionKeys {
            current: primary_kms.key(&primary_key),
            previous: Vec::new(),
            kms: Some(primary_kms.clone()),
        },
        Some(RegionKeys {
            current: replica_kms.key(&replica_key),
            previous: Vec::new(),
            kms: Some(replica_kms.clone()),
        }),
    );
    ring.metrics = metrics.clone();
    let key = TenantKey::generate().unwrap();
    let copies = ring
        .wrap_for_each_region(&key, 42, 1, &TenantMasterKeys::default())
        .await
        .unwrap();
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].key_id, format!("aws-kms:{primary_key}"));
    assert_eq!(copies[1].key_id, format!("aws-kms:{replica_key}"));
    let opened = ring.unwrap_any(&copies, 42, 1).await.unwrap();
    assert_eq!(opened.region, "primary");
    assert_eq!(opened.key.as_bytes(), key.as_bytes());
    // The replica's copy alone opens too, with the replica region's key.
    let opened = ring.unwrap_any(&copies[1..], 42, 1).await.unwrap();
    assert_eq!(opened.region, "replica");
    assert_eq!(opened.key.as_bytes(), key.as_bytes());
    // A copy filed under the wrong region does not open (its context names the other region).
    let mut swapped = copies[1].clone();
    swapped.region = "primary".to_owned();
    swapped.key_id = copies[0].key_id.clone();
    assert!(ring.unwrap_any(&[swapped], 42, 1).await.is_err());
    assert_eq!(
        ring.metrics.snapshot().kms_calls,
        metrics.snapshot().kms_calls
    );
    assert!(metrics.snapshot().kms_calls >= 5);
}

#[tokio::test]
async fn a_key_lost_with_a_restarted_server_is_unavailable() {
    let Some(mut server) = KmsServer::start() else {
        return;
    };
    let endpoint = server.endpoint();
    let (key_id, _) = kms::create_key(&endpoint, PRIMARY_KMS_REGION)
        .await
        .unwrap();
    let kms = connect(&endpoint, PRIMARY_KMS_REGION, Arc::default()).await;
    let provider = kms.key(&key_id);
    let key = TenantKey::generate().unwrap();
    let context = ctx(3, 1, "primary");
    let wrapped = provider.wrap(&key, &context).await.unwrap();
    server.restart();
    let message = unavailable(provider.unwrap(&wrapped, &context).await);
    assert!(message.contains(&key_id), "names the key: {message}");
    assert!(message.contains("Decrypt"), "names the call: {message}");
}

#[tokio::test]
async fn a_stopped_or_hung_kms_is_unavailable_within_the_timeout_and_recovers() {
    let Some(mut server) = KmsServer::start() else {
        return;
    };
    let endpoint = server.endpoint();
    let (key_id, _) = kms::create_key(&endpoint, PRIMARY_KMS_REGION)
        .await
        .unwrap();
    let metrics = Arc::new(KeyMetrics::default());
    let kms = connect(&endpoint, PRIMARY_KMS_REGION, metrics.clone()).await;
    let provider = kms.key(&key_id);
    let key = TenantKey::generate().unwrap();
    let context = ctx(5, 1, "primary");
    let wrapped = provider.wrap(&key, &context).await.unwrap();

    // Hung: connections are accepted but nothing answers.
    server.freeze(true);
    let started = Instant::now();
    let message = unavailable(provider.unwrap(&wrapped, &context).await);
    let took = started.elapsed();
    server.freeze(false);
    assert!(message.contains(&key_id), "{message}");
    assert!(message.contains("timed out"), "{message}");
    assert!(
        took <= KMS_OPERATION_TIMEOUT + Duration::from_secs(2),
        "a hung KMS must fail within the operation timeout, took {took:?}"
    );
    // Back: the same copy opens again, without a new client.
    let back = provider.unwrap(&wrapped, &context).await.unwrap();
    assert_eq!(back.as_bytes(), key.as_bytes());

    // Stopped: the connection is refused; fails fast, names the key.
    server.stop();
    let started = Instant::now();
    let message = unavailable(provider.unwrap(&wrapped, &context).await);
    assert!(message.contains(&key_id), "{message}");
    assert!(message.contains("cannot reach the KMS"), "{message}");
    assert!(started.elapsed() <= KMS_OPERATION_TIMEOUT + Duration::from_secs(2));

    let seen = metrics.snapshot();
    assert_eq!(
        seen.kms_calls, 4,
        "wrap, hung unwrap, unwrap, refused unwrap"
    );
    assert_eq!(seen.kms_errors, 2);
}
