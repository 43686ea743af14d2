//! The `coffer` binary: parses the command line, loads the configuration, dispatches.

mod cli;
mod commands;
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
            // One line: the error and its causes.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("coffer: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
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
        Command::Tenant(cmd) => {
            telemetry::init(None, "warn");
            let vault = wiring::open_vault(&cfg, wiring::Role::Operator).await?;
            commands::tenant(&vault, cmd).await
        }
        Command::User(cmd) => {
            telemetry::init(None, "warn");
            let vault = wiring::open_vault(&cfg, wiring::Role::Operator).await?;
            let r = commands::user(&vault, cmd).await;
            vault.flush_audit().await;
            r
        }
        Command::Files(cmd) => {
            telemetry::init(None, "warn");
            let vault = wiring::open_vault(&cfg, wiring::Role::Operator).await?;
            let r = commands::files(&vault, cmd).await;
            vault.flush_audit().await;
            r
        }
    }
}
