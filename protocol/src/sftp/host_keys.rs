//! SSH host keys: Ed25519 and RSA, generated into the host key directory on first start
//! (mode 0600) and reused afterwards, so clients keep trusting the server.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use tracing::info;

use super::error::SftpError;

/// The host key files, in the order they are offered.
const HOST_KEYS: [(&str, Algorithm); 2] = [
    ("ssh_host_ed25519_key", Algorithm::Ed25519),
    ("ssh_host_rsa_key", Algorithm::Rsa { hash: None }),
];

/// Loads the host keys from `dir`, generating any that are missing.
pub fn load_or_generate(dir: &Path) -> Result<Vec<PrivateKey>, SftpError> {
    std::fs::create_dir_all(dir).map_err(|e| SftpError::HostKey {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    HOST_KEYS
        .iter()
        .map(|(file, alg)| load_or_generate_one(&dir.join(file), alg.clone()))
        .collect()
}

fn load_or_generate_one(path: &Path, algorithm: Algorithm) -> Result<PrivateKey, SftpError> {
    let fail = |reason: String| SftpError::HostKey {
        path: path.to_owned(),
        reason,
    };
    if path.exists() {
        return PrivateKey::read_openssh_file(path).map_err(|e| fail(e.to_string()));
    }
    // RSA takes 1-3 s here; say so, since SFTP listens only once every host key exists.
    info!(path = %path.display(), "generating an SSH host key; SFTP listens once it is written");
    let key = PrivateKey::random(&mut rand::rng(), algorithm).map_err(|e| fail(e.to_string()))?;
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail(e.to_string()))?;
    info!(path = %path.display(), fingerprint = %key.public_key().fingerprint(Default::default()), "generated an SSH host key");
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn host_keys_are_generated_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path()).unwrap();
        assert_eq!(first.len(), 2);
        for (file, _) in HOST_KEYS {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let again = load_or_generate(dir.path()).unwrap();
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(
                a.public_key(),
                b.public_key(),
                "a restart must present the same host keys"
            );
        }
    }
}
