//! FTP logins against the [`Vault`]: the shared password check, constant-cost rejection and the
//! cluster-wide lockout SFTP uses; the logged-in user carries their [`Vfs`] session.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::limits::PreAuthPermit;
use async_trait::async_trait;
use coffer_storage::{Password, Principal as VaultPrincipal, Vault, Vfs};
use tracing::{debug, info, warn};
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};

/// A logged-in FTP user: their name and their storage session.
pub struct FtpUser {
    pub(crate) name: String,
    pub(crate) vfs: Vfs,
}

impl fmt::Debug for FtpUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpUser").field("name", &self.name).finish()
    }
}

impl fmt::Display for FtpUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl UserDetail for FtpUser {}

/// Logins accepted by [`VaultAuthenticator`] and not yet turned into an [`FtpUser`], keyed by a
/// one-time ticket that travels as libunftp's principal name between the two steps, so each
/// session gets exactly the principal (with its own client address) it authenticated.
#[derive(Default)]
pub(crate) struct Handoff {
    next: AtomicU64,
    pending: Mutex<HashMap<String, VaultPrincipal>>,
}

impl fmt::Debug for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handoff")
    }
}

impl Handoff {
    fn put(&self, p: VaultPrincipal) -> String {
        let ticket = format!("login-{}", self.next.fetch_add(1, Ordering::Relaxed));
        if let Ok(mut m) = self.pending.lock() {
            m.insert(ticket.clone(), p);
        }
        ticket
    }

    fn take(&self, ticket: &str) -> Option<VaultPrincipal> {
        self.pending.lock().ok()?.remove(ticket)
    }
}

/// Checks FTP passwords with [`Vault::authenticate_password`] (protocol `"ftp"`, the client's
/// address as libunftp saw it: with PROXY protocol, the proxied one).
pub(crate) struct VaultAuthenticator {
    pub(crate) vault: Vault,
    pub(crate) handoff: Arc<Handoff>,
    /// With the PROXY protocol: the real client behind each relayed connection.
    pub(crate) client_ips: Option<Arc<super::proxy::ClientIps>>,
    /// The connection's place among those not logged in (Coffer builds one authenticator per
    /// control connection): given back at the first successful login.
    pub(crate) permit: Mutex<Option<PreAuthPermit>>,
}

impl fmt::Debug for VaultAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultAuthenticator")
    }
}

impl fmt::Debug for SessionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionProvider")
    }
}

#[async_trait]
impl Authenticator for VaultAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let remote = match &self.client_ips {
            Some(ips) => ips.client_of(creds.source_ip),
            None => creds.source_ip,
        }
        .to_string();
        let Some(password) = creds.password.clone() else {
            return Err(AuthenticationError::BadPassword);
        };
        let password = Password::new(password);
        match self
            .vault
            .authenticate_password(username, &password, "ftp", Some(remote.clone()))
            .await
        {
            Ok(p) => {
                info!(user = %p.user.name, remote = %remote, "ftp login");
                let permit = self.permit.lock().ok().and_then(|mut p| p.take());
                if let Some(permit) = permit {
                    permit.logged_in();
                }
                Ok(Principal {
                    username: self.handoff.put(p),
                })
            }
            Err(e) if crate::common::login_retry_later(e.kind()) => {
                // 421 and close (patched libunftp): the client retries; 530 would read as a
                // wrong password.
                info!(remote = %remote, kind = e.kind().code(), "ftp login deferred: try later");
                Err(AuthenticationError::new(libunftp::auth::TRY_LATER))
            }
            Err(e) => {
                info!(remote = %remote, kind = e.kind().code(), "ftp login refused");
                Err(AuthenticationError::BadPassword)
            }
        }
    }

    fn name(&self) -> &str {
        "coffer-vault"
    }
}

/// Opens the storage session of a login accepted by [`VaultAuthenticator`].
pub(crate) struct SessionProvider {
    pub(crate) vault: Vault,
    pub(crate) handoff: Arc<Handoff>,
}

#[async_trait]
impl UserDetailProvider for SessionProvider {
    type User = FtpUser;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<FtpUser, UserDetailError> {
        let Some(p) = self.handoff.take(&principal.username) else {
            debug!("ftp login ticket unknown or used twice");
            return Err(UserDetailError::Generic("login expired".into()));
        };
        let name = p.user.name.clone();
        match self.vault.session(p).await {
            Ok(vfs) => Ok(FtpUser { name, vfs }),
            Err(e) => {
                warn!(kind = e.kind().code(), error = %e, "could not open a storage session");
                Err(UserDetailError::Generic(
                    "storage unavailable; retry later".into(),
                ))
            }
        }
    }
}
