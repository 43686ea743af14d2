//! The core through the real `coffer` binary: first start, configuration, users, files, and
//! the invariants (plaintext canary, tamper, isolation, hostile paths) end to end.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, Env, http_get};

// ---- helpers ----------------------------------------------------------------------------

/// Password used for every test user (long enough for the 8-character rule).
const PASSWORD: &str = "correct horse battery";

/// Runs `coffer --config <env> ARGS` with extra environment variables.
fn coffer_with_env(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Output {
    harness::coffer_command()
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Standard error as text.
fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the command failed with exactly one line on stderr containing every `needle`;
/// returns that line.
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    let err = stderr_of(out);
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line on stderr, got:\n{err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
    err
}

/// Runs a `coffer` subcommand that must fail; returns its one stderr line.
fn refused(env: &Env, args: &[&str], needles: &[&str]) -> String {
    assert_refused(&env.coffer(args, ""), needles)
}

/// One `files ls` line: kind (`d` or `-`), size, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    kind: char,
    size: u64,
    name: String,
}

/// Parses `files ls` output: `K SIZE(right-aligned) YYYY-MM-DD HH:MM:SS NAME`.
fn parse_ls(stdout: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = stdout
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let kind = line.chars().next().unwrap();
            let (size, rest) = line[2..].trim_start().split_once(' ').unwrap();
            // "YYYY-MM-DD HH:MM:SS " is 20 bytes; the name is everything after it, verbatim.
            Entry {
                kind,
                size: size.parse().unwrap(),
                name: rest[20..].to_owned(),
            }
        })
        .collect();
    entries.sort();
    entries
}

/// `files ls PATH` as `user`, parsed.
fn ls(env: &Env, path: &str, user: &str) -> Vec<Entry> {
    parse_ls(&env.ok(&["files", "ls", path, "--user", user], ""))
}

/// Names only, sorted.
fn names(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| e.name.clone()).collect()
}

/// Writes `data` to a local file in the env's scratch area and uploads it to `remote`.
fn put(env: &Env, user: &str, remote: &str, data: &[u8]) -> String {
    let local = scratch(env).join(format!("up-{}", harness::sha256(remote.as_bytes())));
    std::fs::write(&local, data).unwrap();
    let out = env.ok(
        &[
            "files",
            "put",
            local.to_str().unwrap(),
            remote,
            "--user",
            user,
        ],
        "",
    );
    std::fs::remove_file(&local).unwrap();
    out
}

/// Downloads `remote` and returns its bytes.
fn get(env: &Env, user: &str, remote: &str) -> Vec<u8> {
    let local = scratch(env).join(format!("down-{}", harness::sha256(remote.as_bytes())));
    env.ok(
        &[
            "files",
            "get",
            remote,
            local.to_str().unwrap(),
            "--user",
            user,
        ],
        "",
    );
    let data = std::fs::read(&local).unwrap();
    std::fs::remove_file(&local).unwrap();
    data
}

/// A folder outside the data directory for local files.
fn scratch(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("scratch");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every entry (file or folder) in `dir`, by name.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Objects of a local store: 32-hex file name → size, ignoring the `.tmp` folder.
fn objects(store: &Path) -> BTreeMap<String, u64> {
    harness::walk(store)
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == ".tmp"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()),
                "odd object name {name}"
            );
            (name, p.metadata().unwrap().len())
        })
        .collect()
}

fn primary(env: &Env) -> PathBuf {
    env.data_dir().join("store/primary")
}

fn replica(env: &Env) -> PathBuf {
    env.data_dir().join("store/replica")
}

/// The path of the one object `action` added to the primary store.
fn new_object(env: &Env, action: impl FnOnce()) -> PathBuf {
    let before = objects(&primary(env));
    action();
    let added: Vec<PathBuf> = harness::walk(&primary(env))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !p.components().any(|c| c.as_os_str() == ".tmp") && !before.contains_key(name.as_ref())
        })
        .collect();
    assert_eq!(
        added.len(),
        1,
        "expected exactly one new object, got {added:?}"
    );
    added.into_iter().next().unwrap()
}

