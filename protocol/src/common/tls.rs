//! The server certificate shared by FTPES and HTTPS: the operator's PEM files, used as they
//! are, or a self-signed certificate generated into `<data_dir>/tls`, valid for
//! [`SELF_SIGNED_DAYS`] days from its generation and generated again at start once it is
//! within [`RENEW_DAYS`] days of its end (or past it, or unreadable).
//!
//! Only TLS 1.2 and 1.3 with the provider's default suites (ECDHE key exchange, AEAD
//! ciphers: AES-GCM and ChaCha20-Poly1305); no CBC, no RSA key exchange, no SHA-1 MACs. The
//! server's order of suites wins over the client's.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The clock is outside what a certificate can say.
    #[error("generating a self-signed certificate: the system clock is unusable: {0}")]
    Clock(String),
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
            let now = SystemTime::now();
            let renew = if files.cert_file.exists() && files.key_file.exists() {
                match validity(&files.cert_file) {
                    Some((start, end))
                        if end.duration_since(start).unwrap_or_default() > MAX_VALIDITY =>
                    {
                        // Older Coffer versions made certificates valid from 1975 to 4096.
                        Some("the one there claims a validity of more than a year")
                    }
                    Some((_, end)) if now.checked_add(RENEW_BEFORE).is_some_and(|l| end > l) => {
                        None
                    }
                    Some(_) => Some("the one there ends within 30 days (or has ended)"),
                    None => Some("the one there could not be read"),
                }
            } else {
                Some("there is none yet")
            };
            if let Some(why) = renew {
                generate_self_signed(dir, &files, now)?;
                tracing::info!(
                    cert = %files.cert_file.display(),
                    valid_days = SELF_SIGNED_DAYS,
                    "generated a self-signed TLS certificate because {why}; set tls.cert_file and tls.key_file for a real one"
                );
            }
            Ok(files)
        }
    }
}

/// How long a generated certificate is valid.
pub const SELF_SIGNED_DAYS: u64 = 365;
/// A generated certificate is made again at start when it ends within this many days.
pub const RENEW_DAYS: u64 = 30;
const RENEW_BEFORE: Duration = Duration::from_secs(RENEW_DAYS * 86_400);

/// A generated certificate valid for longer than this (CA/Browser Forum's 398 days) is made
/// again at start.
const MAX_VALIDITY: Duration = Duration::from_secs(398 * 86_400);

/// When the first certificate of the PEM file `path` starts and stops being valid; `None` when
/// the file holds no readable certificate.
pub fn validity(path: &Path) -> Option<(SystemTime, SystemTime)> {
    let der = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let at = |t: &x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).ok()?;
        UNIX_EPOCH.checked_add(Duration::from_secs(secs))
    };
    let v = cert.validity();
    Some((at(&v.not_before)?, at(&v.not_after)?))
}

/// When the first certificate of the PEM file `path` stops being valid.
pub fn not_after(path: &Path) -> Option<SystemTime> {
    validity(path).map(|(_, end)| end)
}

fn offset_time(t: SystemTime) -> Result<time::OffsetDateTime, TlsError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| TlsError::Clock(e.to_string()))?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|e| TlsError::Clock(e.to_string()))?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| TlsError::Clock(e.to_string()))
}

fn generate_self_signed(
    dir: &Path,
    files: &CertificateFiles,
    now: SystemTime,
) -> Result<(), TlsError> {
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
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
    // An hour back, for clients whose clock is a little behind.
    params.not_before = offset_time(now.checked_sub(Duration::from_secs(3600)).unwrap_or(now))?;
    let valid = Duration::from_secs(SELF_SIGNED_DAYS * 86_400);
    params.not_after = offset_time(
        now.checked_add(valid)
            .ok_or_else(|| TlsError::Clock("too far in the future".into()))?,
    )?;
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    // Key first and mode 0600 from creation: the key never exists readable by others.
    write_new(&files.key_file, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.cert_file, cert.pem().as_bytes(), 0o644)?;
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
/// default (strong) suites in the server's order, session resumption by id and by ticket,
/// ALPN `alpn`.
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
    // The provider's order puts the strongest suites first; a client's order does not win.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

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

    fn self_signed(dir: &Path) -> TlsConfig {
        TlsConfig {
            certificate: TlsCertificate::SelfSigned {
                dir: dir.to_path_buf(),
            },
        }
    }

    /// A certificate and key like an older Coffer generated, valid from `from` to `to`.
    fn write_old(dir: &Path, from: SystemTime, to: SystemTime) {
        fs::create_dir_all(dir).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = offset_time(from).unwrap();
        params.not_after = offset_time(to).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    }

    #[test]
    fn a_generated_certificate_is_valid_for_a_year_from_now() {
        let dir = tempfile::tempdir().unwrap();
        let files = certificate_files(&self_signed(&dir.path().join("tls"))).unwrap();
        let end = not_after(&files.cert_file).unwrap();
        let left = end.duration_since(SystemTime::now()).unwrap();
        assert!(left > DAY * 364 && left <= DAY * 365, "{left:?}");
    }

    #[test]
    fn a_generated_certificate_close_to_its_end_is_renewed_and_a_fresh_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (to, renewed) in [
            (now - DAY, true),        // ended yesterday
            (now + DAY * 29, true),   // ends within 30 days
            (now + DAY * 200, false), // still good
            (now + DAY * 3000, true), // claims years, as older versions made them
        ] {
            write_old(dir.path(), now - DAY * 100, to);
            let before = fs::read(dir.path().join("cert.pem")).unwrap();
            let files = certificate_files(&self_signed(dir.path())).unwrap();
            let after = fs::read(&files.cert_file).unwrap();
            assert_eq!(before != after, renewed, "ending {to:?}");
            let left = not_after(&files.cert_file)
                .unwrap()
                .duration_since(now)
                .unwrap();
            assert!(left > DAY * 199, "{left:?}");
            server_config(&files, &[]).unwrap();
        }
    }

    #[test]
    fn the_operators_certificate_is_used_as_is_even_when_it_ends_soon() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        write_old(dir.path(), now - DAY * 300, now + DAY * 2);
        let before = fs::read(dir.path().join("cert.pem")).unwrap();
        let cfg = TlsConfig {
            certificate: TlsCertificate::Files {
                cert_file: dir.path().join("cert.pem"),
                key_file: dir.path().join("key.pem"),
            },
        };
        let files = certificate_files(&cfg).unwrap();
        assert!(!files.self_signed);
        assert_eq!(fs::read(&files.cert_file).unwrap(), before);
        assert!(server_config(&files, &[]).unwrap().ignore_client_order);
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
