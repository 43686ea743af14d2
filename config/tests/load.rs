//! Layering: defaults < file < environment < overrides, and refusal of unknown names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_config::{Config, ConfigError, KeyConfig, Sources, StoreConfig, TlsCertificate, load};

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("coffer.toml");
    std::fs::write(&path, text).expect("write config file");
    path
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(&Sources {
        env: env(pairs),
        ..Sources::default()
    })
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// Every path the embedded default writes to, with its field name.
fn data_paths(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let StoreConfig::Local { path: primary } = &config.storage.primary else {
        panic!("default primary should be a local store");
    };
    let Some(StoreConfig::Local { path: replica }) = &config.storage.replica else {
        panic!("default replica should be a local store");
    };
    let KeyConfig::Local {
        path: primary_key, ..
    } = &config.keys.primary
    else {
        panic!("default primary key should be a local file");
    };
    let KeyConfig::Local {
        path: replica_key, ..
    } = &config.keys.replica
    else {
        panic!("default replica key should be a local file");
    };
    let TlsCertificate::SelfSigned { dir: tls_dir } = &config.tls.certificate else {
        panic!("default TLS should be self-signed");
    };
    let database = config
        .metadata
        .url
        .strip_prefix("sqlite://")
        .expect("default database is sqlite");
    vec![
        ("sftp.host_key_dir", config.sftp.host_key_dir.clone()),
        ("storage.spool_dir", config.storage.spool_dir.clone()),
        ("storage.primary.path", primary.clone()),
        ("storage.replica.path", replica.clone()),
        ("keys.primary.path", primary_key.clone()),
        ("keys.replica.path", replica_key.clone()),
        ("tls", tls_dir.clone()),
        ("metadata.url", PathBuf::from(database)),
    ]
}

#[test]
fn defaults_validate_and_put_every_path_under_data_dir() {
    let config = load(&Sources::default()).expect("defaults are valid");
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(config.data_dir, cwd.join("coffer-data"));
    for (field, path) in data_paths(&config) {
        assert!(
            path.starts_with(&config.data_dir) && path != config.data_dir,
            "{field} = {} is not inside data_dir",
            path.display()
        );
    }
    assert_eq!(config.admin.listen, addr("127.0.0.1:9090"));
    assert_eq!(config.sftp.listen, addr("0.0.0.0:2222"));
    assert_eq!(config.ftp.listen, addr("0.0.0.0:2121"));
    assert_eq!(config.https.listen, addr("0.0.0.0:8443"));
    assert_eq!(config.ftp.passive_ports, 50000..=50099);
    assert_eq!(config.ftp.implicit_listen, None);
    assert_eq!(config.ftp.passive_host, None);
    assert_eq!(config.storage.chunk_size, 65536);
    assert_eq!(config.auth.max_failures, 10);
    assert_eq!(config.auth.lockout, Duration::from_secs(900));
    assert_eq!(config.sftp.idle_timeout, Duration::from_secs(600));
    assert!(config.sftp.enabled && config.ftp.enabled && config.https.enabled);
    assert!(!config.node_name.is_empty());
}

#[test]
fn file_overrides_defaults_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(
        dir.path(),
        &format!(
            "data_dir = {:?}\n[sftp]\nlisten = \"127.0.0.1:2200\"\n[auth]\nlockout_secs = 60\n",
            dir.path().join("data")
        ),
    );
    let config = load(&Sources {
        file: Some(file),
        ..Sources::default()
    })
    .expect("valid file");
    assert_eq!(config.data_dir, dir.path().join("data"));
    assert_eq!(config.sftp.listen, addr("127.0.0.1:2200"));
    assert_eq!(config.auth.lockout, Duration::from_secs(60));
    assert_eq!(config.sftp.host_key_dir, dir.path().join("data/ssh"));
    assert_eq!(
        config.https.listen,
        addr("0.0.0.0:8443"),
        "untouched default"
    );
}

#[test]
fn environment_overrides_file_and_overrides_override_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(
        dir.path(),
        "[sftp]\nlisten = \"127.0.0.1:2200\"\n[ftp]\nlisten = \"127.0.0.1:2100\"\n[https]\nlisten = \"127.0.0.1:8400\"\n",
    );
    let sources = Sources {
        file: Some(file),
        env: env(&[
            ("COFFER_SFTP__LISTEN", "127.0.0.1:2201"),
            ("COFFER_FTP__LISTEN", "127.0.0.1:2101"),
        ]),
        overrides: env(&[("ftp.listen", "127.0.0.1:2102")]),
    };
    let config = load(&sources).expect("valid sources");
    assert_eq!(
        config.https.listen,
        addr("127.0.0.1:8400"),
        "file beats default"
    );
    assert_eq!(config.sftp.listen, addr("127.0.0.1:2201"), "env beats file");
    assert_eq!(
        config.ftp.listen,
        addr("127.0.0.1:2102"),
        "override beats env"
    );
}

#[test]
fn coffer_data_dir_moves_every_data_dir_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("elsewhere");
    let data_dir_text = data_dir.to_str().expect("utf-8 tempdir");
    let config = load_env(&[("COFFER_DATA_DIR", data_dir_text)]).expect("valid");
    assert_eq!(config.data_dir, data_dir);
    for (field, path) in data_paths(&config) {
        assert!(
            path.starts_with(&data_dir),
            "{field} = {} did not move",
            path.display()
        );
    }
}