/// Asserts `files get` fails with an integrity error and leaves nothing in the output folder.
fn assert_get_integrity_error(env: &Env, user: &str, remote: &str) {
    let out_dir = env.dir.path().join("tamper-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let local = out_dir.join("restored.bin");
    let out = env.coffer(
        &[
            "files",
            "get",
            remote,
            local.to_str().unwrap(),
            "--user",
            user,
        ],
        "",
    );
    assert_refused(&out, &["integrity"]);
    assert!(
        dir_names(&out_dir).is_empty(),
        "get left files behind: {:?}",
        dir_names(&out_dir)
    );
}

/// Polls `cond` every 100 ms until it holds or `secs` pass.
fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// Waits up to `secs` for `child` to exit; kills it if it does not. Returns its output.
fn wait_output(mut child: Child, secs: u64) -> (bool, Output) {
    let exited = eventually(secs, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    (exited, child.wait_with_output().unwrap())
}

fn sigterm(child: &Child) {
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---- 1. first start ---------------------------------------------------------------------

#[test]
fn first_start_creates_the_data_dir_with_private_keys_and_answers_health_checks() {
    let env = Env::new("");
    let data = env.data_dir();
    assert!(!data.exists());
    let server = env.serve();

    assert_eq!(mode(&data), 0o700, "data dir must be private");
    assert!(data.join("meta.db").is_file(), "meta.db missing");
    let mut keys = Vec::new();
    for name in ["primary.key", "replica.key"] {
        let key = data.join("keys").join(name);
        assert_eq!(mode(&key), 0o600, "{name} mode");
        let bytes = std::fs::read(&key).unwrap();
        assert_eq!(bytes.len(), 32, "{name} length");
        assert_ne!(bytes, [0u8; 32], "{name} is all zero");
        keys.push(bytes);
    }
    assert_ne!(
        keys[0], keys[1],
        "primary and replica regions share a master key"
    );
    for dir in ["store/primary", "store/replica", "spool"] {
        assert!(data.join(dir).is_dir(), "{dir} missing");
    }

    let (code, body) = http_get(server.admin, "/healthz").unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = http_get(server.admin, "/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["metadata"], true, "{body}");
    assert_eq!(ready["primary_store"], true, "{body}");

    let asked = Instant::now();
    let (clean, log) = server.stop();
    assert!(clean, "SIGTERM must give exit status 0:\n{log}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        asked.elapsed()
    );
    assert!(log.contains("stopped"), "log lacks \"stopped\":\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "a log written to a file must not hold terminal colour codes:\n{log}"
    );
}

#[test]
fn serve_runs_with_only_a_data_dir_flag_and_environment() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("nested/coffer-data");
    let port = harness::free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = scratch.path().join("serve.log");
    let child = harness::coffer_command()
        .arg("--data-dir")
        .arg(&data)
        .arg("serve")
        .env_clear()
        .env("COFFER_ADMIN__LISTEN", &listen)
        .env("COFFER_SFTP__ENABLED", "false")
        .env("COFFER_FTP__ENABLED", "false")
        .env("COFFER_HTTPS__ENABLED", "false")
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let admin = listen.parse().unwrap();
    let healthy = eventually(20, || {
        http_get(admin, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    sigterm(&child);
    let (exited, out) = wait_output(child, 10);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(healthy, "never healthy:\n{log}");
    assert!(
        exited && out.status.success(),
        "did not stop cleanly:\n{log}"
    );
    assert_eq!(mode(&data.join("keys/primary.key")), 0o600);
    assert!(data.join("meta.db").is_file());
    assert!(
        !scratch.path().join("coffer-data").exists(),
        "--data-dir was ignored for the default"
    );
}

// ---- 2. master key permissions ----------------------------------------------------------

#[test]
fn a_group_readable_master_key_stops_serve_and_files_with_the_chmod_fix() {
    let env = Env::new("");
    env.ok(&["tenant", "list"], ""); // creates the keys
    for name in ["primary.key", "replica.key"] {
        let key = env.data_dir().join("keys").join(name);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let shown = key.display().to_string();

        let child = harness::coffer_command()
            .arg("--config")
            .arg(&env.config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (exited, out) = wait_output(child, 15);
        assert!(exited, "serve kept running with a {name} of mode 0644");
        assert_refused(&out, &[&shown, "chmod 600"]);

        refused(
            &env,
            &["files", "ls", "--user", "nobody"],
            &[&shown, "chmod 600"],
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    env.ok(&["tenant", "list"], "");
}

// ---- 3. configuration -------------------------------------------------------------------

#[test]
fn config_check_prints_an_effective_config_that_checks_again() {
    let env = Env::new("");
    let first = env.ok(&["config", "check", env.config.to_str().unwrap()], "");
    let parsed: toml::Table = toml::from_str(&first).expect("config check must print TOML");
    assert_eq!(
        parsed["data_dir"].as_str().unwrap(),
        env.data_dir().to_str().unwrap()
    );
    assert_eq!(
        parsed["admin"]["listen"].as_str().unwrap(),
        format!("127.0.0.1:{}", env.ports.admin)
    );
    assert_eq!(parsed["storage"]["chunk_size"].as_integer(), Some(65536));
    // Defaults the file left out are spelled out, with <data_dir> resolved.
    let replica = parsed["storage"]["replica"]["path"].as_str().unwrap();
    assert_eq!(
        replica,
        env.data_dir().join("store/replica").to_str().unwrap()
    );

    let effective = env.dir.path().join("effective.toml");
    std::fs::write(&effective, &first).unwrap();
    let second = env.ok(&["config", "check", effective.to_str().unwrap()], "");
    assert_eq!(first, second, "the printed config is not a fixed point");
    assert!(
        !env.data_dir().exists(),
        "config check must not create the data dir"
    );
}

#[test]
fn config_check_refuses_an_unknown_field_in_one_line_naming_it() {
    let env = Env::new("");
    let bad = env.dir.path().join("typo.toml");
    std::fs::write(&bad, "[sftp]\nlisten_adress = \"0.0.0.0:22\"\n").unwrap();
    refused(
        &env,
        &["config", "check", bad.to_str().unwrap()],
        &["listen_adress"],
    );
}

#[test]
fn config_check_refuses_a_bad_listen_address_naming_the_field() {
    let env = Env::new("");
    let bad = env.dir.path().join("addr.toml");
    std::fs::write(&bad, "[admin]\nlisten = \"localhost:99999\"\n").unwrap();
    refused(
        &env,
        &["config", "check", bad.to_str().unwrap()],
        &["admin.listen", "localhost:99999"],
    );
}

#[test]
fn an_unknown_coffer_environment_variable_is_refused_by_name() {
    let env = Env::new("");
    let out = coffer_with_env(
        &env,
        &[("COFFER_SFTP__LISTN", "127.0.0.1:1")],
        &["tenant", "list"],
    );
    assert_refused(&out, &["COFFER_SFTP__LISTN"]);
    let out = coffer_with_env(
        &env,
        &[("COFFER_SFTP__LISTN", "127.0.0.1:1")],
        &["config", "check"],
    );
    assert_refused(&out, &["COFFER_SFTP__LISTN"]);
    assert!(
        !env.data_dir().exists(),
        "a refused config must not touch the data dir"
    );
}

// ---- 4. users ---------------------------------------------------------------------------

/// The `user list` line of `name`, if any.
fn user_line(env: &Env, name: &str) -> Option<String> {
    env.ok(&["user", "list"], "")
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .map(str::to_owned)
}

/// Every Argon2id hash string stored in the metadata database files (db, WAL).
fn stored_password_hashes(env: &Env) -> Vec<String> {
    let mut found = Vec::new();
    for file in harness::walk(&env.data_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("meta.db"))
    {
        let data = std::fs::read(&file).unwrap();
        let needle = b"$argon2id$";
        let mut i = 0;
        while let Some(pos) = data[i..].windows(needle.len()).position(|w| w == needle) {
            let start = i + pos;
            let end = data[start..]
                .iter()
                .position(|b| !b.is_ascii_graphic())
                .map_or(data.len(), |n| start + n);
            found.push(String::from_utf8_lossy(&data[start..end]).into_owned());
            i = end;
        }
    }
    found
}

#[test]
fn user_lifecycle_add_list_passwd_disable_remove() {
    let env = Env::new("");
    env.add_user("acme", "alice", PASSWORD);
    let key = env.dir.path().join("bob_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bob@test", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(keygen.success());
    let pubkey = key.with_extension("pub");
    env.ok(
        &[
            "user",
            "add",
            "bob",
            "--tenant",
            "acme",
            "--ssh-key",
            pubkey.to_str().unwrap(),
        ],
        "",
    );

    let alice = user_line(&env, "alice").expect("alice listed");
    assert!(
        alice.contains("tenant=acme")
            && alice.contains("password=yes")
            && alice.contains("enabled"),
        "{alice}"
    );
    let bob = user_line(&env, "bob").expect("bob listed");
    assert!(
        bob.contains("tenant=acme") && bob.contains("password=no") && bob.contains("ssh_keys=1"),
        "{bob}"
    );

    let before = stored_password_hashes(&env);
    assert!(
        !before.is_empty(),
        "alice's password hash not found in the database"
    );
    let out = env.ok(
        &["user", "passwd", "alice", "--password-stdin"],
        "another good password\n",
    );
    assert!(out.contains("password changed"), "{out}");
    let after = stored_password_hashes(&env);
    assert!(
        after.iter().any(|h| !before.contains(h)),
        "passwd stored no new hash"
    );

    env.ok(&["user", "disable", "alice"], "");
    assert!(user_line(&env, "alice").unwrap().ends_with("disabled"));
    put(
        &env,
        "alice",
        "/operator.txt",
        b"operators still reach a disabled user's files",
    );
    assert_eq!(
        get(&env, "alice", "/operator.txt"),
        b"operators still reach a disabled user's files"
    );

    env.ok(&["user", "remove", "bob"], "");
    assert!(
        user_line(&env, "bob").is_none(),
        "bob still listed after remove"
    );
    refused(&env, &["files", "ls", "--user", "bob"], &["no such user"]);
    // The tenant's files stay with the tenant.
    assert_eq!(names(&ls(&env, "/", "alice")), ["operator.txt"]);
}

#[test]
fn a_duplicate_user_is_refused_and_the_first_one_is_kept() {
    let env = Env::new("");
    env.add_user("acme", "alice", PASSWORD);
    let out = env.coffer(
        &[
            "user",
            "add",
            "alice",
            "--tenant",
            "other",
            "--password-stdin",
        ],
        "different password\n",
    );
    assert_refused(&out, &["alice", "already exists"]);
    let listed: Vec<String> = env
        .ok(&["user", "list"], "")
        .lines()
        .filter(|l| l.starts_with("alice\t"))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].contains("tenant=acme"), "{}", listed[0]);
}

#[test]
fn a_password_shorter_than_eight_characters_is_refused() {
    let env = Env::new("");
    let out = env.coffer(&["user", "add", "shorty", "--password-stdin"], "1234567\n");
    assert_refused(&out, &["too short", "8"]);
    assert!(
        user_line(&env, "shorty").is_none(),
        "a refused user was created"
    );
    env.add_user("default", "longer", PASSWORD);
    let out = env.coffer(&["user", "passwd", "longer", "--password-stdin"], "short\n");
    assert_refused(&out, &["too short"]);
}

#[test]
fn a_list_read_user_cannot_upload() {
    let env = Env::new("");
    env.add_user("acme", "writer", PASSWORD);
    put(&env, "writer", "/existing.txt", b"already here");
    env.ok(
        &[
            "user",
            "add",
            "reader",
            "--tenant",
            "acme",
            "--perms",
            "list,read",
            "--password-stdin",
        ],
        "reader password\n",
    );
    let local = scratch(&env).join("upload.txt");
    std::fs::write(&local, b"should not land").unwrap();
    for remote in ["/new.txt", "/existing.txt"] {
        refused(
            &env,
            &[
                "files",
                "put",
                local.to_str().unwrap(),
                remote,
                "--user",
                "reader",
            ],
            &["permission denied"],
        );
    }
    assert_eq!(names(&ls(&env, "/", "reader")), ["existing.txt"]);
    assert_eq!(get(&env, "reader", "/existing.txt"), b"already here");
}

// ---- 5. files round trip ----------------------------------------------------------------

#[test]
fn files_round_trip_at_chunk_boundaries_with_identical_sha256() {
    let env = Env::new("");
    env.add_user("acme", "u", PASSWORD);
    let sizes = [0usize, 1, 65535, 65536, 65537, 10 * 1024 * 1024];
    let mut expected = Vec::new();
    for (seed, size) in sizes.iter().enumerate() {
        let data = harness::bytes(*size, seed as u64 + 1);
        let name = format!("size-{size}.bin");
        let out = put(&env, "u", &format!("/{name}"), &data);
        assert!(out.contains(&format!("stored {size} bytes")), "{out}");
        expected.push(Entry {
            kind: '-',
            size: *size as u64,
            name: name.clone(),
        });
        let back = get(&env, "u", &format!("/{name}"));
        assert_eq!(back.len(), *size);
        assert_eq!(
            harness::sha256(&back),
            harness::sha256(&data),
            "{name} came back different"
        );
    }
    expected.sort();
    assert_eq!(ls(&env, "/", "u"), expected);
}

#[test]
fn awkward_names_are_listed_exactly_as_written() {
    let env = Env::new("");
    env.add_user("acme", "u", PASSWORD);
    let long = "é".repeat(127) + "a";
    assert_eq!(long.len(), 255);
    let awkward = [
        "&+-é\" .txt",
        "🦀 crab 🎉.bin",
        "two  spaces and a trailing one ",
        long.as_str(),
    ];
    for (i, name) in awkward.iter().enumerate() {
        put(
            &env,
            "u",
            &format!("/{name}"),
            &harness::bytes(100 + i, i as u64),
        );
    }
    let mut expected: Vec<Entry> = awkward
        .iter()
        .enumerate()
        .map(|(i, n)| Entry {
            kind: '-',
            size: 100 + i as u64,
            name: (*n).to_owned(),
        })
        .collect();
    expected.sort();
    assert_eq!(ls(&env, "/", "u"), expected);
    for (i, name) in awkward.iter().enumerate() {
        assert_eq!(
            get(&env, "u", &format!("/{name}")),
            harness::bytes(100 + i, i as u64),
            "{name}"
        );
    }
}

#[test]
fn mkdir_mv_and_rm_reshape_the_tree() {
    let env = Env::new("");
    env.add_user("acme", "u", PASSWORD);
    env.ok(&["files", "mkdir", "/reports/2024 Q1", "--user", "u"], "");
    assert_eq!(
        ls(&env, "/", "u"),
        [Entry {
            kind: 'd',
            size: 0,
            name: "reports".into()
        }]
    );
    put(&env, "u", "/reports/2024 Q1/draft.txt", b"numbers");

    env.ok(
        &[
            "files",
            "mv",
            "/reports/2024 Q1/draft.txt",
            "/reports/final é.txt",
            "--user",
            "u",
        ],
        "",
    );
    assert!(ls(&env, "/reports/2024 Q1", "u").is_empty());
    assert_eq!(get(&env, "u", "/reports/final é.txt"), b"numbers");

    // A folder moves with everything in it.
    put(&env, "u", "/reports/2024 Q1/inner.txt", b"inner");
    env.ok(
        &["files", "mv", "/reports/2024 Q1", "/archive", "--user", "u"],
        "",
    );
    assert_eq!(names(&ls(&env, "/", "u")), ["archive", "reports"]);
    assert_eq!(get(&env, "u", "/archive/inner.txt"), b"inner");

    // mv does not overwrite; rm of a non-empty folder is refused.
    refused(
        &env,
        &[
            "files",
            "mv",
            "/reports/final é.txt",
            "/archive/inner.txt",
            "--user",
            "u",
        ],
        &["already exists"],
    );
    refused(
        &env,
        &["files", "rm", "/archive", "--user", "u"],
        &["not empty"],
    );

    env.ok(&["files", "rm", "/archive/inner.txt", "--user", "u"], "");
    env.ok(&["files", "rm", "/archive", "--user", "u"], "");
    assert_eq!(names(&ls(&env, "/", "u")), ["reports"]);
    refused(
        &env,
        &[
            "files",
            "get",
            "/archive/inner.txt",
            "/dev/null",
            "--user",
            "u",
        ],
        &["no such file"],
    );
}

// ---- 6. invariant: plaintext canary -----------------------------------------------------

#[test]
fn canary_name_folder_and_content_never_reach_disk_logs_or_cli_output() {
    let env = Env::new("");
    let server = env.serve();
    env.add_user("acme", "u", PASSWORD);
    let marker = harness::marker();
    let mut content = format!("first line {marker}\n").into_bytes();
    content.extend(harness::bytes(150_000, 7));
    content.extend(format!("last line {marker}\n").into_bytes());
    let local = scratch(&env).join("plain.txt");
    std::fs::write(&local, &content).unwrap();

    let folder = format!("/folder-{marker}");
    let first = format!("{folder}/file-{marker}.txt");
    let renamed = format!("{folder}/renamed-{marker}.txt");
    let mut cli_output = Vec::new();
    let mut run = |args: &[&str]| {
        let out = env.coffer(args, "");
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
        cli_output.extend(out.stdout);
        cli_output.extend(out.stderr);
    };
    run(&["files", "mkdir", &folder, "--user", "u"]);
    run(&[
        "files",
        "put",
        local.to_str().unwrap(),
        &first,
        "--user",
        "u",
    ]);
    run(&["files", "mv", &first, &renamed, "--user", "u"]);
    let fetched = scratch(&env).join("fetched.txt");
    run(&[
        "files",
        "get",
        &renamed,
        fetched.to_str().unwrap(),
        "--user",
        "u",
    ]);

    // The scan can fail: the marker is really there for whoever holds the keys.
    let back = std::fs::read(&fetched).unwrap();
    assert_eq!(back, content);
    assert!(harness::contains(&back, marker.as_bytes()));
    let listing = env.ok(&["files", "ls", &folder, "--user", "u"], "");
    assert!(
        listing.contains(&format!("renamed-{marker}.txt")),
        "{listing}"
    );

    // Let the replicator copy the object so the replica store is scanned with something in it.
    assert!(
        eventually(15, || !objects(&replica(&env)).is_empty()),
        "replica stayed empty:\n{}",
        server.logs()
    );
    let (clean, log) = server.stop();
    assert!(clean, "{log}");
    assert!(
        env.all_files()
            .iter()
            .any(|p| p.to_string_lossy().ends_with("meta.db"))
    );
    harness::assert_no_canary(
        &env.data_dir(),
        &[("server log", log.as_bytes()), ("CLI output", &cli_output)],
        &marker,
    );
}

// ---- 7. invariants: tamper and replication ----------------------------------------------

#[test]
fn tampered_truncated_or_swapped_objects_fail_get_with_integrity_and_no_output() {
    let env = Env::new("");
    env.add_user("acme", "u", PASSWORD);
    let a = harness::bytes(200_000, 11);
    let b = harness::bytes(150_000, 12);
    let obj_a = new_object(&env, || {
        put(&env, "u", "/a.bin", &a);
    });
    let obj_b = new_object(&env, || {
        put(&env, "u", "/b.bin", &b);
    });
    let sealed_a = std::fs::read(&obj_a).unwrap();
    let sealed_b = std::fs::read(&obj_b).unwrap();

    // One flipped byte in the middle of a chunk.
    let mut flipped = sealed_a.clone();
    flipped[sealed_a.len() / 2] ^= 0x01;
    std::fs::write(&obj_a, &flipped).unwrap();
    assert_get_integrity_error(&env, "u", "/a.bin");
    std::fs::write(&obj_a, &sealed_a).unwrap();
    assert_eq!(
        get(&env, "u", "/a.bin"),
        a,
        "restored object must read again"
    );

    // Truncated: by one byte, and to a chunk boundary's worth.
    for keep in [sealed_a.len() - 1, 65_536] {
        std::fs::write(&obj_a, &sealed_a[..keep]).unwrap();
        assert_get_integrity_error(&env, "u", "/a.bin");
    }
    std::fs::write(&obj_a, &sealed_a).unwrap();

    // Two files' objects swapped.
    std::fs::write(&obj_a, &sealed_b).unwrap();
    std::fs::write(&obj_b, &sealed_a).unwrap();
    assert_get_integrity_error(&env, "u", "/a.bin");
    assert_get_integrity_error(&env, "u", "/b.bin");

    std::fs::write(&obj_a, &sealed_a).unwrap();
    std::fs::write(&obj_b, &sealed_b).unwrap();
    assert_eq!(get(&env, "u", "/a.bin"), a);
    assert_eq!(get(&env, "u", "/b.bin"), b);
}

#[test]
fn the_running_server_replicates_every_object_to_the_replica_store() {
    // Every object in the primary store (e2e/inline.rs covers objects kept in their rows).
    let env = Env::new("[uploads]\ninline_max_bytes = 0\n");
    let server = env.serve();
    env.add_user("acme", "u", PASSWORD);
    for (i, size) in [0usize, 70_000, 300_000].into_iter().enumerate() {
        put(
            &env,
            "u",
            &format!("/f{i}.bin"),
            &harness::bytes(size, i as u64),
        );
    }
    let want = objects(&primary(&env));
    assert_eq!(want.len(), 3);
    let mirrored = eventually(15, || objects(&replica(&env)) == want);
    assert!(
        mirrored,
        "replica {:?} != primary {want:?}\n{}",
        objects(&replica(&env)),
        server.logs()
    );
    // Replicated objects are byte-identical ciphertext.
    for name in want.keys() {
        let find = |root: &Path| {
            harness::walk(root)
                .into_iter()
                .find(|p| p.ends_with(name))
                .unwrap()
        };
        assert_eq!(
            std::fs::read(find(&primary(&env))).unwrap(),
            std::fs::read(find(&replica(&env))).unwrap()
        );
    }
    let (clean, log) = server.stop();
    assert!(clean, "{log}");
}

// ---- 8. invariant: isolation ------------------------------------------------------------

#[test]
fn two_tenants_with_the_same_names_see_only_their_own_files() {
    // Objects in the store, so each file's object can be found and compared on disk.
    let env = Env::new("[uploads]\ninline_max_bytes = 0\n");
    env.add_user("north", "n", PASSWORD);
    env.add_user("south", "s", PASSWORD);
    let obj_n = new_object(&env, || {
        put(&env, "n", "/report.txt", b"north's numbers");
    });
    let obj_s = new_object(&env, || {
        put(&env, "s", "/report.txt", b"south's numbers, longer");
    });
    put(&env, "s", "/only-south.txt", b"south only");

    assert_eq!(names(&ls(&env, "/", "n")), ["report.txt"]);
    assert_eq!(names(&ls(&env, "/", "s")), ["only-south.txt", "report.txt"]);
    assert_eq!(get(&env, "n", "/report.txt"), b"north's numbers");
    assert_eq!(get(&env, "s", "/report.txt"), b"south's numbers, longer");
    refused(
        &env,
        &[
            "files",
            "get",
            "/only-south.txt",
            "/dev/null",
            "--user",
            "n",
        ],
        &["no such file"],
    );

    // The other tenant's keys cannot open an object: swap the two tenants' objects.
    let (sealed_n, sealed_s) = (
        std::fs::read(&obj_n).unwrap(),
        std::fs::read(&obj_s).unwrap(),
    );
    std::fs::write(&obj_n, &sealed_s).unwrap();
    std::fs::write(&obj_s, &sealed_n).unwrap();
    assert_get_integrity_error(&env, "n", "/report.txt");
    assert_get_integrity_error(&env, "s", "/report.txt");
    std::fs::write(&obj_n, &sealed_n).unwrap();
    std::fs::write(&obj_s, &sealed_s).unwrap();

    // Overwriting one tenant's report leaves the other's alone.
    put(&env, "n", "/report.txt", b"north, revised");
    assert_eq!(get(&env, "n", "/report.txt"), b"north, revised");
    assert_eq!(get(&env, "s", "/report.txt"), b"south's numbers, longer");
    assert_eq!(names(&ls(&env, "/", "n")), ["report.txt"]);
}

// ---- 9. invariant: hostile paths --------------------------------------------------------

#[test]
fn hostile_paths_are_refused_with_a_clear_message_and_create_nothing() {
    let env = Env::new("");
    env.add_user("acme", "root-user", PASSWORD);
    put(
        &env,
        "root-user",
        "/secret.txt",
        b"above the jailed user's home",
    );
    env.ok(
        &[
            "user",
            "add",
            "jailed",
            "--tenant",
            "acme",
            "--home",
            "/homes/jailed",
            "--password-stdin",
        ],
        "jailed password\n",
    );
    put(&env, "jailed", "/mine.txt", b"inside");
    let local = scratch(&env).join("x");
    std::fs::write(&local, b"payload").unwrap();
    let x = local.to_str().unwrap();
    let out_file = scratch(&env).join("out");
    let out = out_file.to_str().unwrap();

    let tree_before = ls(&env, "/", "root-user");
    let objects_before = objects(&primary(&env));
    let outside_before: Vec<PathBuf> = harness::walk(env.dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(env.data_dir()))
        .collect();

    let name_256 = format!("/{}", "a".repeat(256));
    let path_4097 = format!("{}b", "/a".repeat(2048));
    assert_eq!(path_4097.len(), 4097);
    let cases: [(&[&str], &str); 10] = [
        (
            &["files", "put", x, "../../etc/evil", "--user", "jailed"],
            "escapes the home folder",
        ),
        (
            &[
                "files",
                "get",
                "../../../etc/passwd",
                out,
                "--user",
                "jailed",
            ],
            "escapes the home folder",
        ),
        (
            &["files", "get", "../../secret.txt", out, "--user", "jailed"],
            "escapes the home folder",
        ),
        (
            &["files", "ls", "/..", "--user", "jailed"],
            "escapes the home folder",
        ),
        (
            &[
                "files",
                "mv",
                "/mine.txt",
                "../../stolen.txt",
                "--user",
                "jailed",
            ],
            "escapes the home folder",
        ),
        (
            &["files", "put", x, "a\u{1}b", "--user", "jailed"],
            "control characters",
        ),
        (
            &["files", "mkdir", "/new\u{7f}dir", "--user", "jailed"],
            "control characters",
        ),
        (
            &["files", "put", x, &name_256, "--user", "jailed"],
            "longer than 255 bytes",
        ),
        (
            &["files", "put", x, &path_4097, "--user", "jailed"],
            "longer than 4096 bytes",
        ),
        (
            &["files", "rm", "../secret.txt", "--user", "jailed"],
            "escapes the home folder",
        ),
    ];
    for (args, message) in cases {
        let line = refused(&env, args, &[message]);
        assert!(
            !line.contains("a".repeat(256).as_str()),
            "the error echoes the hostile name: {line}"
        );
    }

    assert_eq!(names(&ls(&env, "/", "jailed")), ["mine.txt"]);
    assert_eq!(
        ls(&env, "/", "root-user"),
        tree_before,
        "the tenant's tree changed"
    );
    assert_eq!(
        get(&env, "root-user", "/secret.txt"),
        b"above the jailed user's home"
    );
    assert_eq!(
        objects(&primary(&env)),
        objects_before,
        "a refused upload stored an object"
    );
    let outside_after: Vec<PathBuf> = harness::walk(env.dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(env.data_dir()))
        .collect();
    assert_eq!(
        outside_after, outside_before,
        "a file appeared outside the data dir"
    );
    assert!(!Path::new("/etc/evil").exists());
}

// ---- 10. operator commands beside a running server --------------------------------------

#[test]
fn cli_works_beside_a_running_server_and_the_tree_survives_sigkill() {
    let env = Env::new("");
    let server = env.serve();
    env.add_user("acme", "u", PASSWORD);
    env.ok(&["files", "mkdir", "/in", "--user", "u"], "");
    let payloads: Vec<Vec<u8>> = (0..5)
        .map(|i| harness::bytes(300_000 + i * 1000, 40 + i as u64))
        .collect();
    std::thread::scope(|scope| {
        let env = &env;
        let mut workers = Vec::new();
        for (i, data) in payloads.iter().enumerate() {
            workers.push(scope.spawn(move || put(env, "u", &format!("/in/part-{i}.bin"), data)));
        }
        // A user is added while the uploads run.
        env.add_user("acme", "late", PASSWORD);
        for w in workers {
            w.join().unwrap();
        }
    });
    assert_eq!(
        http_get(server.admin, "/healthz").map(|(c, _)| c),
        Some(200)
    );
    let listing = env.ok(&["files", "ls", "/in", "--user", "u"], "");
    let expected: Vec<Entry> = (0..5)
        .map(|i| Entry {
            kind: '-',
            size: 300_000 + i as u64 * 1000,
            name: format!("part-{i}.bin"),
        })
        .collect();
    assert_eq!(parse_ls(&listing), expected);
    for (i, data) in payloads.iter().enumerate() {
        assert_eq!(
            harness::sha256(&get(&env, "u", &format!("/in/part-{i}.bin"))),
            harness::sha256(data)
        );
    }

    server.kill();
    let server = env.serve();
    let (code, body) = http_get(server.admin, "/healthz").unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));
    assert_eq!(
        env.ok(&["files", "ls", "/in", "--user", "u"], ""),
        listing,
        "the tree changed across a crash"
    );
    assert_eq!(get(&env, "u", "/in/part-4.bin"), payloads[4]);
    assert!(user_line(&env, "late").is_some());
    let (clean, log) = server.stop();
    assert!(clean, "{log}");
}

// ---- 11. exit codes ---------------------------------------------------------------------

#[test]
fn files_for_an_unknown_user_fails_in_one_line() {
    let env = Env::new("");
    env.add_user("acme", "u", PASSWORD);
    refused(&env, &["files", "ls", "--user", "ghost"], &["no such user"]);
}

#[test]
fn getting_a_missing_file_fails_and_creates_no_local_file() {
    let env = Env::new("");
    env.add_user("acme", "u", PASSWORD);
    let out_dir = scratch(&env);
    let local = out_dir.join("never.txt");
    refused(
        &env,
        &[
            "files",
            "get",
            "/nope.txt",
            local.to_str().unwrap(),
            "--user",
            "u",
        ],
        &["no such file"],
    );
    assert!(dir_names(&out_dir).is_empty(), "{:?}", dir_names(&out_dir));
}

#[test]
fn api_tokens_are_shown_once_listed_without_secrets_and_revoked_by_id() {
    let env = Env::new("");
    env.add_user("acme", "alice", "pw-alice-1234");
    let out = env.coffer(
        &["token", "create", "--user", "alice", "--expires-days", "30"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let note = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(token.starts_with("cft_") && token.len() > 60, "{token}");
    assert!(
        note.contains("shown only now") && note.contains("expires"),
        "{note}"
    );
    let id = token.split('_').nth(1).unwrap().to_owned();
    // The secret is base64url and may itself hold `_`: everything after the id.
    let secret = token.splitn(3, '_').nth(2).unwrap().to_owned();
    assert_eq!(secret.len(), 43, "{token}");

    let listed = env.ok(&["token", "list", "--user", "alice"], "");
    assert!(listed.contains(&id), "{listed}");
    assert!(
        !listed.contains(&secret),
        "listing shows the secret: {listed}"
    );
    // The secret is nowhere at rest: only its hash is stored.
    harness::assert_no_canary(&env.data_dir(), &[], &secret);

    let nobody = env.coffer(&["token", "create", "--user", "nobody"], "");
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("no such user"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    env.ok(&["token", "revoke", "--user", "alice", &id], "");
    assert!(
        !env.ok(&["token", "list", "--user", "alice"], "")
            .contains(&id)
    );
    let again = env.coffer(&["token", "revoke", "--user", "alice", &id], "");
    assert!(!again.status.success(), "revoking twice succeeded");
}

#[test]
fn serve_refuses_an_implicit_ftps_listener_it_cannot_provide_naming_the_field() {
    let env = Env::new("");
    let toml = std::fs::read_to_string(&env.config).unwrap();
    // A free port outside the passive range, which the config check would name instead.
    let passive = env.ports.passive_start..env.ports.passive_start + 20;
    let port = std::iter::repeat_with(harness::free_port)
        .find(|p| !passive.contains(p))
        .unwrap();
    let implicit = format!("127.0.0.1:{port}");
    std::fs::write(
        &env.config,
        toml.replacen(
            "[ftp]\n",
            &format!("[ftp]\nimplicit_listen = \"{implicit}\"\n"),
            1,
        ),
    )
    .unwrap();
    let child = harness::coffer_command()
        .arg("--config")
        .arg(&env.config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (exited, out) = wait_output(child, 30);
    assert!(
        exited,
        "serve kept running with an implicit listener it does not serve"
    );
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("ftp.implicit_listen") && err.contains("AUTH TLS"),
        "{err}"
    );
}
