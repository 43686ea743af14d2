//! Runs the metadata conformance suite against MariaDB (a private server, or the one named by
//! `COFFER_TEST_MYSQL_URL`), plus the MySQL-only properties: schema versioning, byte-exact
//! names, no plaintext columns, and the absence of bound values and passwords in errors.

#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/tenant.rs"]
mod tenant;
#[path = "support/usage.rs"]
mod usage;

use coffer_meta::{
    MetaError, MySqlOptions, MySqlStore, MySqlTls, NewTenant, TenantStore, conformance,
};
use sqlx::{Connection, MySqlConnection};

/// Options for a test server on loopback: no TLS (the TLS tests have their own file).
fn options(url: &str) -> MySqlOptions {
    MySqlOptions {
        tls: MySqlTls::Disable,
        pool_size: 8,
        ..MySqlOptions::new(url)
    }
}

/// A migrated store on the shared server's `coffer` database; `None` if MySQL tests are
/// skipped. The conformance checks each make their own tenant, so they share the database.
async fn shared_store() -> Option<MySqlStore> {
    let server = mariadb::shared()?;
    let store = MySqlStore::open(&options(&server.url)).await.unwrap();
    store.migrate().await.unwrap();
    Some(store)
}

/// A store on a fresh, empty database of its own (not migrated), and its URL.
async fn fresh_store() -> Option<(MySqlStore, String)> {
    let server = mariadb::shared()?;
    let url = server.fresh_database().await;
    let store = MySqlStore::open(&options(&url)).await.unwrap();
    Some((store, url))
}

macro_rules! conformance_tests {
    ($($behaviour:ident),* $(,)?) => {
        mod on_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let Some(store) = super::shared_store().await else { return };
                    coffer_meta::conformance::$behaviour(&store).await;
                }
            )*
        }
    };
}

coffer_meta::for_each_check!(conformance_tests);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_runs_twice_on_one_database() {
    let Some(store) = shared_store().await else {
        return;
    };
    conformance::run_all(&store).await;
    conformance::run_all(&store).await;
}

/// Two stores (two nodes' pools) on one database racing each other: the suite's races hold
/// across nodes, not just across one pool's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_hold_across_two_pools() {
    let Some(a) = shared_store().await else {
        return;
    };
    let b = shared_store().await.unwrap();
    for _ in 0..3 {
        tokio::join!(
            conformance::concurrent_commits_same_name(&a),
            conformance::concurrent_rename_same_folder(&b),
            conformance::concurrent_cross_moves_never_make_a_cycle(&a),
            conformance::concurrent_cross_moves_never_make_a_cycle(&b),
        );
    }
}

/// A usage count changed behind the store's back is found by `check_usage` and recounted
/// into MySQL's 16 shards.
#[tokio::test]
async fn a_drifted_usage_count_is_found_and_recounted() {
    let Some((store, url)) = fresh_store().await else {
        return;
    };
    store.migrate().await.unwrap();
    conformance::usage_drift_is_found_and_recounted(&store, |tenant_id| async move {
        let mut raw = MySqlConnection::connect(&url).await.unwrap();
        sqlx::query(usage::DRIFT)
            .bind(tenant_id)
            .bind(conformance::DRIFT_BYTES)
            .execute(&mut raw)
            .await
            .unwrap();
    })
    .await;
}

/// Migration 7 counts the files a database already holds, into 16 shards: each tenant's
/// usage, read from the new count, is what its file rows add up to, and `check_usage` agrees.
#[tokio::test]
async fn migrating_to_the_usage_count_counts_the_files_already_there() {
    let Some((store, url)) = fresh_store().await else {
        return;
    };
    let (before, _keep) = usage::migrations_before_count("mysql");
    let mut raw = MySqlConnection::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&mut raw)
        .await
        .unwrap();
    let (rows, expected) = usage::rows_at_version_6();
    for sql in rows {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut raw)
            .await
            .unwrap();
    }
    assert_eq!(
        store.schema_version().await.unwrap(),
        Some(usage::BEFORE_COUNT)
    );
    store.migrate().await.unwrap();
    usage::assert_counted(&store, expected).await;
    for (tenant, _, _) in expected {
        let shards: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM tenant_usage WHERE tenant_id = ?")
                .bind(tenant)
                .fetch_one(&mut raw)
                .await
                .unwrap();
        assert_eq!(shards, 16, "the files are counted in every shard");
    }
}

/// The tenant most tests create (id 4242).
fn tenant_spec(name: &str) -> NewTenant {
    tenant::tenant_spec(4_242, name)
}

#[tokio::test]
async fn fresh_database_reports_no_schema_until_migrated() {
    let Some((store, _url)) = fresh_store().await else {
        return;
    };
    assert_eq!(store.schema_version().await.unwrap(), None);
    match store.check_schema().await {
        Err(MetaError::SchemaTooOld {
            found: 0,
            supported,
        }) => {
            assert_eq!(supported, MySqlStore::supported_schema_version());
        }
        other => panic!("expected SchemaTooOld, got {other:?}"),
    }
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        Some(MySqlStore::supported_schema_version())
    );
    store.check_schema().await.unwrap();
}

