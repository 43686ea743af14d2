//! Each validation rule refuses a bad value with an error naming the field.

use coffer_config::{ConfigError, KeepPartial, RawConfig, RawKey, RawStore};

/// Validates the defaults after `change`, expecting a refusal of `field`;
/// returns the Display text.
fn refused(field: &str, change: impl FnOnce(&mut RawConfig)) -> String {
    let mut raw = RawConfig::default();
    change(&mut raw);
    let error = raw.validate().expect_err("must be refused");
    let message = error.to_string();
    assert!(
        matches!(&error, ConfigError::Invalid { field: found, .. } if found == field),
        "expected {field}, got {error:?}"
    );
    assert!(message.starts_with(&format!("{field}: ")), "{message}");
    message
}

fn accepted(change: impl FnOnce(&mut RawConfig)) {
    let mut raw = RawConfig::default();
    change(&mut raw);
    if let Err(error) = raw.validate() {
        panic!("should be accepted: {error}");
    }
}

#[test]
fn bad_listen_addresses_name_the_field_and_an_example() {
    let message = refused("sftp.listen", |raw| raw.sftp.listen = "0.0.0.0:22x".into());
    assert_eq!(
        message,
        "sftp.listen: \"0.0.0.0:22x\" is not a socket address (expected host:port, \
         e.g. \"0.0.0.0:2222\"; the host must be an IP address)"
    );
    refused("admin.listen", |raw| {
        raw.admin.listen = "localhost:9090".into();
    });
    refused("ftp.listen", |raw| raw.ftp.listen = "2121".into());
    refused("https.listen", |raw| raw.https.listen = String::new());
    refused("ftp.implicit_listen", |raw| {
        raw.ftp.implicit_listen = "0.0.0.0".into();
    });
}

#[test]
fn disabled_listeners_still_need_parseable_addresses() {
    refused("https.listen", |raw| {
        raw.https.enabled = false;
        raw.https.listen = "nope".into();
    });
}

#[test]
fn enabled_listeners_sharing_a_port_are_refused() {
    let message = refused("https.listen", |raw| {
        raw.https.listen = "0.0.0.0:2222".into();
    });
    assert!(message.contains("sftp.listen"), "{message}");
    let message = refused("sftp.listen", |raw| raw.sftp.listen = "0.0.0.0:9090".into());
    assert!(
        message.contains("admin.listen"),
        "unspecified address overlaps loopback: {message}"
    );
    refused("ftp.implicit_listen", |raw| {
        raw.ftp.implicit_listen = "127.0.0.1:2121".into();
    });
}

#[test]
fn listeners_may_share_a_port_when_not_overlapping_or_disabled() {
    accepted(|raw| {
        raw.sftp.enabled = false;
        raw.https.listen = "0.0.0.0:2222".into();
    });
    accepted(|raw| {
        raw.admin.listen = "127.0.0.1:8443".into();
        raw.https.listen = "127.0.0.2:8443".into();
    });
    accepted(|raw| {
        for listen in [
            &mut raw.admin.listen,
            &mut raw.sftp.listen,
            &mut raw.ftp.listen,
            &mut raw.https.listen,
        ] {
            *listen = "127.0.0.1:0".into();
        }
    });
}

#[test]
fn passive_ports_must_be_an_unprivileged_ordered_range() {
    let message = refused("ftp.passive_ports", |raw| {
        raw.ftp.passive_ports = "50000".into();
    });
    assert!(message.contains("FIRST-LAST"), "{message}");
    refused("ftp.passive_ports", |raw| {
        raw.ftp.passive_ports = "a-b".into();
    });
    refused("ftp.passive_ports", |raw| {
        raw.ftp.passive_ports = "50000-70000".into();
    });
    let message = refused("ftp.passive_ports", |raw| {
        raw.ftp.passive_ports = "1000-2000".into();
    });
    assert!(message.contains("1024"), "{message}");
    let message = refused("ftp.passive_ports", |raw| {
        raw.ftp.passive_ports = "50099-50000".into();
    });
    assert!(
        message.contains("\"50000-50099\""),
        "suggests the fix: {message}"
    );
    accepted(|raw| raw.ftp.passive_ports = "1024-1024".into());
}

