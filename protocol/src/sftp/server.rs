//! The SSH side: the listener, the russh configuration (modern algorithms only), logins
//! against the [`Vault`], the `sftp` subsystem and the checksum exec commands (`sha256sum`);
//! shells, other commands and forwarding are refused.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use coffer_config::{LimitsConfig, SftpConfig};
use coffer_storage::{Password, Principal, Vault};
use russh::keys::{Algorithm, HashAlg};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Preferred, cipher, kex, mac};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, info, warn};

use super::error::SftpError;
use super::exec;
use super::host_keys;
use super::session::{SessionOptions, run_session};
use crate::common::limits::{AcceptErrors, PreAuthLimiter, PreAuthPermit};

/// Key exchange: the post-quantum hybrid first, then curve25519. The two extension markers
/// enable `ext-info` and OpenSSH's strict key exchange (Terrapin mitigation).
const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];
/// AEAD ciphers first; CTR modes for libssh2 (curl) and PuTTY/FileZilla. No CBC.
const CIPHERS: &[cipher::Name] = &[
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
    cipher::AES_128_CTR,
];
/// MACs, used only with the CTR ciphers (AEAD ciphers carry their own tag): the
/// encrypt-then-MAC SHA-2 ones, and plain `hmac-sha2-256` last, for libssh2 before 1.11 (curl
/// on Debian 12), which has no ETM MAC and cannot connect without it. `hmac-sha2-512` (not ETM)
/// is not offered: no tested client needs it (docs/SFTP.md, "MACs").
const MACS: &[mac::Name] = &[mac::HMAC_SHA256_ETM, mac::HMAC_SHA512_ETM, mac::HMAC_SHA256];
/// Host key signature algorithms: Ed25519 and RSA with SHA-2 (no `ssh-rsa` SHA-1, no DSA).
const HOST_KEY_ALGORITHMS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];
/// Every rejected login takes at least this long, whatever failed.
const AUTH_REJECTION_TIME: Duration = Duration::from_millis(800);
/// Incoming window per channel, and the packet size we accept.
const WINDOW_SIZE: u32 = 16 * 1024 * 1024;
const MAX_SSH_PACKET: u32 = 256 * 1024;
/// Shell sessions and other channels per connection.
const MAX_CHANNELS: usize = 8;
/// How long a session asked to disconnect (grace time over, shutdown) may take before its
/// socket is cut.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

/// A bound SFTP listener, ready to serve.
pub struct SftpListener {
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    vault: Vault,
    sessions: Arc<Semaphore>,
    pre_auth: PreAuthLimiter,
    addr: SocketAddr,
}

impl std::fmt::Debug for SftpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpListener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SftpListener {
    /// Loads (or generates) the host keys and binds the listen address.
    pub async fn bind(
        cfg: &SftpConfig,
        limits: &LimitsConfig,
        vault: Vault,
    ) -> Result<Self, SftpError> {
        let keys = host_keys::load_or_generate(&cfg.host_key_dir)?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| SftpError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(SftpError::Accept)?;
        Ok(Self {
            listener,
            config: Arc::new(ssh_config(keys, cfg.idle_timeout)),
            vault,
            sessions: Arc::new(Semaphore::new(cfg.max_sessions as usize)),
            pre_auth: PreAuthLimiter::new("sftp", limits),
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts connections until `shutdown`; then asks every session to disconnect.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SftpError> {
        info!(addr = %self.addr, "sftp listener ready");
        let mut connections = tokio::task::JoinSet::new();
        let mut errors = AcceptErrors::default();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        errors.failed("sftp", &e).await;
                        continue;
                    }
                },
            };
            errors.succeeded("sftp");
            // Strangers first: a full pre-login pool closes the socket before any SSH work.
            let Ok(pre_auth) = self.pre_auth.admit(peer.ip()) else {
                continue;
            };
            let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
                warn!(remote = %peer, "sftp.max_sessions reached; refusing a connection");
                continue;
            };
            let (logged_in, login) = oneshot::channel();
            let conn = Connection::new(self.vault.clone(), peer, pre_auth, logged_in);
            let config = self.config.clone();
            let stop = shutdown.clone();
            let grace = self.pre_auth.grace();
            connections.spawn(async move {
                serve_connection(config, stream, conn, login, grace, stop).await;
                drop(permit);
            });
            while connections.try_join_next().is_some() {}
        }
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(20), drain)
            .await
            .is_err()
        {
            warn!("some sftp sessions did not end within 20 s");
        }
        Ok(())
    }
}

