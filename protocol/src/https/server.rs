//! The listener: TLS (rustls, ALPN h2 and http/1.1) then hyper's automatic HTTP/1.1 or
//! HTTP/2 connection serving the axum app, with a graceful stop on the shutdown token.
//!
//! Before its first request a connection is a stranger's: it holds a place of the
//! `[limits]` pre-login pool ([`PreAuthLimiter`]: in all and per source address) from the
//! accept through its TLS handshake until the head of its first request has arrived, and is
//! closed when that takes longer than `limits.login_grace_secs`. A connection refused a place
//! is closed at once, before any TLS work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coffer_config::{HttpsConfig, LimitsConfig, TlsConfig};
use coffer_storage::Vault;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::app::{self, AppState, Peer};
use super::auth::Gatekeeper;
use crate::common::limits::{AcceptErrors, PreAuthLimiter, PreAuthPermit};
use crate::common::tls;

/// HTTP/2 flow-control windows. With hyper's defaults (1 MiB per stream and per connection)
/// uploads over h2 ran at half the HTTP/1.1 speed on loopback; these let one stream run at
/// full speed while bounding what one client can make the server buffer.
const H2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
const H2_MAX_FRAME: u32 = 256 * 1024;
const H2_MAX_STREAMS: u32 = 128;
/// Request headers after the first must arrive within this (slowloris); the TLS handshake and
/// the first request head within `limits.login_grace_secs`.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Open connections at most; more are refused until some close.
const MAX_CONNECTIONS: usize = 4096;

/// Why the HTTPS listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// The certificate could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listen address could not be bound.
    #[error("https: cannot listen on {addr}: {source} (change https.listen)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The vault could not provide what the listener needs.
    #[error("https: {0}")]
    Storage(#[from] coffer_storage::VfsError),
}

/// A bound HTTPS listener, ready to serve.
pub struct HttpsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: AppState,
    addr: SocketAddr,
    pre_auth: PreAuthLimiter,
}

impl std::fmt::Debug for HttpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsListener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl HttpsListener {
    /// Loads (or generates) the certificate and binds the listen address.
    pub async fn bind(
        cfg: &HttpsConfig,
        tls_cfg: &TlsConfig,
        limits: &LimitsConfig,
        vault: Vault,
    ) -> Result<Self, HttpsError> {
        let files = tls::certificate_files(tls_cfg)?;
        let config = tls::server_config(&files, &[b"h2", b"http/1.1"])?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| HttpsError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| HttpsError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let gate = Gatekeeper::new(vault.clone(), cfg.session_idle)?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(config),
            state: AppState::new(vault, gate),
            addr,
            pre_auth: PreAuthLimiter::new("https", limits),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`; then lets in-flight requests finish (up to 20 s).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HttpsError> {
        info!(addr = %self.addr, "https listener ready");
        let router = app::router(self.state.clone());
        let builder = Arc::new(http_builder());
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut connections = tokio::task::JoinSet::new();
        let mut errors = AcceptErrors::default();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        errors.failed("https", &e).await;
                        continue;
                    }
                },
            };
            errors.succeeded("https");
            // Strangers first: a full pre-login pool closes the socket before any TLS work.
            let Ok(pre_auth) = self.pre_auth.admit(peer.ip()) else {
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                warn!(remote = %peer, "too many HTTPS connections; refusing one");
                continue;
            };
            let first_request = CancellationToken::new();
            let service = FirstRequest {
                inner: TowerToHyperService::new(router.clone().layer(axum::Extension(Peer(peer)))),
                seen: first_request.clone(),
            };
            let acceptor = self.acceptor.clone();
            let builder = builder.clone();
            let stop = shutdown.clone();
            let grace = Greeting {
                permit: pre_auth,
                deadline: Instant::now() + self.pre_auth.grace(),
                first_request,
            };
            connections.spawn(async move {
                serve_connection(&builder, acceptor, stream, peer, service, grace, stop).await;
                drop(permit);
            });
            while connections.try_join_next().is_some() {}
        }
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(20), drain)
            .await
            .is_err()
        {
            warn!("some https connections did not end within 20 s");
        }
        Ok(())
    }
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(Duration::from_secs(60));
    b
}

/// A connection's pre-login state: its place in the pool, until when it may take to send
/// its first request head, and the signal that it did.
struct Greeting {
    permit: PreAuthPermit,
    deadline: Instant,
    first_request: CancellationToken,
}

/// The service of one connection, noting that a request head has arrived.
#[derive(Clone)]
struct FirstRequest<S> {
    inner: S,
    seen: CancellationToken,
}

impl<S, R> hyper::service::Service<R> for FirstRequest<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> Self::Future {
        self.seen.cancel();
        self.inner.call(req)
    }
}

async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    greeting: Greeting,
    stop: CancellationToken,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<axum::body::Body>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Greeting {
        permit,
        deadline,
        first_request,
    } = greeting;
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(remote = %peer, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            info!(remote = %peer, "https connection closed: no TLS handshake within the login grace time");
            return;
        }
    };
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut permit = Some(permit);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = first_request.cancelled(), if permit.is_some() => {
                // A request head arrived: the connection leaves the strangers' pool.
                if let Some(p) = permit.take() {
                    p.logged_in();
                }
            }
            () = tokio::time::sleep_until(deadline), if permit.is_some() => {
                if first_request.is_cancelled() {
                    continue; // it came just in time: the branch above gives the place back
                }
                info!(remote = %peer, "https connection closed: no request within the login grace time");
                return;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        debug!(remote = %peer, error = %e, "https connection ended with an error");
    }
}
