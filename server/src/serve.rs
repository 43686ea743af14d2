//! `coffer serve`: the admin listener, the front ends and the background workers, under one
//! shutdown token.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use coffer_config::Config;
use coffer_storage::{GarbageAges, READER_PUBLISH_AFTER, Vault};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::wiring::{Role, open_vault};

/// Raises the soft open-file limit to the hard limit: every connection, spool file and database
/// connection is a descriptor, and the distribution default (often 1024) runs out long before
/// the connection limits do.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(open_files = limit, "open-file limit"),
        Err(e) => warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Runs until SIGINT or SIGTERM, then stops every task and returns.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives while starting must still stop cleanly.
    let stop_signal = on_stop_signal();
    let vault = open_vault(&cfg, Role::Server).await?;
    raise_open_file_limit();
    vault
        .recover_uploads()
        .await
        .context("recovering the spool")?;
    let leftovers = crate::wiring::clean_local_store_temp(&cfg)?;
    if leftovers > 0 {
        info!(
            files = leftovers,
            "removed unfinished object writes left by a crash"
        );
    }
    let shutdown = CancellationToken::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

    let admin = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot bind {}", cfg.admin.listen))?;
    spawn_front_ends(&cfg, &vault, &shutdown, &mut tasks).await?;
    // /healthz answers only once every front end listens, so "healthy" means "usable".
    tasks.spawn(serve_admin(admin, vault.clone(), shutdown.clone()));
    info!(addr = %cfg.admin.listen, "admin listener ready (/healthz, /readyz)");
    tasks.spawn(background(
        vault.clone(),
        cfg.storage.gc_in_serve,
        shutdown.clone(),
    ));
    tasks.spawn(watch_keys(
        vault.clone(),
        crate::commands::rotation_max_age_days(&cfg),
        shutdown.clone(),
    ));
    tasks.spawn(rotate_keys(
        vault.clone(),
        cfg.keys.rotation,
        shutdown.clone(),
    ));
    info!(data_dir = %cfg.data_dir.display(), node = %cfg.node_name, "coffer is serving");

    let mut failed = None;
    tokio::select! {
        sig = stop_signal => info!(signal = sig, "shutting down"),
        Some(res) = tasks.join_next() => {
            failed = Some(res);
            error!("a listener stopped unexpectedly; shutting down");
        }
    }
    shutdown.cancel();
    let drain = async {
        while let Some(res) = tasks.join_next().await {
            if let Ok(Err(e)) = res {
                warn!(error = %e, "task ended with an error");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        warn!("some connections did not finish within 30 s; stopping anyway");
    }
    vault.flush_audit().await;
    info!("stopped");
    match failed {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("a task panicked: {e}")),
        _ => Ok(()),
    }
}

async fn spawn_front_ends(
    cfg: &Config,
    vault: &Vault,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    if cfg.sftp.enabled {
        let sftp = coffer_protocol::sftp::SftpListener::bind(&cfg.sftp, &cfg.limits, vault.clone())
            .await?;
        let token = shutdown.clone();
        tasks.spawn(async move { sftp.run(token).await.map_err(anyhow::Error::from) });
    }
    if cfg.ftp.enabled {
        let ftp =
            coffer_protocol::ftp::FtpListener::bind(&cfg.ftp, &cfg.tls, &cfg.limits, vault.clone())
                .await?;
        let token = shutdown.clone();
        tasks.spawn(async move { ftp.run(token).await.map_err(anyhow::Error::from) });
    }
    if cfg.https.enabled {
        let https = coffer_protocol::https::HttpsListener::bind(
            &cfg.https,
            &cfg.tls,
            &cfg.limits,
            vault.clone(),
        )
        .await?;
        let token = shutdown.clone();
        tasks.spawn(async move { https.run(token).await.map_err(anyhow::Error::from) });
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now; the returned future resolves on either.
fn on_stop_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers the process still stops on the default actions.
            std::future::pending::<()>().await;
            return "none";
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

async fn serve_admin(
    listener: tokio::net::TcpListener,
    vault: Vault,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(vault);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
    .context("admin listener failed")
}

/// Liveness: the process runs and answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the metadata store and the primary object store answer.
async fn readyz(State(vault): State<Vault>) -> impl IntoResponse {
    let r = vault.readiness().await;
    let (db, store) = (r.metadata, r.primary_store);
    let body = serde_json::json!({ "metadata": db, "primary_store": store });
    let code = if db && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

/// Ticks of the background loop (2 s each) between two publications of this node's open
/// readers (10 s): well inside `GarbageAges::DEFAULT`'s grace and reader lifetime.
const PUBLISH_READERS_EVERY: u64 = 5;
/// Ticks between two garbage collections (a minute).
const COLLECT_GARBAGE_EVERY: u64 = 30;

/// How often `serve` checks every tenant's key and logs the key counters.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// At start and every hour: every tenant key that does not open, or is overdue for rotation
/// under `keys.rotation.max_age_days`, is logged by name; then one line of key counters.
async fn watch_keys(
    vault: Vault,
    max_age_days: u32,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(KEY_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let status = match vault.admin().key_status(max_age_days).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "key check failed");
                continue;
            }
        };
        for t in &status.tenants {
            if let Some(error) = &t.error {
                warn!(tenant = t.tenant, error = %error, "tenant key unavailable");
            }
            if t.overdue {
                warn!(
                    tenant = t.tenant,
                    version = t.current_version,
                    max_age_days,
                    "tenant key is overdue for rotation"
                );
            }
        }
        for r in &status.regions {
            if r.copies_under_older_keys > 0 {
                warn!(
                    region = r.region,
                    copies = r.copies_under_older_keys,
                    "tenant key copies are still under an older master key: run `coffer keys rotate-master`"
                );
            }
        }
        let m = status.metrics;
        info!(
            tenants = status.tenants.len(),
            kms_calls = m.kms_calls,
            kms_errors = m.kms_errors,
            kms_latency_ms = m.kms_latency_micros / 1000,
            cache_hits = m.cache_hits,
            cache_misses = m.cache_misses,
            failed_decryptions = m.failed_decryptions,
            "key check"
        );
    }
}

