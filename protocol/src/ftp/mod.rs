//! The FTPES front end: FTP with mandatory explicit TLS (`AUTH TLS`, then `PROT P` for data),
//! served by libunftp with Coffer's own authenticator (the [`Vault`] password check and its
//! shared lockout) and storage backend (the user's `Vfs`). See `docs/FTPES.md`.
//!
//! Everything here handles bytes from the network: no unwrap, expect, indexing or panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod auth;
mod backend;
mod hash;
mod proxy;
mod site;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use coffer_config::{FtpConfig, LimitsConfig, TlsConfig};
use coffer_storage::Vault;
use libunftp::options::{FtpsRequired, PassiveHost, Shutdown};
use libunftp::{Server, ServerBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use auth::FtpUser;
pub use backend::{EntryMeta, VfsBackend};

use crate::common::limits::{AcceptErrors, PreAuthLimiter, PreAuthPermit};
use crate::common::tls::{CertificateFiles, TlsError, certificate_files, server_config};

/// How long sessions may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long `bind` waits for libunftp's listener (behind the PROXY protocol relay) to accept
/// connections.
const READY_WAIT: Duration = Duration::from_secs(10);
/// The greeting sent on connect.
const GREETING: &str = "Coffer FTPES: AUTH TLS required";

/// Why the FTPES front end could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FtpError {
    /// The listen address could not be bound.
    #[error("ftp.listen: cannot bind {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate could not be loaded or generated.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// libunftp refused the configuration or its listener failed.
    #[error("ftp server: {0}")]
    Server(String),
}

