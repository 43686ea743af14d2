//! The `coffer` binary: parses the command line, loads the configuration, dispatches.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod cli;
mod commands;
mod ops;
mod serve;
mod telemetry;
mod wiring;

use std::process::ExitCode;

use clap::Parser;
use coffer_config::Sources;

use crate::cli::{Cli, Command, ConfigCmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coffer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, even when a cause renders on several lines
            // (a TOML parse error shows the offending line under its position).
            let chain: Vec<String> = e
                .chain()
                .map(|cause| one_line(&cause.to_string()))
                .collect();
            eprintln!("coffer: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// Joins a multi-line message into one line, dropping blank and gutter-only (`|`) lines.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect();
    lines.join(" ")
}

fn load_config(
    cli: &Cli,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<coffer_config::Config> {
    let mut overrides = Vec::new();
    if let Some(d) = &cli.data_dir {
        overrides.push(("data_dir".to_owned(), d.to_string_lossy().into_owned()));
    }
    Ok(coffer_config::load(&Sources::from_process(
        file.or_else(|| cli.config.clone()),
        overrides,
    ))?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Config(ConfigCmd::Check { file }) = &cli.command {
        let cfg = load_config(&cli, file.clone())?;
        print!("{}", cfg.to_redacted_toml());
        return Ok(());
    }
    let cfg = load_config(&cli, None)?;
    match cli.command {
        Command::Serve => {
            telemetry::init(Some(&cfg), "info");
            serve::run(cfg).await
        }
        Command::Config(_) => Ok(()),
        Command::Migrate => {
            telemetry::init(None, "warn");
            let version = wiring::migrate_meta(&cfg).await?;
            println!("metadata schema is at version {version}");
            Ok(())
        }
        operator => {
            telemetry::init(None, "warn");
            let vault = wiring::open_vault(&cfg, wiring::Role::Operator).await?;
            let result = match operator {
                Command::Tenant(cmd) => commands::tenant(&vault, cmd).await,
                Command::Keys(cmd) => commands::keys(&vault, &cfg, cmd).await,
                Command::User(cmd) => commands::user(&vault, cmd).await,
                Command::Files(cmd) => commands::files(&vault, cmd).await,
                Command::Token(cmd) => commands::token(&vault, cmd).await,
                Command::Gc(args) => ops::gc(&vault, &cfg, &args).await,
                Command::Replication(cmd) => ops::replication(&vault, &cmd).await,
                Command::Fsck(args) => ops::fsck(&vault, &args).await,
                Command::Serve | Command::Config(_) | Command::Migrate => unreachable_command(),
            };
            vault.flush_audit().await;
            wiring::remove_operator_spool(&cfg);
            result
        }
    }
}

/// Commands handled before the operator dispatch never reach it.
fn unreachable_command() -> anyhow::Result<()> {
    anyhow::bail!("internal error: command dispatched twice")
}
