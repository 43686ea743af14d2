//! API tokens: long random secrets a user creates for scripts (`coffer token create`), sent as
//! `Authorization: Bearer <token>` to the HTTPS API.
//!
//! A token reads `cft_<id>_<secret>`: `id` is 12 random bytes in hex, stored in the clear to
//! find the row; `secret` is 32 random bytes (base64url), of which only the SHA-256 is stored.
//! With 256 bits of entropy a fast hash is as good as Argon2 and costs nothing per request.
//! A failed token counts toward its source address's limit (see `login.rs`), never toward the
//! owner's account.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_meta::{AccountStore, ApiToken, MetaError};
use subtle::ConstantTimeEq;

use crate::clock::now_ms;
use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::ids::random_bytes;
use crate::login::{Attempt, CredentialStamp, Source};
use crate::vault::{Principal, Vault};

/// Every token starts with this, so secret scanners and people recognise it.
pub const TOKEN_PREFIX: &str = "cft_";

/// A token as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// The public id (`cft_<id>_...`).
    pub id: String,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Expiry, ms since the epoch; `None` never.
    pub expires_ms: Option<i64>,
}

/// A freshly created token: the only moment its secret exists outside the client.
pub struct NewToken {
    /// What is stored.
    pub info: TokenInfo,
    /// The whole token to hand to the user, shown once.
    pub token: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("info", &self.info)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl From<ApiToken> for TokenInfo {
    fn from(t: ApiToken) -> Self {
        TokenInfo {
            id: t.token_id,
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
        }
    }
}

fn secret_hash(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// `(id, secret)` of a well-formed token.
fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == 24
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some((id, secret))
}

impl Vault {
    /// Tokens are account credentials: the one part of the store they need.
    fn accounts(&self) -> &dyn AccountStore {
        &*self.backends().meta
    }

    async fn user_named(&self, user_name: &str) -> VfsResult<coffer_meta::User> {
        self.find_user(user_name)
            .await?
            .ok_or_else(|| VfsError::new(ErrorKind::NotFound, "no such user"))
    }

    /// Creates a token for `user_name`, valid for `valid_ms` (or forever).
    pub async fn create_token(
        &self,
        user_name: &str,
        valid_ms: Option<i64>,
    ) -> VfsResult<NewToken> {
        let user = self.user_named(user_name).await?;
        let id = hex::encode(random_bytes(12)?);
        let secret = zeroize::Zeroizing::new(URL_SAFE_NO_PAD.encode(random_bytes(32)?));
        let now = now_ms();
        let stored = self
            .accounts()
            .add_api_token(&ApiToken {
                id: 0,
                user_id: user.id,
                token_id: id.clone(),
                secret_hash: secret_hash(&secret),
                created_ms: now,
                expires_ms: valid_ms.map(|v| now.saturating_add(v)),
            })
            .await?;
        let token = zeroize::Zeroizing::new(format!("{TOKEN_PREFIX}{id}_{}", secret.as_str()));
        Ok(NewToken {
            info: stored.into(),
            token,
        })
    }

    /// The tokens of `user_name`, oldest first.
    pub async fn list_tokens(&self, user_name: &str) -> VfsResult<Vec<TokenInfo>> {
        let user = self.user_named(user_name).await?;
        let tokens = self.accounts().api_tokens(user.id).await?;
        Ok(tokens.into_iter().map(TokenInfo::from).collect())
    }

    /// Revokes one token of `user_name` by its id (the whole token is accepted too).
    pub async fn revoke_token(&self, user_name: &str, id_or_token: &str) -> VfsResult<()> {
        let user = self.user_named(user_name).await?;
        let id = parse(id_or_token).map_or(id_or_token, |(id, _)| id);
        match self.accounts().delete_api_token(user.id, id).await {
            Err(MetaError::NotFound) => Err(VfsError::new(
                ErrorKind::NotFound,
                "the user has no token with this id",
            )),
            other => Ok(other?),
        }
    }

    /// Checks a bearer token. Every failure (malformed, unknown id, wrong secret, expired,
    /// disabled owner) gets the one `AuthFailed` and counts toward the source address's limit,
    /// never toward the owner's account: a valid token is never refused by a failure count
    /// (256 random bits cannot be guessed, so no count is needed to protect it).
    pub async fn authenticate_token(
        &self,
        token: &str,
        protocol: &'static str,
        remote_addr: Option<String>,
    ) -> VfsResult<Principal> {
        self.authenticate_token_stamped(token, protocol, remote_addr)
            .await
            .map(|(p, _)| p)
    }

    /// [`Vault::authenticate_token`], also returning what the token was verified against (see
    /// [`CredentialStamp`]).
    pub async fn authenticate_token_stamped(
        &self,
        token: &str,
        protocol: &'static str,
        remote_addr: Option<String>,
    ) -> VfsResult<(Principal, CredentialStamp)> {
        let source = Source::of(remote_addr.as_deref());
        let at = Attempt {
            name: "token:malformed",
            source: &source,
            protocol,
            remote: &remote_addr,
        };
        let Some((id, secret)) = parse(token) else {
            return Err(self.refuse(None, at, "bad_token").await);
        };
        let label = format!("token:{id}");
        // An unknown token and one whose user is gone get the same answer.
        let found = match self.accounts().api_token(id).await {
            Ok(t) => self.accounts().user(t.user_id).await.map(|u| (t, u)),
            Err(e) => Err(e),
        };
        let (stored, user) = match found {
            Ok(found) => found,
            Err(MetaError::NotFound) => {
                return Err(self
                    .refuse(None, Attempt { name: &label, ..at }, "unknown_token")
                    .await);
            }
            Err(e) => return Err(e.into()),
        };
        let secret_ok: bool = secret_hash(secret).ct_eq(&stored.secret_hash).into();
        let live = stored.expires_ms.is_none_or(|t| t > now_ms());
        let outcome = match (secret_ok, live, user.disabled) {
            (false, _, _) => "bad_token",
            (true, false, _) => "expired_token",
            (true, true, true) => "disabled",
            (true, true, false) => {
                self.audit_login(Some(&user), &user.name, protocol, &remote_addr, "ok");
                let stamp = CredentialStamp::Token {
                    token_id: stored.token_id,
                    user_id: user.id,
                    secret_hash: stored.secret_hash,
                };
                let principal = Principal {
                    user,
                    protocol,
                    remote_addr,
                };
                return Ok((principal, stamp));
            }
        };
        Err(self
            .refuse(Some(&user), Attempt { name: &label, ..at }, outcome)
            .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_parse() {
        let id = "0123456789abcdef01234567";
        let secret = "A".repeat(43);
        let good = format!("cft_{id}_{secret}");
        assert_eq!(parse(&good), Some((id, secret.as_str())));
        for bad in [
            format!("cfx_{id}_{secret}"),
            format!("cft_{id}{secret}"),
            format!("cft_{id}_{}", "A".repeat(42)),
            format!("cft_{}_{secret}", "g".repeat(24)),
            format!("cft_{id}_{}=", "A".repeat(42)),
            String::new(),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
