//! `kind = "s3"` object stores: what loads, what is refused, and that secrets never print.

use std::path::PathBuf;

use coffer_config::{
    Config, ConfigError, S3Auth, S3SecretKey, S3StoreConfig, Sources, StoreConfig, load,
};

const SECRET: &str = "s3-secret-value-never-printed";

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coffer.toml");
    std::fs::write(
        &path,
        format!("data_dir = \"{}\"\n{text}", dir.path().display()),
    )
    .expect("write config");
    load(&Sources {
        file: Some(path),
        ..Sources::default()
    })
}

fn primary_s3(config: &Config) -> &S3StoreConfig {
    match &config.storage.primary {
        StoreConfig::S3(s3) => s3,
        other => panic!("expected an S3 primary, got {other:?}"),
    }
}

fn refused_field(text: &str) -> String {
    match load_toml(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn minimal_s3_primary_uses_the_credential_chain_and_default_part_size() {
    let config = load_toml("[storage.primary]\nkind = \"s3\"\nbucket = \"coffer-eu-west-1\"\n")
        .expect("valid");
    let s3 = primary_s3(&config);
    assert_eq!(s3.bucket, "coffer-eu-west-1");
    assert_eq!(s3.region, "us-east-1");
    assert_eq!(s3.endpoint, None);
    assert_eq!(s3.credentials, S3Auth::DefaultChain);
    assert_eq!(s3.part_size, 256 * (65_536 + 28));
    assert!(
        !config.storage.gc_in_serve,
        "an S3 primary is collected by `coffer gc`, not by serve"
    );
}

#[test]
fn local_primary_collects_garbage_in_serve_unless_told_otherwise() {
    assert!(load_toml("").expect("defaults").storage.gc_in_serve);
    let off = load_toml("[storage]\ngc_in_serve = false\n").expect("valid");
    assert!(!off.storage.gc_in_serve);
}

#[test]
fn static_keys_from_a_file_resolve_to_an_absolute_path() {
    let config = load_toml(
        "[storage.primary]\nkind = \"s3\"\nbucket = \"b-1\"\nregion = \"eu-west-1\"\n\
         endpoint = \"http://127.0.0.1:9000/\"\npath_style = true\naccess_key_id = \"AKIDEXAMPLE\"\n\
         secret_access_key_file = \"<data_dir>/s3-secret\"\npart_size = 5310684\n",
    )
    .expect("valid");
    let s3 = primary_s3(&config);
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(s3.path_style);
    assert_eq!(s3.part_size, 81 * 65_564);
    let S3Auth::Static {
        access_key_id,
        secret_access_key: S3SecretKey::File(path),
    } = &s3.credentials
    else {
        panic!("expected a secret file: {:?}", s3.credentials);
    };
    assert_eq!(access_key_id, "AKIDEXAMPLE");
    assert_eq!(path, &config.data_dir.join("s3-secret"));
    assert!(PathBuf::from(path).is_absolute());
}

#[test]
fn inline_secret_is_redacted_in_the_dump_and_debug_output() {
    let config = load_toml(&format!(
        "[storage.replica]\nkind = \"s3\"\nbucket = \"replica-b\"\naccess_key_id = \"AKID\"\n\
         secret_access_key = \"{SECRET}\"\n"
    ))
    .expect("valid");
    let dump = config.to_redacted_toml();
    assert!(!dump.contains(SECRET), "{dump}");
    assert!(
        dump.contains("secret_access_key = \"<redacted>\""),
        "{dump}"
    );
    assert!(!format!("{config:?}").contains(SECRET));
}

#[test]
fn s3_dump_without_inline_secret_reloads_to_an_equal_config() {
    let config = load_toml(
        "[storage.primary]\nkind = \"s3\"\nbucket = \"b-1\"\naccess_key_id = \"AKID\"\n\
         secret_access_key_file = \"/etc/coffer/s3\"\n[storage.replica]\nkind = \"s3\"\n\
         bucket = \"b-2\"\nregion = \"eu-central-1\"\n",
    )
    .expect("valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("effective.toml");
    std::fs::write(&dump, config.to_redacted_toml()).expect("write dump");
    let reloaded = load(&Sources {
        file: Some(dump),
        ..Sources::default()
    })
    .expect("the dump loads");
    assert_eq!(reloaded.storage, config.storage);
}

#[test]
fn bad_s3_settings_name_the_field() {
    let base = "[storage.primary]\nkind = \"s3\"\n";
    for (extra, field) in [
        ("bucket = \"Bad_Bucket\"\n", "storage.primary.bucket"),
        ("bucket = \"ab\"\n", "storage.primary.bucket"),
        (
            "bucket = \"b-1\"\nendpoint = \"s3.example.com\"\n",
            "storage.primary.endpoint",
        ),
        (
            "bucket = \"b-1\"\naccess_key_id = \"AKID\"\n",
            "storage.primary.secret_access_key_file",
        ),
        (
            "bucket = \"b-1\"\nsecret_access_key = \"x\"\n",
            "storage.primary.access_key_id",
        ),
        (
            "bucket = \"b-1\"\naccess_key_id = \"A\"\nsecret_access_key = \"x\"\nsecret_access_key_file = \"/f\"\n",
            "storage.primary.secret_access_key",
        ),
        (
            "bucket = \"b-1\"\npart_size = 1048576\n",
            "storage.primary.part_size",
        ),
        (
            "bucket = \"b-1\"\npart_size = 8388608\n",
            "storage.primary.part_size",
        ),
    ] {
        assert_eq!(refused_field(&format!("{base}{extra}")), field, "{extra}");
    }
}

#[test]
fn replica_in_the_primary_bucket_is_refused() {
    let field = refused_field(
        "[storage.primary]\nkind = \"s3\"\nbucket = \"same\"\n\
         [storage.replica]\nkind = \"s3\"\nbucket = \"same\"\n",
    );
    assert_eq!(field, "storage.replica.bucket");
}

#[test]
fn test_harness_variables_are_not_configuration_fields() {
    let env = [
        ("COFFER_TEST_S3_ENDPOINT", "http://127.0.0.1:1"),
        ("COFFER_SKIP_S3", "1"),
    ]
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .to_vec();
    let config = load(&Sources {
        env,
        ..Sources::default()
    })
    .expect("harness variables are ignored");
    assert!(matches!(config.storage.primary, StoreConfig::Local { .. }));
    let refused = load(&Sources {
        env: vec![("COFFER_TESTING".to_owned(), "1".to_owned())],
        ..Sources::default()
    });
    assert!(
        matches!(refused, Err(ConfigError::UnknownEnv(_))),
        "{refused:?}"
    );
}
