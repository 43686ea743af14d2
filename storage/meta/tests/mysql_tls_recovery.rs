//! TLS to MariaDB with a test CA, and recovery after the database restarts: each test runs
//! its own private server (it changes the server's users or stops it).

use std::time::{Duration, Instant};

use coffer_meta::{MetaError, MySqlOptions, MySqlStore, MySqlTls, TenantStore};

#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/tenant.rs"]
mod tenant;

use tenant::tenant_spec;

fn options(url: &str, tls: MySqlTls, ca_file: Option<std::path::PathBuf>) -> MySqlOptions {
    MySqlOptions {
        tls,
        ca_file,
        pool_size: 4,
        connect_timeout: Duration::from_secs(3),
        max_retries: 2,
        ..MySqlOptions::new(url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_and_a_wrong_ca_is_refused() {
    let Some(server) = mariadb::private() else {
        return;
    };
    // The server now refuses the coffer user without TLS, so a working store proves TLS.
    server.root_sql("ALTER USER 'coffer'@'127.0.0.1' REQUIRE SSL");
    let plain = MySqlStore::open(&options(&server.url, MySqlTls::Disable, None)).await;
    assert!(
        plain.is_err(),
        "the server must insist on TLS for this test to mean anything"
    );

    let verified = options(&server.url, MySqlTls::VerifyFull, Some(server.ca_file()));
    let store = MySqlStore::open(&verified).await.unwrap();
    store.migrate().await.unwrap();
    let created = store.create_tenant(&tenant_spec(10, "tls")).await.unwrap();
    assert_eq!(store.tenant_by_name("tls").await.unwrap(), created);

    let wrong_ca = options(
        &server.url,
        MySqlTls::VerifyCa,
        Some(server.other_ca_file()),
    );
    match MySqlStore::open(&wrong_ca).await {
        Err(MetaError::Tls(message)) => {
            let full = MetaError::Tls(message).to_string();
            assert!(full.contains("TLS"), "{full}");
            assert!(full.to_lowercase().contains("certificate"), "{full}");
            assert!(full.contains("metadata.ca_file"), "{full}");
            assert!(!full.contains(&server.password()), "{full}");
        }
        other => panic!("a wrong CA must be refused as a TLS error, got {other:?}"),
    }
    // `require` encrypts without checking the certificate.
    let required = options(&server.url, MySqlTls::Require, None);
    MySqlStore::open(&required)
        .await
        .unwrap()
        .tenant(10)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_and_the_same_store_recovers_after_restart() {
    let Some(server) = mariadb::private() else {
        return;
    };
    let store = MySqlStore::open(&options(&server.url, MySqlTls::Disable, None))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let before = store
        .create_tenant(&tenant_spec(20, "before"))
        .await
        .unwrap();

    server.stop();
    let started = Instant::now();
    match store.create_tenant(&tenant_spec(30, "during")).await {
        Err(MetaError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while the database is down, got {other:?}"),
    }
    assert!(matches!(
        store.tenant(20).await,
        Err(MetaError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "an outage must fail fast, took {:?}",
        started.elapsed()
    );

    server.restart();
    // The pool replaces its dead connections by itself: no new store, no restart.
    assert_eq!(store.tenant(20).await.unwrap(), before);
    store
        .create_tenant(&tenant_spec(30, "during"))
        .await
        .unwrap();
    assert_eq!(
        store.list_tenants().await.unwrap().len(),
        2,
        "nothing lost, nothing doubled"
    );
}
