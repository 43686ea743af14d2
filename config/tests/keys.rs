//! `[keys]`: local key files (with older ones and a KMS for customer keys), AWS KMS keys,
//! the tenant-key cache bound and the rotation policy; what loads and what is refused.

use coffer_config::{
    Config, ConfigError, KeyConfig, KmsConnectionConfig, S3Auth, S3SecretKey, Sources, load,
};

const SECRET: &str = "kms-secret-value-never-printed";

fn load_in(dir: &std::path::Path, text: &str) -> Result<Config, ConfigError> {
    let path = dir.join("coffer.toml");
    std::fs::write(&path, format!("data_dir = \"{}\"\n{text}", dir.display()))
        .expect("write config");
    load(&Sources {
        file: Some(path),
        ..Sources::default()
    })
}

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    load_in(dir.path(), text)
}

fn refused(text: &str) -> (String, String) {
    match load_toml(text) {
        Err(ConfigError::Invalid { field, message }) => (field, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn defaults_are_local_files_a_five_minute_cache_and_a_yearly_policy() {
    let config = load_toml("").expect("defaults load");
    for (key, name) in [
        (&config.keys.primary, "primary"),
        (&config.keys.replica, "replica"),
    ] {
        let KeyConfig::Local {
            path,
            previous_paths,
            kms,
        } = key
        else {
            panic!("default {name} key should be local: {key:?}");
        };
        assert!(path.ends_with(format!("keys/{name}.key")), "{path:?}");
        assert!(previous_paths.is_empty());
        assert_eq!(*kms, None);
        assert_eq!(key.kind(), "local");
    }
    assert_eq!(config.keys.cache_secs, 300);
    assert_eq!(config.keys.cache_ttl().as_secs(), 300);
    assert_eq!(config.keys.rotation.max_age_days, 365);
    assert!(!config.keys.rotation.automatic);
}

#[test]
fn an_existing_local_key_table_loads_unchanged() {
    let config = load_toml(
        "[keys.primary]\nkind = \"local\"\npath = \"/srv/keys/p.key\"\n\
         [keys.replica]\nkind = \"local\"\npath = \"/srv/keys/r.key\"\n",
    )
    .expect("loads");
    assert_eq!(
        config.keys.primary,
        KeyConfig::Local {
            path: "/srv/keys/p.key".into(),
            previous_paths: Vec::new(),
            kms: None,
        }
    );
}

#[test]
fn both_regions_on_aws_kms() {
    let config = load_toml(
        "[keys]\ncache_secs = 60\n[keys.rotation]\nmax_age_days = 90\n\
         [keys.primary]\nkind = \"aws-kms\"\n\
         key_id = \"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\n\
         region = \"eu-west-1\"\nendpoint = \"https://kms.eu-west-1.amazonaws.com/\"\n\
         [keys.replica]\nkind = \"aws-kms\"\nkey_id = \"alias/coffer-eu-central-1\"\n\
         region = \"eu-central-1\"\n",
    )
    .expect("loads");
    assert_eq!(
        config.keys.primary,
        KeyConfig::AwsKms {
            key_id: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                .into(),
            kms: KmsConnectionConfig {
                region: "eu-west-1".into(),
                endpoint: Some("https://kms.eu-west-1.amazonaws.com".into()),
                credentials: S3Auth::DefaultChain,
            },
        }
    );
    assert_eq!(config.keys.replica.kind(), "aws-kms");
    assert_eq!(
        config.keys.replica.kms().map(|k| k.region.as_str()),
        Some("eu-central-1")
    );
    assert_eq!(config.keys.cache_secs, 60);
    assert_eq!(config.keys.rotation.max_age_days, 90);
    assert!(!config.keys.rotation.automatic);
}

#[test]
fn automatic_rotation_loads_with_a_policy_and_is_refused_without_one() {
    let config =
        load_toml("[keys.rotation]\nautomatic = true\nmax_age_days = 30\n").expect("loads");
    assert!(config.keys.rotation.automatic);
    assert_eq!(config.keys.rotation.max_age_days, 30);
    let (field, message) = refused("[keys.rotation]\nautomatic = true\nmax_age_days = 0\n");
    assert_eq!(field, "keys.rotation.automatic");
    assert!(message.contains("max_age_days"), "{message}");
}

#[test]
fn a_local_region_with_older_files_and_a_kms_for_customer_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load_in(
        dir.path(),
        "[keys.primary]\nkind = \"local\"\npath = \"<data_dir>/keys/p2.key\"\n\
         previous_paths = [\"<data_dir>/keys/p1.key\"]\nkms_region = \"eu-west-1\"\n\
         kms_endpoint = \"http://127.0.0.1:4566\"\naccess_key_id = \"AKIDEXAMPLE\"\n\
         secret_access_key_file = \"kms.secret\"\n",
    )
    .expect("loads");
    let KeyConfig::Local {
        previous_paths,
        kms: Some(kms),
        ..
    } = &config.keys.primary
    else {
        panic!("expected a local key with a KMS: {:?}", config.keys.primary);
    };
    assert_eq!(previous_paths, &vec![dir.path().join("keys/p1.key")]);
    assert_eq!(kms.region, "eu-west-1");
    assert_eq!(kms.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    let S3Auth::Static {
        access_key_id,
        secret_access_key: S3SecretKey::File(file),
    } = &kms.credentials
    else {
        panic!("expected static keys from a file: {:?}", kms.credentials);
    };
    assert_eq!(access_key_id, "AKIDEXAMPLE");
    assert!(file.is_absolute(), "{file:?}");
}

#[test]
fn nonsense_is_refused_naming_the_field() {
    let cases = [
        (
            "[keys.primary]\nkind = \"aws-kms\"\nregion = \"eu-west-1\"\n",
            "keys.primary.key_id",
            "required for kind = \"aws-kms\"",
        ),
        (
            "[keys.replica]\nkind = \"aws-kms\"\nkey_id = \"alias/x\"\n",
            "keys.replica.region",
            "required for kind = \"aws-kms\"",
        ),
        (
            "[keys.primary]\nkind = \"aws-kms\"\nkey_id = \"alias/x\"\nregion = \"eu west\"\n",
            "keys.primary.region",
            "not a region",
        ),
        (
            "[keys.primary]\nkind = \"aws-kms\"\nkey_id = \"alias/x\"\nregion = \"eu-west-1\"\n\
             endpoint = \"kms.example\"\n",
            "keys.primary.endpoint",
            "not an endpoint URL",
        ),
        (
            "[keys.primary]\nkind = \"aws-kms\"\nkey_id = \"aws-kms:alias/x\"\nregion = \"eu-west-1\"\n",
            "keys.primary.key_id",
            "not a KMS key id",
        ),
        (
            "[keys.primary]\nkind = \"aws-kms\"\nkey_id = \"alias/x\"\nregion = \"eu-west-1\"\n\
             [keys.replica]\nkind = \"aws-kms\"\nkey_id = \"alias/x\"\nregion = \"eu-west-1\"\n",
            "keys.replica.key_id",
            "each region needs its own master key",
        ),
        (
            "[keys.primary]\nkind = \"aws-kms\"\nkey_id = \"alias/x\"\nregion = \"eu-west-1\"\n\
             access_key_id = \"AKID\"\n",
            "keys.primary.secret_access_key_file",
            "access_key_id is set",
        ),
        (
            "[keys.primary]\nkind = \"local\"\npath = \"/k/p.key\"\nkms_endpoint = \"http://127.0.0.1:1\"\n",
            "keys.primary.kms_region",
            "kms_endpoint is set",
        ),
        (
            "[keys.primary]\nkind = \"local\"\npath = \"/k/p.key\"\nprevious_paths = [\"/k/p.key\"]\n",
            "keys.primary.previous_paths[0]",
            "listed twice",
        ),
        ("[keys]\ncache_secs = 0\n", "keys.cache_secs", "1 to 86400"),
        (
            "[keys]\ncache_secs = 86401\n",
            "keys.cache_secs",
            "1 to 86400",
        ),
        (
            "[keys.rotation]\nmax_age_days = 36501\n",
            "keys.rotation.max_age_days",
            "out of range",
        ),
    ];
    for (text, field, fragment) in cases {
        let (got_field, message) = refused(text);
        assert_eq!(got_field, field, "for {text}");
        assert!(
            message.contains(fragment),
            "{field}: {message:?} should say {fragment:?}"
        );
    }
}

#[test]
fn an_unknown_kind_or_field_is_refused() {
    for text in [
        "[keys.primary]\nkind = \"vault\"\n",
        "[keys.primary]\nkind = \"aws-kms\"\nkey_id = \"alias/x\"\nregion = \"eu-west-1\"\npath = \"/k\"\n",
        "[keys.rotation]\nevery = 3\n",
    ] {
        assert!(
            matches!(load_toml(text), Err(ConfigError::Parse { .. })),
            "{text} should not parse"
        );
    }
}

#[test]
fn the_kms_secret_never_prints_and_the_dump_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load_in(
        dir.path(),
        &format!(
            "[keys.primary]\nkind = \"aws-kms\"\nkey_id = \"alias/p\"\nregion = \"eu-west-1\"\n\
             access_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"{SECRET}\"\n\
             [keys.replica]\nkind = \"local\"\npath = \"<data_dir>/r.key\"\n\
             previous_paths = [\"<data_dir>/r0.key\"]\nkms_region = \"eu-central-1\"\n"
        ),
    )
    .expect("loads");
    let dump = config.to_redacted_toml();
    assert!(!dump.contains(SECRET), "{dump}");
    assert!(!format!("{config:?}").contains(SECRET));
    assert!(dump.contains("alias/p"), "{dump}");
    // With the secret given as a file, the dump reloads to an equal configuration.
    let file = dir.path().join("kms.secret");
    let with_file = load_in(
        dir.path(),
        &format!(
            "[keys.primary]\nkind = \"aws-kms\"\nkey_id = \"alias/p\"\nregion = \"eu-west-1\"\n\
             access_key_id = \"AKIDEXAMPLE\"\nsecret_access_key_file = \"{}\"\n\
             [keys.replica]\nkind = \"local\"\npath = \"<data_dir>/r.key\"\n\
             previous_paths = [\"<data_dir>/r0.key\"]\nkms_region = \"eu-central-1\"\n\
             [keys.rotation]\nmax_age_days = 0\n",
            file.display()
        ),
    )
    .expect("loads");
    let dump_path = dir.path().join("effective.toml");
    std::fs::write(&dump_path, with_file.to_redacted_toml()).expect("write dump");
    let again = load(&Sources {
        file: Some(dump_path),
        ..Sources::default()
    })
    .expect("the dump loads");
    assert_eq!(again.keys, with_file.keys);
}

#[test]
fn environment_variables_switch_a_region_to_kms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(&Sources {
        env: vec![
            ("COFFER_DATA_DIR".into(), dir.path().display().to_string()),
            ("COFFER_KEYS__PRIMARY__KIND".into(), "aws-kms".into()),
            (
                "COFFER_KEYS__PRIMARY__KEY_ID".into(),
                "alias/from-env".into(),
            ),
            ("COFFER_KEYS__PRIMARY__REGION".into(), "eu-west-1".into()),
            ("COFFER_KEYS__CACHE_SECS".into(), "120".into()),
        ],
        ..Sources::default()
    })
    .expect("loads");
    assert_eq!(config.keys.primary.kind(), "aws-kms");
    assert_eq!(config.keys.cache_secs, 120);
}