#[test]
fn ftp_listen_port_inside_the_passive_range_is_refused() {
    let message = refused("ftp.passive_ports", |raw| {
        raw.ftp.listen = "0.0.0.0:50010".into();
    });
    assert!(message.contains("ftp.listen"), "{message}");
    accepted(|raw| {
        raw.ftp.enabled = false;
        raw.ftp.listen = "0.0.0.0:50010".into();
    });
}

#[test]
fn chunk_size_bounds_are_enforced() {
    refused("storage.chunk_size", |raw| raw.storage.chunk_size = 4095);
    refused("storage.chunk_size", |raw| {
        raw.storage.chunk_size = 16_777_217
    });
    accepted(|raw| raw.storage.chunk_size = 4096);
    accepted(|raw| raw.storage.chunk_size = 16_777_216);
}

#[test]
fn buffered_write_limit_below_one_chunk_is_refused() {
    refused("storage.max_buffered_write_bytes", |raw| {
        raw.storage.max_buffered_write_bytes = 65535;
    });
    accepted(|raw| raw.storage.max_buffered_write_bytes = 65536);
}

#[test]
fn metadata_url_is_sqlite_or_mysql_without_a_password() {
    accepted(|raw| raw.metadata.url = "mysql://coffer@db.example:3306/coffer".into());
    accepted(|raw| raw.metadata.url = "mysql://coffer@10.0.0.5/coffer_prod".into());
    let message = refused("metadata.url", |raw| {
        raw.metadata.url = "mysql://coffer:hunter2@db.example/coffer".into();
    });
    assert!(message.contains("password_file"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    for bad in [
        "mysql://db.example/coffer",
        "mysql://coffer@db.example",
        "mysql://coffer@db.example:99999/coffer",
        "mysql://coffer@/coffer",
        "mysql://coffer@db.example/coffer?ssl-mode=disabled",
    ] {
        refused("metadata.url", |raw| raw.metadata.url = bad.into());
    }
    let message = refused("metadata.url", |raw| {
        raw.metadata.url = "postgres://u:secret-pw@db/coffer".into();
    });
    assert!(!message.contains("secret-pw"), "{message}");
    refused("metadata.url", |raw| raw.metadata.url = "sqlite://".into());
}

#[test]
fn metadata_tls_pool_and_timeout_are_checked() {
    let message = refused("metadata.tls", |raw| raw.metadata.tls = "verify".into());
    assert!(message.contains("verify-full"), "{message}");
    refused("metadata.pool_size", |raw| raw.metadata.pool_size = 0);
    refused("metadata.connect_timeout_secs", |raw| {
        raw.metadata.connect_timeout_secs = 0;
    });
    let mut raw = RawConfig::default();
    raw.metadata.url = "mysql://coffer@db.example/coffer".into();
    raw.metadata.tls = "verify-ca".into();
    raw.metadata.ca_file = "<data_dir>/rds-ca.pem".into();
    raw.metadata.password_file = "/etc/coffer/db-password".into();
    let config = raw.validate().expect("valid");
    assert_eq!(config.metadata.tls, coffer_config::DatabaseTls::VerifyCa);
    assert!(config.metadata.is_mysql());
    assert!(
        config
            .metadata
            .ca_file
            .as_ref()
            .is_some_and(|p| p.is_absolute() && p.ends_with("rds-ca.pem"))
    );
    assert_eq!(
        config.metadata.password_file.as_deref(),
        Some(std::path::Path::new("/etc/coffer/db-password"))
    );
}

#[test]
fn metadata_password_comes_from_a_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db-password");
    std::fs::write(&path, "s3cret\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut raw = RawConfig::default();
    raw.metadata.password_file = path.to_str().expect("utf-8").into();
    let config = raw.validate().expect("valid");
    assert!(
        config.metadata.password().is_err(),
        "a world-readable file is refused"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let password = config.metadata.password().expect("readable").expect("set");
    assert_eq!(password.expose(), "s3cret");
}

#[test]
fn sqlite_url_keeps_its_options_and_becomes_absolute() {
    let mut raw = RawConfig::default();
    raw.metadata.url = "sqlite://rel/meta.db?mode=rwc".into();
    let config = raw.validate().expect("valid");
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(
        config.metadata.url,
        format!("sqlite://{}?mode=rwc", cwd.join("rel/meta.db").display())
    );
}

#[test]
fn empty_data_dir_is_refused() {
    refused("data_dir", |raw| raw.data_dir = String::new());
    refused("data_dir", |raw| raw.data_dir = "<data_dir>/x".into());
}

#[test]
fn auth_numbers_must_be_positive() {
    refused("auth.max_failures", |raw| raw.auth.max_failures = 0);
    refused("auth.failure_window_secs", |raw| {
        raw.auth.failure_window_secs = 0
    });
    refused("auth.lockout_secs", |raw| raw.auth.lockout_secs = 0);
}

#[test]
fn timeouts_and_session_limits_must_be_positive() {
    refused("sftp.max_sessions", |raw| raw.sftp.max_sessions = 0);
    refused("sftp.idle_timeout_secs", |raw| {
        raw.sftp.idle_timeout_secs = 0
    });
    refused("ftp.idle_timeout_secs", |raw| raw.ftp.idle_timeout_secs = 0);
    refused("https.session_idle_secs", |raw| {
        raw.https.session_idle_secs = 0
    });
}

#[test]
fn log_format_must_be_text_or_json() {
    let message = refused("log.format", |raw| raw.log.format = "xml".into());
    assert!(message.contains("\"json\""), "{message}");
    refused("log.level", |raw| raw.log.level = " ".into());
}

#[test]
fn both_regions_sharing_a_master_key_file_is_refused() {
    refused("keys.replica.path", |raw| {
        raw.keys.replica = RawKey::local("<data_dir>/keys/primary.key");
    });
}

#[test]
fn primary_and_replica_store_sharing_a_directory_is_refused() {
    refused("storage.replica.path", |raw| {
        raw.storage.replica = RawStore::Local {
            path: "<data_dir>/store/primary".into(),
        };
    });
    refused("storage.replica.path", |raw| {
        raw.storage.replica = RawStore::Local {
            path: "<data_dir>/store/primary/replica".into(),
        };
    });
}

#[test]
fn primary_store_cannot_be_none() {
    let message = refused("storage.primary.kind", |raw| {
        raw.storage.primary = RawStore::None {}
    });
    assert!(message.contains("kind = \"local\""), "{message}");
    accepted(|raw| raw.storage.replica = RawStore::None {});
}

#[test]
fn tls_needs_both_files_or_neither() {
    refused("tls.key_file", |raw| {
        raw.tls.cert_file = "/etc/coffer/cert.pem".into();
    });
    refused("tls.cert_file", |raw| {
        raw.tls.key_file = "/etc/coffer/key.pem".into();
    });
}

#[test]
fn empty_paths_are_refused() {
    refused("sftp.host_key_dir", |raw| {
        raw.sftp.host_key_dir = String::new()
    });
    refused("storage.spool_dir", |raw| {
        raw.storage.spool_dir = String::new()
    });
    refused("storage.primary.path", |raw| {
        raw.storage.primary = RawStore::Local {
            path: String::new(),
        };
    });
}

#[test]
fn node_name_and_passive_host_must_be_well_formed() {
    refused("node_name", |raw| raw.node_name = "../spool".into());
    refused("node_name", |raw| raw.node_name = String::new());
    refused("ftp.passive_host", |raw| {
        raw.ftp.passive_host = "bad host!".into();
    });
    accepted(|raw| raw.ftp.passive_host = "ftp.example.com".into());
    accepted(|raw| raw.ftp.passive_host = "203.0.113.7".into());
}

#[test]
fn mysql_metadata_settings_survive_the_effective_config_dump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut raw = RawConfig {
        data_dir: dir.path().to_str().expect("utf-8").into(),
        ..RawConfig::default()
    };
    raw.metadata.url = "mysql://coffer@db.example:3307/coffer".into();
    raw.metadata.tls = "require".into();
    raw.metadata.ca_file = "<data_dir>/ca.pem".into();
    raw.metadata.password_file = "<data_dir>/db-password".into();
    raw.metadata.pool_size = 3;
    raw.metadata.connect_timeout_secs = 4;
    raw.metadata.max_retries = 0;
    raw.metadata.migrate_on_start = false;
    let config = raw.validate().expect("valid");
    let dump = config.to_redacted_toml();
    let path = dir.path().join("effective.toml");
    std::fs::write(&path, &dump).expect("write");
    let again = coffer_config::load(&coffer_config::Sources {
        file: Some(path),
        ..coffer_config::Sources::default()
    })
    .expect("the dump loads");
    assert_eq!(again.metadata, config.metadata);
    assert_eq!(again.metadata.tls, coffer_config::DatabaseTls::Require);
    assert!(!again.metadata.migrate_on_start);
}

#[test]
fn inline_threshold_is_bounded_and_named() {
    let message = refused("uploads.inline_max_bytes", |raw| {
        raw.uploads.inline_max_bytes = 1024 * 1024 + 1
    });
    assert!(message.contains("1 MiB"), "{message}");
    let mut raw = RawConfig::default();
    raw.uploads.inline_max_bytes = 0;
    assert_eq!(raw.validate().expect("valid").uploads.inline_max_bytes, 0);
    let config = RawConfig::default().validate().expect("valid");
    assert_eq!(config.uploads.inline_max_bytes, 16 * 1024);
}

#[test]
fn upload_policy_and_pre_auth_limits_are_checked() {
    let message = refused("uploads.keep_partial", |raw| {
        raw.uploads.keep_partial = "always".into()
    });
    assert!(message.contains("\"new-files\""), "{message}");
    refused("limits.pre_auth_connections", |raw| {
        raw.limits.pre_auth_connections = 0
    });
    refused("limits.pre_auth_per_address", |raw| {
        raw.limits.pre_auth_per_address = 0
    });
    refused("limits.pre_auth_per_address", |raw| {
        raw.limits.pre_auth_connections = 10;
        raw.limits.pre_auth_per_address = 11;
    });
    refused("limits.login_grace_secs", |raw| {
        raw.limits.login_grace_secs = 0
    });
    let message = refused("uploads.min_free_percent", |raw| {
        raw.uploads.min_free_percent = 100
    });
    assert!(message.contains("0 to 90"), "{message}");
}

#[test]
fn the_free_space_floor_defaults_to_a_gibibyte_or_one_percent() {
    let config = RawConfig::default().validate().expect("valid");
    assert_eq!(config.uploads.min_free_bytes, 1024 * 1024 * 1024);
    assert_eq!(config.uploads.min_free_percent, 1);
    let mut raw = RawConfig::default();
    raw.uploads.min_free_bytes = 0;
    raw.uploads.min_free_percent = 0;
    let config = raw.validate().expect("0 and 0 turn the check off");
    assert_eq!(config.uploads.min_free_bytes, 0);
}

#[test]
fn the_old_sftp_switch_still_means_keep_nothing() {
    let mut raw = RawConfig::default();
    raw.sftp.keep_partial_uploads = false;
    let config = raw.validate().expect("valid");
    assert_eq!(config.uploads.keep_partial, KeepPartial::Never);
    let config = RawConfig::default().validate().expect("valid");
    assert_eq!(config.uploads.keep_partial, KeepPartial::NewFiles);
}
