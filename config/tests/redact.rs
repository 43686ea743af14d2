//! The effective-config dump reloads to the same config; secrets never print.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use coffer_config::{Config, ConfigError, Secret, Sources, load, read_secret_file};

fn reload(config: &Config, dir: &Path) -> Config {
    let path = dir.join("effective.toml");
    std::fs::write(&path, config.to_redacted_toml()).expect("write dump");
    load(&Sources {
        file: Some(path),
        ..Sources::default()
    })
    .expect("the dump must load again")
}

fn overrides(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn default_config_dump_reloads_to_an_equal_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(&Sources::default()).expect("defaults");
    assert_eq!(reload(&config, dir.path()), config);
}

#[test]
fn non_default_config_dump_reloads_to_an_equal_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(&Sources {
        overrides: overrides(&[
            ("data_dir", dir.path().join("d").to_str().expect("utf-8")),
            ("node_name", "node-7"),
            ("log.format", "json"),
            ("log.level", "coffer=debug,info"),
            ("sftp.enabled", "false"),
            ("ftp.passive_ports", "40000-40010"),
            ("ftp.passive_host", "ftp.example.com"),
            ("ftp.implicit_listen", "0.0.0.0:9990"),
            ("ftp.proxy_protocol", "true"),
            ("tls.cert_file", "/etc/coffer/cert.pem"),
            ("tls.key_file", "/etc/coffer/key.pem"),
            ("storage.chunk_size", "4096"),
            ("storage.replica.kind", "none"),
            ("metadata.url", "sqlite://<data_dir>/m.db?mode=rwc"),
            ("auth.lockout_secs", "5"),
        ]),
        ..Sources::default()
    })
    .expect("valid overrides");
    assert_eq!(config.storage.replica, None);
    assert_eq!(reload(&config, dir.path()), config);
}

#[test]
fn dump_is_independent_of_the_directory_it_is_loaded_from() {
    let config = load(&Sources::default()).expect("defaults");
    let dump = config.to_redacted_toml();
    assert!(
        !dump.contains("<data_dir>"),
        "placeholders are resolved:\n{dump}"
    );
    assert!(
        dump.contains(&format!(
            "data_dir = {:?}",
            config.data_dir.to_str().expect("utf-8")
        )),
        "{dump}"
    );
}

#[test]
fn secret_debug_never_shows_the_value() {
    let secret = Secret::new("hunter2-very-secret".to_owned());
    assert_eq!(format!("{secret:?}"), "<redacted>");
    assert_eq!(format!("{:?}", Some(&secret)), "Some(<redacted>)");
    assert_eq!(secret.expose(), "hunter2-very-secret");
}

fn secret_file(dir: &Path, contents: &str, mode: u32) -> PathBuf {
    let path = dir.join("secret");
    std::fs::write(&path, contents).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn secret_file_readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in [0o644, 0o640, 0o604] {
        let path = secret_file(dir.path(), "s3cr3t\n", mode);
        let error = read_secret_file("storage.primary.secret_access_key_file", &path)
            .expect_err("shared secret file");
        let message = error.to_string();
        assert!(
            message.starts_with("storage.primary.secret_access_key_file: "),
            "{message}"
        );
        assert!(message.contains("chmod 600"), "{message}");
        assert!(!message.contains("s3cr3t"), "{message}");
    }
}

#[test]
fn private_secret_file_is_read_without_its_trailing_newline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = secret_file(dir.path(), "s3cr3t\n", 0o600);
    let secret = read_secret_file("field", &path).expect("private file");
    assert_eq!(secret.expose(), "s3cr3t");
    let path = secret_file(dir.path(), "two words\r\n", 0o400);
    assert_eq!(
        read_secret_file("field", &path).expect("read").expose(),
        "two words"
    );
}

#[test]
fn missing_or_empty_secret_file_names_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = read_secret_file("metadata.password_file", &dir.path().join("absent"))
        .expect_err("missing");
    assert!(matches!(error, ConfigError::SecretFile { .. }), "{error:?}");
    assert!(error.to_string().starts_with("metadata.password_file: "));
    let path = secret_file(dir.path(), "\n", 0o600);
    let error = read_secret_file("metadata.password_file", &path).expect_err("empty");
    assert!(error.to_string().contains("empty"), "{error}");
}
