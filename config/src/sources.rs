//! Where configuration comes from and how the layers are merged:
//! built-in defaults < TOML file < `COFFER_*` environment < command-line overrides.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::config::Config;
use crate::error::ConfigError;
use crate::raw::RawConfig;

/// Prefix of the environment variables that set configuration fields.
pub const ENV_PREFIX: &str = "COFFER_";

/// `COFFER_*` variables that are read elsewhere (the config file path, the
/// log filter of the CLI, the MySQL password) and so are not configuration fields.
pub const IGNORED_ENV_VARS: &[&str] = &["COFFER_CONFIG", "COFFER_LOG", "COFFER_METADATA_PASSWORD"];

/// Prefixes of variables read by test harnesses (e.g. `COFFER_TEST_S3_ENDPOINT` set by
/// `integration/start-s3`, `COFFER_SKIP_S3=1`), never configuration fields.
pub const TEST_ENV_PREFIXES: &[&str] = &["COFFER_TEST_", "COFFER_SKIP_"];

/// Separates nested tables in environment variable names.
const ENV_TABLE_SEPARATOR: &str = "__";

/// The inputs of [`load`], gathered so tests can supply them directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// The TOML file, if any; without one, the defaults stand.
    pub file: Option<PathBuf>,
    /// Environment variables as `(name, value)`; names without the
    /// `COFFER_` prefix are skipped.
    pub env: Vec<(String, String)>,
    /// Command-line overrides as `(dotted field path, value)`,
    /// e.g. `("sftp.listen", "127.0.0.1:2222")`; later ones win.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// Sources with this process's `COFFER_*` environment variables.
    ///
    /// A name or value that is not valid UTF-8 is converted lossily, so a
    /// mangled name is still refused as unknown rather than ignored.
    #[must_use]
    pub fn from_process(file: Option<PathBuf>, overrides: Vec<(String, String)>) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.to_string_lossy();
                name.starts_with(ENV_PREFIX)
                    .then(|| (name.into_owned(), value.to_string_lossy().into_owned()))
            })
            .collect();
        Self {
            file,
            env,
            overrides,
        }
    }
}

