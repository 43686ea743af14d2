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
use coffer_object::ObjectKey;
use coffer_storage::Vault;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::wiring::{Role, open_vault};

/// Runs until SIGINT or SIGTERM, then stops every task and returns.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let vault = open_vault(&cfg, Role::Server).await?;
    vault
        .recover_uploads()
        .await
        .context("recovering the spool")?;
    let leftovers = crate::wiring::clean_local_store_temp(&cfg)?;
    if leftovers > 0 {
        info!(files = leftovers, "removed unfinished object writes left by a crash");
    }
    let shutdown = CancellationToken::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

    let admin = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot bind {}", cfg.admin.listen))?;
    info!(addr = %cfg.admin.listen, "admin listener ready (/healthz, /readyz)");
    tasks.spawn(serve_admin(admin, vault.clone(), shutdown.clone()));
    spawn_front_ends(&cfg, &vault, &shutdown, &mut tasks).await?;
    tasks.spawn(background(vault.clone(), shutdown.clone()));
    info!(data_dir = %cfg.data_dir.display(), node = %cfg.node_name, "coffer is serving");

    let mut failed = None;
    tokio::select! {
        sig = wait_for_signal() => info!(signal = sig, "shutting down"),
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
    _vault: &Vault,
    _shutdown: &CancellationToken,
    _tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // The front ends arrive with their issues; the config fields already exist.
    for (name, enabled, addr) in [
        ("sftp", cfg.sftp.enabled, cfg.sftp.listen),
        ("ftp", cfg.ftp.enabled, cfg.ftp.listen),
        ("https", cfg.https.enabled, cfg.https.listen),
    ] {
        if enabled {
            warn!(protocol = name, addr = %addr, "front end not built into this version yet; not listening");
        }
    }
    Ok(())
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default actions.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
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
    let b = vault.backends();
    let db = b.meta.list_tenants().await.is_ok();
    let store = match ObjectKey::generate() {
        Ok(k) => matches!(
            b.primary.head(&k).await,
            Ok(_) | Err(coffer_object::ObjectError::NotFound)
        ),
        Err(_) => false,
    };
    let body = serde_json::json!({ "metadata": db, "primary_store": store });
    let code = if db && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

/// Replication every few seconds, garbage collection every minute, until shutdown.
async fn background(vault: Vault, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match vault.replicate_once(64).await {
            Ok(r) if r.copied + r.deleted + r.failed > 0 => {
                info!(
                    copied = r.copied,
                    deleted = r.deleted,
                    failed = r.failed,
                    "replication pass"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "replication pass failed"),
        }
        n += 1;
        if n % 30 == 0 {
            match vault.collect_garbage(256).await {
                Ok(0) => {}
                Ok(k) => info!(objects = k, "garbage collected"),
                Err(e) => warn!(error = %e, "garbage collection failed"),
            }
        }
    }
}
