//! The local master key file (0600 rule, atomic creation) and wrapping tenant keys with it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use coffer_keys::{KeyError, KeyProvider, LocalKeyProvider, TenantKey, WrapContext};

fn ctx(tenant_id: i64, version: u32) -> WrapContext {
    WrapContext {
        tenant_id,
        version,
        region: coffer_keys::PRIMARY_REGION,
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn write_key_file(path: &Path, len: usize, mode: u32) {
    fs::write(path, vec![0x5a; len]).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn created_key_file_is_private_32_bytes_and_reloads_to_the_same_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/master.key");

    let created = LocalKeyProvider::load_or_create(&path).unwrap();

    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(mode_of(path.parent().unwrap()), 0o700);
    assert_eq!(fs::read(&path).unwrap().len(), 32);
    assert_eq!(
        LocalKeyProvider::load(&path).unwrap().key_id(),
        created.key_id()
    );
    assert_eq!(
        LocalKeyProvider::load_or_create(&path).unwrap().key_id(),
        created.key_id()
    );
    let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        1,
        "the temporary file must not be left behind"
    );
}

#[test]
fn key_id_is_local_prefix_and_sha256_prefix_of_the_key_file() {
    use aws_lc_rs::digest::{SHA256, digest};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let provider = LocalKeyProvider::load_or_create(&path).unwrap();

    let hash = digest(&SHA256, &fs::read(&path).unwrap());
    let expected = format!("local:{}", hex::encode(&hash.as_ref()[..8]));
    assert_eq!(provider.key_id(), expected);
}

#[test]
fn two_key_files_have_different_key_ids() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalKeyProvider::load_or_create(&dir.path().join("a.key")).unwrap();
    let second = LocalKeyProvider::load_or_create(&dir.path().join("b.key")).unwrap();
    assert_ne!(first.key_id(), second.key_id());
}

#[test]
fn fail_key_file_readable_by_group_or_others_is_refused_naming_the_file() {
    for mode in [0o640, 0o604, 0o660, 0o602, 0o644] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        write_key_file(&path, 32, mode);

        for result in [
            LocalKeyProvider::load(&path),
            LocalKeyProvider::load_or_create(&path),
        ] {
            let err = result.unwrap_err();
            assert_eq!(
                err,
                KeyError::InsecurePermissions {
                    path: path.clone(),
                    mode
                }
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!("chmod 600 {}", path.display())),
                "{message}"
            );
        }
        assert_eq!(mode_of(&path), mode, "a refused file must not be touched");
    }
}

#[test]
fn owner_only_modes_are_accepted() {
    for mode in [0o600, 0o400] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        write_key_file(&path, 32, mode);
        assert!(LocalKeyProvider::load(&path).is_ok(), "mode {mode:o}");
    }
}

#[test]
fn fail_key_file_of_wrong_length_is_refused_and_left_alone() {
    for len in [0, 31, 33, 64] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        write_key_file(&path, len, 0o600);

        let err = LocalKeyProvider::load_or_create(&path).unwrap_err();

        assert!(
            matches!(&err, KeyError::BadKeyFile { path: refused, .. } if refused == &path),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).unwrap().len(), len);
    }
}

#[test]
fn fail_load_never_creates_a_missing_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let err = LocalKeyProvider::load(&path).unwrap_err();
    assert!(
        matches!(&err, KeyError::Io(message) if message.contains("master.key")),
        "{err:?}"
    );
    assert!(!path.exists());
}

#[test]
fn fail_a_directory_is_not_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let err = LocalKeyProvider::load(dir.path()).unwrap_err();
    assert!(matches!(err, KeyError::BadKeyFile { .. }), "{err:?}");
}

#[test]
fn debug_shows_path_and_key_id_but_not_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let provider = LocalKeyProvider::load_or_create(&path).unwrap();
    let debug = format!("{provider:?}");
    assert!(debug.contains("master.key"), "{debug}");
    assert!(debug.contains(&provider.key_id()), "{debug}");
    let key_hex = hex::encode(fs::read(&path).unwrap());
    assert!(!debug.contains(&key_hex), "{debug}");
}

#[tokio::test]
async fn wrap_unwrap_round_trip_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let tenant_key = TenantKey::generate().unwrap();
    let context = ctx(7, 1);

    let wrapped = LocalKeyProvider::load_or_create(&path)
        .unwrap()
        .wrap(&tenant_key, &context)
        .await
        .unwrap();
    let reloaded = LocalKeyProvider::load(&path).unwrap();
    let unwrapped = reloaded.unwrap(&wrapped, &context).await.unwrap();

    assert_eq!(unwrapped.as_bytes(), tenant_key.as_bytes());
    assert_eq!(wrapped.len(), 1 + 12 + 32 + 16);
    let raw = tenant_key.as_bytes();
    assert!(!wrapped.windows(raw.len()).any(|window| window == raw));
}

#[tokio::test]
async fn fail_unwrap_with_another_master_key_or_context() {
    let provider = LocalKeyProvider::ephemeral().unwrap();
    let other = LocalKeyProvider::ephemeral().unwrap();
    let tenant_key = TenantKey::generate().unwrap();
    let wrapped = provider.wrap(&tenant_key, &ctx(1, 1)).await.unwrap();

    let wrong_master = other.unwrap(&wrapped, &ctx(1, 1)).await;
    let wrong_context = provider.unwrap(&wrapped, &ctx(2, 1)).await;

    assert!(matches!(wrong_master, Err(KeyError::UnwrapFailed)));
    assert!(matches!(wrong_context, Err(KeyError::UnwrapFailed)));
}

#[tokio::test]
async fn fail_any_flipped_byte_of_a_wrapped_tenant_key() {
    let provider = LocalKeyProvider::ephemeral().unwrap();
    let tenant_key = TenantKey::generate().unwrap();
    let wrapped = provider.wrap(&tenant_key, &ctx(5, 1)).await.unwrap();

    for position in 0..wrapped.len() {
        let mut tampered = wrapped.clone();
        tampered[position] ^= 0x01;
        let expected = if position == 0 {
            KeyError::BadBlob
        } else {
            KeyError::UnwrapFailed
        };
        let result = provider.unwrap(&tampered, &ctx(5, 1)).await;
        assert_eq!(result.err(), Some(expected), "byte {position}");
    }
}

#[tokio::test]
async fn fail_truncated_wrapped_tenant_key() {
    let provider = LocalKeyProvider::ephemeral().unwrap();
    let wrapped = provider
        .wrap(&TenantKey::generate().unwrap(), &ctx(5, 1))
        .await
        .unwrap();
    for len in [0, 1, 13, 28, wrapped.len() - 1] {
        let result = provider.unwrap(&wrapped[..len], &ctx(5, 1)).await;
        assert!(
            matches!(result, Err(KeyError::BadBlob | KeyError::UnwrapFailed)),
            "length {len}"
        );
    }
}