/// A running FTPES listener: bound and accepting when [`FtpListener::bind`] returns.
pub struct FtpListener {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), FtpError>>,
    /// The PROXY protocol front, when enabled.
    relay: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FtpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpListener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FtpListener {
    /// Loads (or generates) the certificate, starts libunftp on `cfg.listen` and waits until
    /// it accepts connections.
    pub async fn bind(
        cfg: &FtpConfig,
        tls: &TlsConfig,
        limits: &LimitsConfig,
        vault: Vault,
    ) -> Result<Self, FtpError> {
        let files = certificate_files(tls)?;
        if let Some(implicit) = cfg.implicit_listen {
            // Refused rather than ignored: an operator who set it expects clients to connect.
            return Err(FtpError::Server(format!(
                "ftp.implicit_listen = \"{implicit}\": implicit FTPS is not supported by this \
                 version (libunftp speaks explicit TLS only); leave it empty and let clients use \
                 AUTH TLS on ftp.listen"
            )));
        }
        let bind_err = |source| FtpError::Bind {
            addr: cfg.listen,
            source,
        };
        let stop = CancellationToken::new();
        let tls_config = ftps_config(&files)?;
        let public = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(bind_err)?;
        let addr = public.local_addr().map_err(bind_err)?;
        let Some(ips) = cfg
            .proxy_protocol
            .then(|| Arc::new(proxy::ClientIps::default()))
        else {
            // Coffer accepts the control connections itself, to switch Nagle's algorithm off:
            // with it on, a reply sent while the previous one is unacknowledged (the `226`
            // after a `150`, when the client sends nothing in between) waits for the client's
            // delayed ACK, about 40 ms per transfer.
            let server = SessionFactory {
                cfg: cfg.clone(),
                tls: tls_config,
                vault,
                stop: stop.clone(),
                limiter: PreAuthLimiter::new("ftp", limits),
            };
            server.build(None)?; // a configuration libunftp refuses fails now, not per connection
            let task = tokio::spawn(serve_sessions(public, server, stop.clone()));
            info!(addr = %addr, passive = ?cfg.passive_ports, proxy_protocol = false, "ftpes listener ready");
            return Ok(Self {
                addr,
                stop,
                task,
                relay: None,
            });
        };
        // With the PROXY protocol Coffer owns the public port (it accepts version 1 and 2
        // headers) and libunftp listens on a private loopback port behind it.
        let server = build_server(
            cfg,
            tls_config,
            vault,
            Session {
                client_ips: Some(ips.clone()),
                permit: None,
                login_grace: limits.login_grace,
            },
            stop.clone(),
        )?;
        let internal = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(bind_err)?;
        let relay = Some(tokio::spawn(proxy::relay(
            public,
            internal,
            ips,
            stop.clone(),
        )));
        let task = tokio::spawn(async move {
            server
                .listen(internal.to_string())
                .await
                .map_err(|e| FtpError::Server(e.to_string()))
        });
        let listener = Self {
            addr,
            stop,
            task,
            relay,
        };
        listener.wait_ready(internal).await?;
        info!(addr = %addr, passive = ?cfg.passive_ports, proxy_protocol = cfg.proxy_protocol, "ftpes listener ready");
        Ok(listener)
    }

    async fn wait_ready(&self, libunftp_addr: SocketAddr) -> Result<(), FtpError> {
        let target = match libunftp_addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            a => a,
        };
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.task.is_finished() {
                return Err(FtpError::Server(format!(
                    "the listener on {} stopped while starting",
                    self.addr
                )));
            }
            if tokio::net::TcpStream::connect(target).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(FtpError::Server(format!(
            "the listener on {} did not start within {READY_WAIT:?}",
            self.addr
        )))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`; then lets sessions finish for up to 10 s.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), FtpError> {
        let Self {
            stop,
            mut task,
            relay,
            ..
        } = self;
        let result = tokio::select! {
            r = &mut task => r,
            _ = shutdown.cancelled() => {
                stop.cancel();
                task.await
            }
        };
        stop.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(FtpError::Server(msg))) if shutdown.is_cancelled() => {
                warn!(error = %msg, "ftp sessions did not all end within the grace period");
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(FtpError::Server(format!(
                "the ftp listener task failed: {e}"
            ))),
        }
    }
}

/// The shared TLS configuration (TLS 1.2 and 1.3, strong suites, resumption by session id
/// and ticket), minus TLS 1.3 session tickets: libunftp uses one configuration for control
/// and data connections, and a client that uploads without ever reading its data connection
/// (curl) leaves the tickets unread, so its close resets the connection and the server loses
/// the end of the upload. TLS 1.2 sessions resume on the data channel by id or ticket.
fn ftps_config(files: &CertificateFiles) -> Result<Arc<rustls::ServerConfig>, FtpError> {
    let shared = server_config(files, &[])?;
    let mut config = (*shared).clone();
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// What a control connection accepted by Coffer needs to get a libunftp session of its own.
struct SessionFactory {
    cfg: FtpConfig,
    tls: Arc<rustls::ServerConfig>,
    vault: Vault,
    stop: CancellationToken,
    /// `[limits]` before login: places for connections that have not logged in.
    limiter: PreAuthLimiter,
}

impl SessionFactory {
    /// A libunftp server for one control connection, holding its place among the connections
    /// not logged in (`permit`) until its login succeeds.
    fn build(
        &self,
        permit: Option<PreAuthPermit>,
    ) -> Result<Server<VfsBackend, FtpUser>, FtpError> {
        build_server(
            &self.cfg,
            self.tls.clone(),
            self.vault.clone(),
            Session {
                client_ips: None,
                permit,
                login_grace: self.limiter.grace(),
            },
            self.stop.clone(),
        )
    }
}

/// What differs between the libunftp servers Coffer builds.
struct Session {
    /// With the PROXY protocol: the real client behind each relayed connection.
    client_ips: Option<Arc<proxy::ClientIps>>,
    /// The connection's place among those not logged in (one server per connection).
    permit: Option<PreAuthPermit>,
    /// `limits.login_grace`: a connection not logged in by then gets `421` and is closed.
    login_grace: Duration,
}

/// The reply to a connection refused before login, sent in plain text before closing it.
const TOO_MANY: &[u8] = b"421 Too many connections waiting to log in; try again later\r\n";

/// Tells a refused connection why (bounded: a peer that does not read gets nothing) and
/// closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(TOO_MANY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Accepts control connections until `stop`, each with `TCP_NODELAY`, and serves each as a
/// libunftp session (passive ports are bound per `PASV`, so sessions share the range as they
/// did under libunftp's own listener); then gives running sessions [`SHUTDOWN_GRACE`].
async fn serve_sessions(
    public: tokio::net::TcpListener,
    factory: SessionFactory,
    stop: CancellationToken,
) -> Result<(), FtpError> {
    let mut sessions = tokio::task::JoinSet::new();
    let mut accept_errors = AcceptErrors::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = public.accept() => match accepted {
                Ok((stream, peer)) => {
                    accept_errors.succeeded("ftp");
                    // Refusals are logged by the limiter (one line per burst).
                    let Ok(permit) = factory.limiter.admit(peer.ip()) else {
                        sessions.spawn(refuse(stream));
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    match factory.build(Some(permit)) {
                        Ok(server) => {
                            sessions.spawn(async move {
                                if let Err(e) = server.service(stream).await {
                                    warn!(error = %e, "ftp session failed");
                                }
                            });
                        }
                        Err(e) => warn!(error = %e, "cannot start an ftp session"),
                    }
                }
                // Out of file descriptors and the like: back off, log once per burst.
                Err(e) => accept_errors.failed("ftp", &e).await,
            },
        }
    }
    drop(public);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            sessions = sessions.len(),
            "ftp sessions did not all end within the grace period"
        );
        sessions.abort_all();
    }
    Ok(())
}

fn build_server(
    cfg: &FtpConfig,
    tls: Arc<rustls::ServerConfig>,
    vault: Vault,
    session: Session,
    stop: CancellationToken,
) -> Result<Server<VfsBackend, FtpUser>, FtpError> {
    let handoff = Arc::new(auth::Handoff::default());
    let authenticator = Arc::new(auth::VaultAuthenticator {
        vault: vault.clone(),
        handoff: handoff.clone(),
        client_ips: session.client_ips,
        permit: std::sync::Mutex::new(session.permit),
    });
    let provider: Arc<dyn unftp_core::auth::UserDetailProvider<User = FtpUser> + Send + Sync> =
        Arc::new(auth::SessionProvider { vault, handoff });
    let mut builder = ServerBuilder::with_user_detail_provider(Box::new(|| VfsBackend), provider)
        .authenticator(authenticator)
        .greeting(GREETING)
        // libunftp logs paths; Coffer logs logins and transfers itself, without names.
        .logger(slog::Logger::root(slog::Discard, slog::o!()))
        .ftps_manual::<std::path::PathBuf>(tls)
        // Plaintext is refused on both channels: USER before AUTH TLS, and transfers before PROT P.
        .ftps_required(FtpsRequired::All, FtpsRequired::All)
        .passive_ports(cfg.passive_ports.clone())
        .idle_session_timeout(cfg.idle_timeout.as_secs().max(1))
        // Connections not logged in by then get 421 and are closed (patched libunftp).
        .login_grace(session.login_grace)
        .site_command("MFMT", site::Mfmt)
        // Stored SHA-256 hashes (patched libunftp routes HASH, XSHA256, OPTS HASH here).
        .site_command("HASH", hash::Hash)
        .site_command("XSHA256", hash::XSha256)
        .site_command("OPTS_HASH", hash::OptsHash)
        .shutdown_indicator(async move {
            stop.cancelled().await;
            Shutdown::new().grace_period(SHUTDOWN_GRACE)
        });
    if let Some(host) = &cfg.passive_host {
        builder = builder.passive_host(PassiveHost::from(host.as_str()));
    }
    if cfg.proxy_protocol {
        // Control and data connections both arrive on the listen port, each with a PROXY
        // header; its destination port tells the control port from a passive one.
        builder = builder.proxy_protocol_mode(cfg.listen.port());
    }
    builder.build().map_err(|e| FtpError::Server(e.to_string()))
}