/// How often `serve` looks for tenant key rotations to resume or (with
/// `keys.rotation.automatic`) to begin.
const ROTATION_CHECK_EVERY: Duration = Duration::from_secs(60);

/// A rotation whose row has not moved for this long has lost the process that ran it (a
/// `coffer keys rotate-tenant` killed, a node stopped): `serve` resumes it.
const ROTATION_STALLED_AFTER: Duration = Duration::from_secs(30);

/// Every minute: resumes a tenant key rotation left unfinished, then, with
/// `keys.rotation.automatic`, rotates the tenant whose key is most overdue. One rotation at a
/// time, each to its end; a shutdown stops it between two batches' commits, and the next
/// start resumes it (the cursor is in the database).
async fn rotate_keys(
    vault: Vault,
    policy: coffer_config::KeyRotationConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(ROTATION_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let Some((tenant, why)) = next_rotation(&vault, policy).await else {
            continue;
        };
        info!(tenant, why, "tenant key rotation by the server");
        let mut noop = |_: &coffer_storage::RotationProgress| {};
        let admin = vault.admin();
        let run =
            admin.rotate_tenant_key(&tenant, coffer_storage::RotateOptions::default(), &mut noop);
        tokio::select! {
            _ = shutdown.cancelled() => {
                info!(tenant, "tenant key rotation paused for shutdown; the next start resumes it");
                return Ok(());
            }
            done = run => match done {
                Ok(r) => info!(
                    tenant,
                    from = r.progress.from_version,
                    to = r.progress.to_version,
                    rewritten = r.rewritten_now,
                    finished = r.finished,
                    "tenant key rotation by the server ended"
                ),
                Err(e) => warn!(tenant, error = %e, "tenant key rotation failed; retried in a minute"),
            },
        }
    }
}

/// The tenant whose key `serve` rotates next, and why: a stalled rotation first, then (if
/// automatic) the most overdue key.
async fn next_rotation(
    vault: &Vault,
    policy: coffer_config::KeyRotationConfig,
) -> Option<(String, &'static str)> {
    let admin = vault.admin();
    match admin.stalled_rotations(ROTATION_STALLED_AFTER).await {
        Ok(stalled) => {
            if let Some(t) = stalled.into_iter().next() {
                return Some((t, "resuming an unfinished rotation"));
            }
        }
        Err(e) => warn!(error = %e, "could not look for unfinished key rotations"),
    }
    if !policy.automatic {
        return None;
    }
    match admin.overdue_tenants(policy.max_age_days).await {
        Ok(overdue) => overdue
            .into_iter()
            .next()
            .map(|t| (t, "its key is overdue (keys.rotation.automatic)")),
        Err(e) => {
            warn!(error = %e, "could not look for overdue tenant keys");
            None
        }
    }
}

/// Replication jobs taken per pass.
const REPLICATION_PASS: u32 = 64;

/// Replication every 2 s (and at once again while passes are full), this node's long downloads published every 10 s (so the
/// garbage collector of any node keeps what they read) and, when `collect_garbage`
/// (`storage.gc_in_serve`), garbage collection every minute, until shutdown. With S3 the
/// server's credentials need not allow deletes: `coffer gc` collects garbage with its own.
async fn background(
    vault: Vault,
    collect_garbage: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // A full pass means more jobs wait: the next pass follows at once, so a burst of
        // small files reaches the replica at the pace the stores allow, not one pass per tick.
        loop {
            match vault.replicate_once(REPLICATION_PASS).await {
                Ok(r) if r.copied + r.deleted + r.failed > 0 => {
                    info!(
                        copied = r.copied,
                        deleted = r.deleted,
                        failed = r.failed,
                        "replication pass"
                    );
                    if r.failed > 0 || r.copied + r.deleted < REPLICATION_PASS as usize {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "replication pass failed");
                    break;
                }
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
        }
        n += 1;
        if n.is_multiple_of(PUBLISH_READERS_EVERY)
            && let Err(e) = vault.publish_open_readers(READER_PUBLISH_AFTER).await
        {
            warn!(error = %e, "publishing open readers failed");
        }
        if collect_garbage && n.is_multiple_of(COLLECT_GARBAGE_EVERY) {
            match vault.collect_garbage(256, GarbageAges::DEFAULT).await {
                Ok(0) => {}
                Ok(k) => info!(objects = k, "garbage collected"),
                Err(e) => warn!(error = %e, "garbage collection failed"),
            }
        }
    }
}