#[tokio::test]
async fn database_from_a_newer_build_is_refused() {
    let Some((store, url)) = fresh_store().await else {
        return;
    };
    store.migrate().await.unwrap();
    let future = MySqlStore::supported_schema_version() + 1;
    let mut raw = MySqlConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (?, 'from the future', TRUE, X'00', 0)",
    )
    .bind(future)
    .execute(&mut raw)
    .await
    .unwrap();

    for result in [store.migrate().await, store.check_schema().await] {
        match result {
            Err(MetaError::SchemaTooNew { found, supported }) => {
                assert_eq!(found, future);
                assert_eq!(supported, MySqlStore::supported_schema_version());
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}

/// Names compare byte for byte, as in SQLite: no case folding, no trailing-space padding.
#[tokio::test]
async fn tenant_names_are_exact_bytes() {
    let Some((store, _url)) = fresh_store().await else {
        return;
    };
    store.migrate().await.unwrap();
    let lower = store.create_tenant(&tenant_spec("acme")).await.unwrap();
    let upper = NewTenant {
        id: 5_001,
        root_node_id: 5_002,
        ..tenant_spec("ACME")
    };
    let padded = NewTenant {
        id: 5_003,
        root_node_id: 5_004,
        ..tenant_spec("acme ")
    };
    store.create_tenant(&upper).await.unwrap();
    store.create_tenant(&padded).await.unwrap();
    assert_eq!(store.tenant_by_name("acme").await.unwrap(), lower);
    assert_eq!(store.tenant_by_name("acme ").await.unwrap().id, 5_003);
    let names: Vec<String> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["ACME", "acme", "acme "]);
}

/// A duplicate-key error from MySQL quotes the duplicate value; the store must not pass the
/// server's message on, and never the URL or password.
#[tokio::test]
async fn errors_carry_no_bound_values_or_password() {
    let Some(server) = mariadb::shared() else {
        return;
    };
    let (store, url) = fresh_store().await.unwrap();
    store.migrate().await.unwrap();
    store
        .create_tenant(&tenant_spec("secret-tenant-marker"))
        .await
        .unwrap();
    let clash = NewTenant {
        id: 9_001,
        root_node_id: 9_002,
        ..tenant_spec("secret-tenant-marker")
    };
    let error = store.create_tenant(&clash).await.unwrap_err();
    assert!(matches!(error, MetaError::AlreadyExists), "{error:?}");
    let too_long = NewTenant {
        id: 9_003,
        root_node_id: 9_004,
        ..tenant_spec(&"secret-tenant-marker".repeat(40))
    };
    let error = store
        .create_tenant(&too_long)
        .await
        .unwrap_err()
        .to_string();
    assert!(!error.contains("secret-tenant-marker"), "{error}");

    let wrong_password = url.replacen("coffer:", "coffer:wrong-", 1);
    let password = url
        .split_once("coffer:")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(p, _)| p.to_owned())
        .unwrap();
    let refused = MySqlStore::open(&options(&wrong_password))
        .await
        .unwrap_err();
    let shown = format!("{refused} {refused:?} {store:?}");
    assert!(!shown.contains(&password), "{shown}");
    assert!(!shown.contains("wrong-"), "{shown}");
    assert!(!server.url.is_empty());
}

#[tokio::test]
async fn unreachable_server_is_unavailable_within_the_timeout() {
    if mariadb::skipped() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let options = MySqlOptions {
        connect_timeout: std::time::Duration::from_secs(2),
        ..options(&format!("mysql://coffer:pw@127.0.0.1:{port}/coffer"))
    };
    let started = std::time::Instant::now();
    match MySqlStore::open(&options).await {
        Err(MetaError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// Names reach the database only as the caller's opaque blobs: `nodes` has no text column
/// that could hold a name or a path, and the blobs are stored as given.
#[tokio::test]
async fn no_plaintext_columns() {
    let Some((store, url)) = fresh_store().await else {
        return;
    };
    store.migrate().await.unwrap();
    let marker = b"PLAINTEXT-MARKER".to_vec();
    let spec = NewTenant {
        root_name_enc: marker.clone(),
        root_name_index: [marker.clone(), vec![0; 16]].concat(),
        ..tenant_spec("marker")
    };
    store.create_tenant(&spec).await.unwrap();

    let mut raw = MySqlConnection::connect(&url).await.unwrap();
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = 'nodes'",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert!(columns.len() >= 10, "nodes columns: {columns:?}");
    for (column, kind) in &columns {
        // `name_key_version` is the number of the key version a name is under, not a name.
        if column.contains("name") && column != "name_key_version" {
            assert!(
                ["blob", "varbinary"].contains(&kind.as_str()),
                "nodes.{column} must be opaque bytes, is {kind}"
            );
        }
        if ["char", "varchar", "text"].contains(&kind.as_str()) {
            assert_eq!(column, "kind", "unexpected text column nodes.{column}");
        }
    }
    let any_path_column: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND LOWER(column_name) LIKE '%path%'",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(any_path_column, 0, "no table stores a path");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT name_enc FROM nodes WHERE id = ?")
        .bind(spec.root_node_id)
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(stored, marker);
}

/// Nodes starting together on an empty database: every one migrates without error, and the
/// schema is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_migrating_together_all_succeed() {
    let Some(server) = mariadb::shared() else {
        return;
    };
    let url = server.fresh_database().await;
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(MySqlStore::open(&options(&url)).await.unwrap());
    }
    let mut handles = Vec::new();
    for store in stores.clone() {
        handles.push(tokio::spawn(async move { store.migrate().await }));
    }
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    for store in &stores {
        store.check_schema().await.unwrap();
    }
    let mut raw = MySqlConnection::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(rows, MySqlStore::supported_schema_version());
}