fn ssh_config(keys: Vec<russh::keys::PrivateKey>, idle_timeout: Duration) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::Password);
    russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-Coffer")),
        methods,
        auth_rejection_time: AUTH_REJECTION_TIME,
        // The "none" probe every OpenSSH client starts with is refused for everyone alike.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        window_size: WINDOW_SIZE,
        maximum_packet_size: MAX_SSH_PACKET,
        inactivity_timeout: Some(idle_timeout),
        keepalive_interval: Some(Duration::from_secs(60)),
        max_auth_attempts: 6,
        // Without it status replies wait on Nagle's algorithm and uploads run at half speed.
        nodelay: true,
        preferred: Preferred {
            kex: Cow::Borrowed(KEX),
            key: Cow::Borrowed(HOST_KEY_ALGORITHMS),
            cipher: Cow::Borrowed(CIPHERS),
            mac: Cow::Borrowed(MACS),
            compression: Cow::Borrowed(&[russh::compression::NONE]),
            ..Preferred::DEFAULT
        },
        ..Default::default()
    }
}

/// Serves one SSH connection; closes it when it has not logged in within `grace` (the
/// `login` channel fires at the login) or when the server shuts down.
async fn serve_connection(
    config: Arc<russh::server::Config>,
    stream: TcpStream,
    conn: Connection,
    login: oneshot::Receiver<()>,
    grace: Duration,
    stop: CancellationToken,
) {
    let remote = conn.remote.clone();
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    let cut = CancellationToken::new();
    let stream = Cuttable::new(stream, cut.clone());
    let deadline = tokio::time::Instant::now() + grace;
    let started =
        tokio::time::timeout_at(deadline, russh::server::run_stream(config, stream, conn));
    let session = match started.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(remote, error = %e, "ssh handshake failed");
            return;
        }
        Err(_) => {
            info!(
                remote,
                grace_secs = grace.as_secs(),
                "sftp connection closed: no SSH banner within the login grace time"
            );
            return;
        }
    };
    let handle = session.handle();
    tokio::pin!(session);
    // Resolves when the grace time passes before a login; never once logged in.
    let grace_over = async move {
        if let Ok(Ok(())) = tokio::time::timeout_at(deadline, login).await {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = &mut session => r,
        () = grace_over => {
            info!(remote, grace_secs = grace.as_secs(), "sftp connection closed: not logged in within the login grace time");
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "login grace time over".into(), "en".into())
                .await;
            end_within(session, &cut).await
        }
        _ = stop.cancelled() => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "server shutting down".into(), "en".into())
                .await;
            end_within(session, &cut).await
        }
    };
    match result {
        Ok(()) => debug!(remote, "ssh connection closed"),
        Err(e) => debug!(remote, error = %e, "ssh connection ended with an error"),
    }
}

/// Waits [`DISCONNECT_WAIT`] for a session asked to disconnect to end, then cuts its socket.
/// A peer in the middle of a key exchange (it sent its banner and nothing more) never lets
/// russh send the disconnect, and its session would wait for it until the idle timeout.
async fn end_within<F: std::future::Future<Output = Result<(), russh::Error>>>(
    mut session: Pin<&mut F>,
    cut: &CancellationToken,
) -> Result<(), russh::Error> {
    if let Ok(r) = tokio::time::timeout(DISCONNECT_WAIT, session.as_mut()).await {
        return r;
    }
    cut.cancel();
    session.await
}

/// A TCP stream the server can cut: once `cut` is cancelled every read and write fails, so
/// russh's session task (which owns the stream) ends and the socket is closed.
struct Cuttable {
    stream: TcpStream,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    is_cut: bool,
}

