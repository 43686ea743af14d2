//! Storage operator commands: `coffer gc`, `coffer replication status|resync`, `coffer fsck`.
//!
//! `gc` is the only one that deletes: run it with a configuration whose object-store
//! credentials allow `DeleteObject` and `ListBucketMultipartUploads`; the server's need not.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use coffer_config::{Config, StoreConfig};
use coffer_storage::{GarbageAges, Vault};

use crate::wiring::open_s3_store;

/// Garbage rows handled per metadata query.
const GC_BATCH: u32 = 256;
/// Replication jobs handled per pass of `resync`.
const REPLICATION_BATCH: u32 = 256;

/// `coffer gc`
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Abort S3 multipart uploads started more than this many hours ago.
    #[arg(long, default_value_t = 24)]
    pub stale_upload_hours: u64,
    /// Delete objects that became garbage more than this many minutes ago even if a download
    /// still holds them (one that crashed, or never ends). Younger garbage goes as soon as no
    /// server publishes a reader of it, after a minute's grace.
    #[arg(long, alias = "min-age-minutes", default_value_t = 60)]
    pub max_age_minutes: u64,
}

/// `coffer replication ...`
#[derive(Subcommand, Debug)]
pub enum ReplicationCmd {
    /// Pending jobs, the age of the oldest, and failures.
    Status,
    /// Run pending jobs now, then copy again (verified) every object the replica lacks.
    Resync,
}

/// `coffer fsck`
#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Also read and authenticate every chunk of every object in both stores.
    #[arg(long)]
    pub deep: bool,
    /// Replace a missing or damaged primary object with the replica's copy, once every chunk
    /// of that copy has been authenticated.
    #[arg(long)]
    pub repair: bool,
}

/// Deletes the objects of deleted files from the primary store, then aborts stale multipart
/// uploads in every S3 store.
pub async fn gc(vault: &Vault, cfg: &Config, args: &GcArgs) -> anyhow::Result<()> {
    let mut deleted = 0;
    loop {
        let n = vault
            .collect_garbage(
                GC_BATCH,
                GarbageAges {
                    max_age: Duration::from_secs(args.max_age_minutes.saturating_mul(60)),
                    ..GarbageAges::DEFAULT
                },
            )
            .await
            .context("garbage collection")?;
        deleted += n;
        if n == 0 {
            break;
        }
    }
    println!("deleted {deleted} unreferenced objects from the primary store");
    let older_than = Duration::from_secs(args.stale_upload_hours.saturating_mul(3600));
    let stores = [
        ("storage.primary", Some(&cfg.storage.primary)),
        ("storage.replica", cfg.storage.replica.as_ref()),
    ];
    for (field, store) in stores {
        if let Some(StoreConfig::S3(s3)) = store {
            let aborted = open_s3_store(s3, field)
                .await?
                .abort_stale_uploads(older_than)
                .await
                .with_context(|| format!("{field}: aborting stale multipart uploads"))?;
            println!("{field}: aborted {aborted} stale multipart uploads");
        }
    }
    Ok(())
}

/// `coffer replication status|resync`.
pub async fn replication(vault: &Vault, cmd: &ReplicationCmd) -> anyhow::Result<()> {
    match cmd {
        ReplicationCmd::Status => print_status(vault).await,
        ReplicationCmd::Resync => resync(vault).await,
    }
}

async fn print_status(vault: &Vault) -> anyhow::Result<()> {
    let status = vault.replication_status().await?;
    println!("pending: {}", status.pending);
    match status.oldest_pending_age_ms {
        Some(age) => println!("oldest pending: {} s", age.max(0) / 1000),
        None => println!("oldest pending: -"),
    }
    println!("failing: {}", status.failing);
    if let Some(error) = status.last_error {
        println!("last error: {error}");
    }
    Ok(())
}

async fn resync(vault: &Vault) -> anyhow::Result<()> {
    if !vault.has_replica() {
        println!("no replica store is configured; nothing to do");
        return Ok(());
    }
    loop {
        let pass = vault.replicate_once(REPLICATION_BATCH).await?;
        println!(
            "outbox: copied {}, deleted {}, failed {}",
            pass.copied, pass.deleted, pass.failed
        );
        if pass.copied + pass.deleted == 0 {
            break;
        }
    }
    let report = vault.resync_replica().await?;
    println!(
        "checked {} files: {} copied again, {} failed",
        report.checked, report.copied, report.failed
    );
    if report.failed > 0 {
        anyhow::bail!(
            "{} objects could not be copied to the replica",
            report.failed
        );
    }
    Ok(())
}

/// `coffer fsck [--deep]`: prints one line per problem; fails if there is any.
pub async fn fsck(vault: &Vault, args: &FsckArgs) -> anyhow::Result<()> {
    let report = vault.fsck(args.deep, args.repair).await?;
    for problem in &report.problems {
        if problem.store == "usage" {
            let repaired = if problem.repaired { " - recounted" } else { "" };
            println!("usage: {}{repaired}", problem.problem);
            continue;
        }
        println!(
            "{} object {} (node {}): {}{}",
            problem.store,
            problem.object_key,
            problem.node_id,
            problem.problem,
            if problem.repaired {
                " - repaired from the replica"
            } else {
                ""
            }
        );
    }
    let repaired = report.problems.iter().filter(|p| p.repaired).count();
    let depth = if args.deep {
        "every chunk opened"
    } else {
        "sizes checked"
    };
    println!(
        "{} files, {} problems, {repaired} repaired ({depth})",
        report.files,
        report.problems.len()
    );
    let left = report.problems.len() - repaired;
    if left > 0 {
        anyhow::bail!("fsck found {left} problems it did not repair");
    }
    Ok(())
}