#[test]
fn relative_data_dir_is_resolved_against_the_current_directory() {
    let config = load_env(&[("COFFER_DATA_DIR", "some/rel")]).expect("valid");
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(config.data_dir, cwd.join("some/rel"));
    assert!(
        config
            .metadata
            .url
            .starts_with(&format!("sqlite://{}", cwd.display()))
    );
}

#[test]
fn environment_values_are_typed_by_the_field() {
    let config = load_env(&[
        ("COFFER_SFTP__ENABLED", "false"),
        ("COFFER_STORAGE__CHUNK_SIZE", "4096"),
        ("COFFER_NODE_NAME", "1234"),
        ("COFFER_LOG__LEVEL", "true"),
    ])
    .expect("valid");
    assert!(!config.sftp.enabled);
    assert_eq!(config.storage.chunk_size, 4096);
    assert_eq!(
        config.node_name, "1234",
        "a numeric node name stays a string"
    );
    assert_eq!(config.log.level, "true");
}

#[test]
fn environment_value_of_the_wrong_type_names_the_variable() {
    let error = load_env(&[("COFFER_SFTP__ENABLED", "maybe")]).expect_err("not a bool");
    let message = error.to_string();
    assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
    assert!(message.contains("COFFER_SFTP__ENABLED"), "{message}");
}

#[test]
fn unknown_coffer_variable_is_refused_naming_it() {
    for name in [
        "COFFER_SFTP__LISTN",
        "COFFER_DATADIR",
        "COFFER_SFTP",
        "COFFER_SFTP____LISTEN",
    ] {
        let error = load_env(&[(name, "x")]).expect_err("typo must be refused");
        assert!(
            matches!(&error, ConfigError::UnknownEnv(found) if found == name),
            "{name}: {error:?}"
        );
        assert!(error.to_string().contains(name));
    }
}

#[test]
fn known_non_field_variables_and_foreign_variables_are_ignored() {
    let config = load_env(&[
        ("COFFER_CONFIG", "/etc/coffer.toml"),
        ("COFFER_LOG", "debug"),
        ("PATH", "/usr/bin"),
        ("COFFERX", "1"),
    ])
    .expect("ignored variables");
    assert_eq!(config, load(&Sources::default()).expect("defaults"));
}

#[test]
fn unknown_override_is_refused_naming_it() {
    let error = load(&Sources {
        overrides: env(&[("sftp.listen_address", "127.0.0.1:1")]),
        ..Sources::default()
    })
    .expect_err("unknown override");
    assert!(error.to_string().contains("sftp.listen_address"), "{error}");
}

#[test]
fn unknown_field_in_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[sftp]\nlisten_addr = \"0.0.0.0:22\"\n", "listen_addr"),
        ("colour = \"blue\"\n", "colour"),
        (
            "[storage.primary]\nkind = \"local\"\npath = \"/x\"\nbucket = \"b\"\n",
            "bucket",
        ),
        (
            "[storage.replica]\nkind = \"none\"\npath = \"/x\"\n",
            "path",
        ),
    ];
    for (text, field) in cases {
        let file = write_config(dir.path(), text);
        let error = load(&Sources {
            file: Some(file.clone()),
            ..Sources::default()
        })
        .expect_err("unknown field must be refused");
        let message = error.to_string();
        assert!(message.contains(field), "{field}: {message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
    }
}

#[test]
fn missing_file_is_a_read_error_naming_it() {
    let error = load(&Sources {
        file: Some(PathBuf::from("/nonexistent/coffer.toml")),
        ..Sources::default()
    })
    .expect_err("missing file");
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/coffer.toml"));
}

#[test]
fn replica_kind_none_from_environment_turns_replication_off() {
    let config = load_env(&[("COFFER_STORAGE__REPLICA__KIND", "none")]).expect("valid");
    assert_eq!(config.storage.replica, None);
}

#[test]
fn replica_kind_switched_back_to_local_takes_its_path_from_the_same_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(dir.path(), "[storage.replica]\nkind = \"none\"\n");
    let config = load(&Sources {
        file: Some(file),
        env: env(&[
            ("COFFER_STORAGE__REPLICA__PATH", "/srv/replica"),
            ("COFFER_STORAGE__REPLICA__KIND", "local"),
        ]),
        overrides: Vec::new(),
    })
    .expect("valid");
    assert_eq!(
        config.storage.replica,
        Some(StoreConfig::Local {
            path: PathBuf::from("/srv/replica")
        })
    );
}

#[test]
fn field_of_an_unselected_variant_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(dir.path(), "[storage.replica]\nkind = \"none\"\n");
    let error = load(&Sources {
        file: Some(file),
        env: env(&[("COFFER_STORAGE__REPLICA__PATH", "/srv/replica")]),
        overrides: Vec::new(),
    })
    .expect_err("replica is off");
    assert!(
        matches!(&error, ConfigError::UnknownEnv(name) if name == "COFFER_STORAGE__REPLICA__PATH"),
        "{error:?}"
    );
}

#[test]
fn unknown_store_kind_names_the_variable() {
    let error = load_env(&[("COFFER_STORAGE__REPLICA__KIND", "tape")]).expect_err("no such kind");
    let message = error.to_string();
    assert!(
        message.contains("COFFER_STORAGE__REPLICA__KIND"),
        "{message}"
    );
    assert!(message.contains("tape"), "{message}");
}

#[test]
fn primary_store_kind_none_is_refused_by_validation() {
    let error = load_env(&[("COFFER_STORAGE__PRIMARY__KIND", "none")]).expect_err("no primary");
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "storage.primary.kind"),
        "{error:?}"
    );
}