impl Cuttable {
    fn new(stream: TcpStream, cut: CancellationToken) -> Self {
        Self {
            stream,
            cut: Box::pin(cut.cancelled_owned()),
            is_cut: false,
        }
    }

    /// `Err` once cut; registers the task to be woken when it is.
    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if !self.is_cut && self.cut.as_mut().poll(cx).is_ready() {
            self.is_cut = true;
        }
        if self.is_cut {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection cut by the server",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Cuttable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// One SSH connection: its login and its channels.
struct Connection {
    vault: Vault,
    remote: String,
    principal: Option<Principal>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Held until the login: a place among the connections that have not logged in.
    pre_auth: Option<PreAuthPermit>,
    /// Fired at the login, ending the grace timer.
    logged_in: Option<oneshot::Sender<()>>,
}

impl Connection {
    fn new(
        vault: Vault,
        peer: SocketAddr,
        pre_auth: PreAuthPermit,
        logged_in: oneshot::Sender<()>,
    ) -> Self {
        Self {
            vault,
            remote: peer.to_string(),
            principal: None,
            channels: HashMap::new(),
            pre_auth: Some(pre_auth),
            logged_in: Some(logged_in),
        }
    }

    fn accept(&mut self, result: coffer_storage::VfsResult<Principal>) -> Auth {
        match result {
            Ok(p) => {
                info!(user = %p.user.name, remote = %self.remote, "sftp login");
                self.principal = Some(p);
                if let Some(permit) = self.pre_auth.take() {
                    permit.logged_in();
                }
                if let Some(tx) = self.logged_in.take() {
                    let _ = tx.send(());
                }
                Auth::Accept
            }
            Err(e) => {
                debug!(kind = e.kind().code(), "sftp login refused");
                Auth::reject()
            }
        }
    }

    async fn refuse(
        &self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        info!(request = what, remote = %self.remote, "refused a non-SFTP request");
        let msg = format!("This server provides SFTP only; {what} is not available.\r\n");
        session.extended_data(channel, 1, msg.into_bytes())?;
        session.channel_failure(channel)?;
        Ok(())
    }
}

/// The base64 key blob, as stored by `coffer user add --ssh-key`.
fn key_blob_base64(key: &russh::keys::PublicKey) -> Option<String> {
    let line = key.to_openssh().ok()?;
    line.split_whitespace().nth(1).map(str::to_owned)
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let password = Password::new(password.to_owned());
        let result = self
            .vault
            .authenticate_password(user, &password, "sftp", Some(self.remote.clone()))
            .await;
        Ok(self.accept(result))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let known = match key_blob_base64(offer.public_key) {
            Some(b64) => self.vault.is_registered_key(user, &b64).await,
            None => false,
        };
        Ok(if known { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(b64) = key_blob_base64(key.public_key) else {
            return Ok(Auth::reject());
        };
        let result = self
            .vault
            .authenticate_public_key(user, &b64, "sftp", Some(self.remote.clone()))
            .await;
        Ok(self.accept(result))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.principal.is_none() || self.channels.len() >= MAX_CHANNELS {
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(principal), true) = (self.principal.clone(), name == "sftp") else {
            return self.refuse(channel, "this subsystem", session).await;
        };
        let Some(ch) = self.channels.remove(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let user_name = principal.user.name.clone();
        let vfs = match self.vault.session(principal).await {
            Ok(v) => v,
            Err(e) => {
                warn!(kind = e.kind().code(), error = %e, "could not open a storage session");
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        session.channel_success(channel)?;
        let opts = SessionOptions { user_name };
        tokio::spawn(run_session(ch, vfs, opts));
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "a shell", session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only checksum commands run (`sha256sum`, served from the stored hashes).
        let (Some(principal), Some(command)) = (self.principal.clone(), exec::parse(data)) else {
            return self.refuse(channel, "command execution", session).await;
        };
        let Some(ch) = self.channels.remove(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let vfs = match self.vault.session(principal).await {
            Ok(v) => v,
            Err(e) => {
                warn!(kind = e.kind().code(), error = %e, "could not open a storage session");
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        session.channel_success(channel)?;
        tokio::spawn(exec::run(ch, vfs, command));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "a terminal", session).await
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}