/// Loads, merges and validates the configuration.
///
/// Values from the environment and overrides are taken verbatim for string
/// fields, and otherwise parsed as a TOML value (numbers, booleans), falling
/// back to a string.
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Parse`] for an unreadable or
/// malformed file, [`ConfigError::UnknownEnv`] / [`ConfigError::UnknownOverride`]
/// for names that match no field, [`ConfigError::Parse`] naming the variable
/// for a value of the wrong type, and [`ConfigError::Invalid`] from validation.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let base = match &sources.file {
        Some(path) => read_file(path)?,
        None => RawConfig::default(),
    };
    let mut assignments = env_assignments(&sources.env)?;
    assignments.extend(override_assignments(&sources.overrides)?);
    apply_assignments(base, &assignments)?.validate()
}

/// Reads one TOML file; fields it leaves out take their defaults.
///
/// # Errors
/// [`ConfigError::Read`] if unreadable, [`ConfigError::Parse`] (with line
/// and column, naming the field) if malformed.
pub fn read_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        origin: format!("config file {}", path.display()),
        message: error.to_string().trim_end().to_owned(),
    })
}

/// Where one assignment came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    Env(String),
    Override(String),
}

impl Origin {
    fn unknown(&self) -> ConfigError {
        match self {
            Self::Env(name) => ConfigError::UnknownEnv(name.clone()),
            Self::Override(key) => ConfigError::UnknownOverride(key.clone()),
        }
    }

    fn parse_error(&self, error: &toml::de::Error) -> ConfigError {
        ConfigError::Parse {
            origin: self.to_string(),
            message: one_line(error),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Override(key) => write!(f, "command-line override {key}"),
        }
    }
}

/// One field set from the environment or the command line.
#[derive(Debug, Clone)]
struct Assignment {
    path: Vec<String>,
    value: String,
    origin: Origin,
}

impl Assignment {
    /// A `kind` selects an enum variant, so it is applied before the
    /// variant's own fields and may replace the table beneath it.
    fn sets_kind(&self) -> bool {
        self.path.len() >= 2 && self.path.last().is_some_and(|key| key == "kind")
    }

    fn parent(&self) -> &[String] {
        self.path.split_last().map_or(&[], |(_, parent)| parent)
    }
}

fn env_assignments(env: &[(String, String)]) -> Result<Vec<Assignment>, ConfigError> {
    let mut assignments = Vec::new();
    for (name, value) in env {
        let Some(field) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if IGNORED_ENV_VARS.contains(&name.as_str())
            || TEST_ENV_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        {
            continue;
        }
        let path: Vec<String> = field
            .split(ENV_TABLE_SEPARATOR)
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::UnknownEnv(name.clone()));
        }
        assignments.push(Assignment {
            path,
            value: value.clone(),
            origin: Origin::Env(name.clone()),
        });
    }
    Ok(assignments)
}

fn override_assignments(overrides: &[(String, String)]) -> Result<Vec<Assignment>, ConfigError> {
    overrides
        .iter()
        .map(|(key, value)| {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::UnknownOverride(key.clone()));
            }
            Ok(Assignment {
                path,
                value: value.clone(),
                origin: Origin::Override(key.clone()),
            })
        })
        .collect()
}

/// Applies assignments on top of `base`, refusing names that match no field
/// and blaming a value of the wrong type on the variable that supplied it.
fn apply_assignments(
    base: RawConfig,
    assignments: &[Assignment],
) -> Result<RawConfig, ConfigError> {
    if assignments.is_empty() {
        return Ok(base);
    }
    let base_table = Table::try_from(&base).map_err(|error| ConfigError::Parse {
        origin: "configuration file and defaults".to_owned(),
        message: error.to_string(),
    })?;
    refuse_unknown_fields(&base_table, assignments)?;
    merge(&base_table, assignments.iter())
        .try_into()
        .map_err(|error| blame(&base_table, assignments, &error))
}

/// A name is a field if it is one in the configuration so far, or if it
/// lies under a table whose `kind` the same sources change (the new
/// variant's fields are then checked by deserialization).
fn refuse_unknown_fields(base: &Table, assignments: &[Assignment]) -> Result<(), ConfigError> {
    let switched: Vec<&[String]> = assignments
        .iter()
        .filter(|a| a.sets_kind())
        .map(Assignment::parent)
        .collect();
    for assignment in assignments {
        let under_switched = switched
            .iter()
            .any(|table| assignment.path.len() > table.len() && assignment.path.starts_with(table));
        if !under_switched && !is_settable_field(base, &assignment.path) {
            return Err(assignment.origin.unknown());
        }
    }
    Ok(())
}

/// Whether `path` leads through tables to a value that is not a table.
fn is_settable_field(table: &Table, path: &[String]) -> bool {
    lookup(table, path).is_some_and(|value| !value.is_table())
}

fn lookup<'t>(table: &'t Table, path: &[String]) -> Option<&'t Value> {
    let (last, parents) = path.split_last()?;
    let mut current = table;
    for key in parents {
        current = current.get(key)?.as_table()?;
    }
    current.get(last)
}

/// `base` with the assignments applied: `kind`s first, then the fields.
fn merge<'a>(base: &Table, assignments: impl Iterator<Item = &'a Assignment> + Clone) -> Table {
    let mut merged = base.clone();
    for assignment in assignments.clone().filter(|a| a.sets_kind()) {
        set_kind(&mut merged, assignment);
    }
    for assignment in assignments.filter(|a| !a.sets_kind()) {
        let value = typed_value(base, assignment);
        set_value(&mut merged, &assignment.path, value);
    }
    merged
}

/// Changing `kind` drops the old variant's fields, which the new variant
/// would refuse as unknown.
fn set_kind(table: &mut Table, assignment: &Assignment) {
    edit_table_at(table, assignment.parent(), |parent| {
        let unchanged = parent
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|kind| kind == assignment.value);
        if !unchanged {
            parent.clear();
            parent.insert("kind".to_owned(), Value::String(assignment.value.clone()));
        }
    });
}

/// String fields take the text verbatim (a node name `1234` stays a string);
/// other fields parse it as a TOML value, falling back to a string so the
/// type error names the field.
fn typed_value(base: &Table, assignment: &Assignment) -> Value {
    let text = &assignment.value;
    match lookup(base, &assignment.path) {
        Some(Value::String(_)) => Value::String(text.clone()),
        _ => text
            .parse::<Value>()
            .unwrap_or_else(|_| Value::String(text.clone())),
    }
}

fn set_value(table: &mut Table, path: &[String], value: Value) {
    if let Some((last, parents)) = path.split_last() {
        edit_table_at(table, parents, |parent| {
            parent.insert(last.clone(), value);
        });
    }
}

/// Runs `edit` on the table at `path`, creating tables (or replacing
/// non-tables) along the way.
fn edit_table_at<F: FnOnce(&mut Table)>(table: &mut Table, path: &[String], edit: F) {
    let Some((first, rest)) = path.split_first() else {
        edit(table);
        return;
    };
    if !table.get(first).is_some_and(Value::is_table) {
        table.insert(first.clone(), Value::Table(Table::new()));
    }
    if let Some(Value::Table(inner)) = table.get_mut(first) {
        edit_table_at(inner, rest, edit);
    }
}

/// Finds which assignment made deserialization fail: each field with all
/// `kind` changes applied, then each `kind` change alone.
fn blame(base: &Table, assignments: &[Assignment], error: &toml::de::Error) -> ConfigError {
    let kinds: Vec<&Assignment> = assignments.iter().filter(|a| a.sets_kind()).collect();
    let fields = assignments.iter().filter(|a| !a.sets_kind());
    for field in fields {
        let trial = merge(base, kinds.iter().copied().chain(std::iter::once(field)));
        if let Err(error) = trial.try_into::<RawConfig>() {
            return field.origin.parse_error(&error);
        }
    }
    for kind in &kinds {
        if let Err(error) = merge(base, std::iter::once(*kind)).try_into::<RawConfig>() {
            return kind.origin.parse_error(&error);
        }
    }
    ConfigError::Parse {
        origin: "environment variables and overrides together".to_owned(),
        message: one_line(error),
    }
}

/// Errors from values (not files) carry no source excerpt; keep them on one
/// line with the field path, e.g. "... expected a boolean in `sftp.enabled`".
fn one_line(error: &toml::de::Error) -> String {
    error.to_string().trim_end().replace('\n', " ")
}
