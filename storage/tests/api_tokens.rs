//! API tokens through the Vault: they log in as their user, only the hash is stored, a wrong
//! secret locks no account, expiry and revocation end them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use coffer_storage::{ErrorKind, LockoutPolicy, Password};
use common::{vault, vault_with};

#[tokio::test]
async fn a_token_logs_in_as_its_user_and_only_its_hash_is_stored() {
    let tv = vault().await;
    tv.user("acme", "alice").await;
    let made = tv.vault.create_token("alice", None).await.unwrap();
    assert!(made.token.starts_with("cft_"), "{}", made.token.as_str());
    let p = tv
        .vault
        .authenticate_token(&made.token, "https", Some("127.0.0.9".into()))
        .await
        .unwrap();
    assert_eq!(p.user.name, "alice");
    let stored = tv.meta.api_token(&made.info.id).await.unwrap();
    // base64url may hold `_`: the secret is everything after the id.
    let secret = made.token.splitn(3, '_').nth(2).unwrap();
    assert_eq!(secret.len(), 43);
    assert!(
        !stored
            .secret_hash
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "the secret is stored"
    );
    assert_eq!(
        tv.vault.list_tokens("alice").await.unwrap(),
        vec![made.info.clone()]
    );
    tv.vault.revoke_token("alice", &made.info.id).await.unwrap();
    let e = tv
        .vault
        .authenticate_token(&made.token, "https", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed);
    assert!(tv.vault.list_tokens("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn wrong_secrets_lock_no_account_and_a_valid_token_works_during_a_lock() {
    let tv = vault_with(LockoutPolicy {
        max_failures: 3,
        window_ms: 60_000,
        lock_ms: 60_000,
    })
    .await;
    tv.user("acme", "alice").await;
    let made = tv.vault.create_token("alice", None).await.unwrap();
    let (keep, last) = made.token.split_at(made.token.len() - 1);
    let forged = format!("{keep}{}", if last == "A" { "B" } else { "A" });
    for _ in 0..5 {
        let e = tv
            .vault
            .authenticate_token(&forged, "https", Some("198.51.100.7:1".into()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuthFailed);
    }
    tv.vault.flush_audit().await;
    // Forged tokens from a stranger do not keep alice out.
    tv.vault
        .authenticate_password(
            "alice",
            &Password::new("pw-alice-secret".into()),
            "sftp",
            Some("192.0.2.9:1".into()),
        )
        .await
        .expect("the owner's password still works");
    // The account locked by failed passwords from many addresses: a valid token still works.
    for i in 0..3 {
        let _ = tv
            .vault
            .authenticate_password(
                "alice",
                &Password::new("guess".into()),
                "https",
                Some(format!("203.0.113.{i}:1")),
            )
            .await
            .unwrap_err();
    }
    tv.vault.flush_audit().await;
    let user = tv.meta.user_by_name("alice").await.unwrap();
    assert!(
        user.locked_until_ms.is_some(),
        "the account-wide count locked it"
    );
    let p = tv
        .vault
        .authenticate_token(&made.token, "https", Some("203.0.113.50:1".into()))
        .await
        .expect("a valid token is never refused by a failure count");
    assert_eq!(p.user.name, "alice");
}

#[tokio::test]
async fn expired_malformed_and_other_users_tokens_do_not_work() {
    let tv = vault().await;
    tv.user("acme", "alice").await;
    tv.user("acme", "bob").await;
    let expired = tv.vault.create_token("alice", Some(-1)).await.unwrap();
    let e = tv
        .vault
        .authenticate_token(&expired.token, "https", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed);
    for bad in ["", "cft_", "Bearer x", &"cft_".repeat(40)] {
        let e = tv
            .vault
            .authenticate_token(bad, "https", None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuthFailed, "{bad}");
    }
    let alices = tv.vault.create_token("alice", None).await.unwrap();
    let e = tv
        .vault
        .revoke_token("bob", &alices.info.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "bob revoked alice's token");
    let e = tv.vault.create_token("nobody", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// `Vault::resume` (the HTTPS credential cache's check) accepts a stamp only while nothing it
/// was verified against changed: a new password, a disable, a revoke each end it at once.
#[tokio::test]
async fn a_credential_stamp_resumes_until_its_password_user_or_token_changes() {
    let tv = vault().await;
    tv.user("acme", "alice").await;
    let pw = Password::new("pw-alice-secret".to_owned());
    let (_, stamp) = tv
        .vault
        .authenticate_password_stamped("alice", &pw, "https", Some("127.0.0.9".into()))
        .await
        .unwrap();
    let stamp = stamp.unwrap();
    let resume = |s| {
        let v = tv.vault.clone();
        async move {
            v.resume(&s, "https", Some("127.0.0.9".into()))
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(resume(stamp.clone()).await, "a fresh stamp resumes");
    tv.vault
        .admin()
        .set_password("alice", &Password::new("another one!".into()))
        .await
        .unwrap();
    assert!(!resume(stamp.clone()).await, "a stamp of the old password");

    let made = tv.vault.create_token("alice", None).await.unwrap();
    let (_, token_stamp) = tv
        .vault
        .authenticate_token_stamped(&made.token, "https", None)
        .await
        .unwrap();
    assert!(
        resume(token_stamp.clone()).await,
        "a fresh token stamp resumes"
    );
    tv.vault.admin().set_disabled("alice", true).await.unwrap();
    assert!(
        !resume(token_stamp.clone()).await,
        "a token of a disabled user"
    );
    tv.vault.admin().set_disabled("alice", false).await.unwrap();
    assert!(resume(token_stamp.clone()).await, "enabled again");
    tv.vault.revoke_token("alice", &made.info.id).await.unwrap();
    assert!(!resume(token_stamp).await, "a revoked token");
}
