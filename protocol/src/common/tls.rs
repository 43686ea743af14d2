//! The server certificate shared by FTPES and HTTPS: the operator's PEM files, or a
//! self-signed certificate generated on first start into `<data_dir>/tls` and reused.
//!
//! Only TLS 1.2 and 1.3 with the provider's default suites (ECDHE key exchange, AEAD
//! ciphers: AES-GCM and ChaCha20-Poly1305); no CBC, no RSA key exchange, no SHA-1 MACs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_config::{TlsCertificate, TlsConfig};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate could not be loaded or made. The message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The PEM contents are not usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the fix.
        what: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate and key.
    #[error("tls: the certificate and key do not form a usable pair: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the PEM certificate chain and private key live, generated first when self-signed.
#[derive(Clone, Debug)]
pub struct CertificateFiles {
    /// The PEM certificate chain.
    pub cert_file: PathBuf,
    /// The PEM private key (mode 0600 when generated).
    pub key_file: PathBuf,
    /// Whether the certificate is Coffer's own self-signed one.
    pub self_signed: bool,
}

/// The certificate files of `cfg`, generating a self-signed pair on first use.
pub fn certificate_files(cfg: &TlsConfig) -> Result<CertificateFiles, TlsError> {
    match &cfg.certificate {
        TlsCertificate::Files {
            cert_file,
            key_file,
        } => Ok(CertificateFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            self_signed: false,
        }),
        TlsCertificate::SelfSigned { dir } => {
            let files = CertificateFiles {
                cert_file: dir.join("cert.pem"),
                key_file: dir.join("key.pem"),
                self_signed: true,
            };
            if !(files.cert_file.exists() && files.key_file.exists()) {
                generate_self_signed(dir, &files)?;
                tracing::info!(
                    cert = %files.cert_file.display(),
                    "generated a self-signed TLS certificate; set tls.cert_file and tls.key_file for a real one"
                );
            }
            Ok(files)
        }
    }
}

fn generate_self_signed(dir: &Path, files: &CertificateFiles) -> Result<(), TlsError> {
    let io = |path: &Path, what| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, what, source }
    };
    fs::create_dir_all(dir).map_err(io(dir, "creating the directory"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io(dir, "setting mode 0700"))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_owned());
        }
    }
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    // Key first and mode 0600 from creation: the key never exists readable by others.
    write_new(
        &files.key_file,
        made.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(&files.cert_file, made.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |what| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, what, source }
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err("creating"))?;
    f.write_all(bytes).map_err(err("writing"))?;
    f.sync_all().map_err(err("syncing"))?;
    fs::rename(&tmp, path).map_err(err("renaming into place"))?;
    Ok(())
}

/// The certificate chain and key of `files`, checked to be present.
pub fn load(
    files: &CertificateFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| pem_error(&files.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&files.cert_file, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: files.cert_file.clone(),
            what: "holds no PEM certificate (tls.cert_file must be a PEM certificate chain)".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::Pem {
        path: files.key_file.clone(),
        what: format!(
            "holds no usable PEM private key ({e}); tls.key_file must be a PKCS#8, PKCS#1 or SEC1 PEM key"
        ),
    })?;
    Ok((certs, key))
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Io {
            path: path.to_path_buf(),
            what: "reading",
            source,
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("is not valid PEM: {other:?}"),
        },
    }
}

/// A rustls server configuration for `files`: TLS 1.2 and 1.3, the aws-lc-rs provider's
/// default (strong) suites, session resumption by id and by ticket, ALPN `alpn`.
pub fn server_config(
    files: &CertificateFiles,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = load(files)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_generated_once_with_a_private_key_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TlsConfig {
            certificate: TlsCertificate::SelfSigned {
                dir: dir.path().join("tls"),
            },
        };
        let first = certificate_files(&cfg).unwrap();
        let mode = fs::metadata(&first.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key mode {mode:o}");
        let pem = fs::read(&first.cert_file).unwrap();
        let again = certificate_files(&cfg).unwrap();
        assert_eq!(pem, fs::read(&again.cert_file).unwrap(), "regenerated");
        server_config(&again, &[b"h2", b"http/1.1"]).unwrap();
    }

    #[test]
    fn a_key_file_without_a_key_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TlsConfig {
            certificate: TlsCertificate::SelfSigned {
                dir: dir.path().to_path_buf(),
            },
        };
        let good = certificate_files(&cfg).unwrap();
        let bad_key = dir.path().join("bad.pem");
        fs::write(&bad_key, "not a key\n").unwrap();
        let files = CertificateFiles {
            key_file: bad_key.clone(),
            ..good
        };
        let err = server_config(&files, &[]).unwrap_err().to_string();
        assert!(
            err.contains("bad.pem") && err.contains("tls.key_file"),
            "{err}"
        );
    }
}
