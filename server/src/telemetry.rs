//! Logging setup: human-readable or JSON lines on stderr.

use coffer_config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `COFFER_LOG` (a tracing filter) wins over `log.level`.
pub fn init(cfg: Option<&Config>, default_level: &str) {
    let level = std::env::var("COFFER_LOG")
        .ok()
        .or_else(|| cfg.map(|c| c.log.level.clone()))
        .unwrap_or_else(|| default_level.to_owned());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    // libunftp's own spans and logs carry file names (paths in command spans); Coffer logs
    // FTP logins and transfers itself, without names.
    let filter = match "libunftp=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    // Colour codes only on a terminal: in a log file or journald they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let json = cfg.is_some_and(|c| c.log.format == LogFormat::Json);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
