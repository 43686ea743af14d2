//! docs/CONFIG.md stays true: every field is documented and the examples load.

use coffer_config::{Config, RawConfig, Sources, load};

const DOC: &str = include_str!("../../docs/CONFIG.md");

/// The body of the first fenced block with this info string.
fn fenced_block(info: &str) -> &'static str {
    let opening = format!("```{info}\n");
    let start = DOC.find(&opening).expect("block present") + opening.len();
    let length = DOC[start..].find("```").expect("block closed");
    &DOC[start..start + length]
}

fn leaf_paths(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value.as_table() {
            Some(inner) => leaf_paths(&path, inner, out),
            None => out.push(path),
        }
    }
}

#[test]
fn every_field_has_a_row_in_the_docs() {
    let defaults = toml::Table::try_from(RawConfig::default()).expect("serialize defaults");
    let mut paths = Vec::new();
    leaf_paths("", &defaults, &mut paths);
    assert!(paths.len() > 30, "walked the whole config: {paths:?}");
    let missing: Vec<_> = paths
        .iter()
        .filter(|path| !DOC.contains(&format!("| `{path}` |")))
        .collect();
    assert!(missing.is_empty(), "undocumented fields: {missing:?}");
}

fn load_example_file() -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coffer.toml");
    std::fs::write(&path, fenced_block("toml")).expect("write example");
    load(&Sources {
        file: Some(path),
        ..Sources::default()
    })
    .expect("the documented example must load")
}

#[test]
fn documented_examples_load_and_agree() {
    let from_file = load_example_file();
    assert_eq!(from_file.storage.replica, None);
    assert_eq!(from_file.auth.max_failures, 5);
    let env = fenced_block("sh")
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let from_env = load(&Sources {
        env,
        ..Sources::default()
    })
    .expect("the documented environment must load");
    assert_eq!(from_env.data_dir, from_file.data_dir);
    assert_eq!(from_env.sftp.listen, from_file.sftp.listen);
    assert_eq!(from_env.storage.replica, None);
    assert_eq!(from_env.auth.max_failures, 5);
}
