//! The seams every protocol shares, end to end: operator changes made with the CLI take effect
//! on SFTP, FTPES and HTTPS alike and land in the audit log; CLI errors name the path.

use std::process::Command;

use crate::harness::{Env, sftp_password_batch};

const PASSWORD: &str = "correct horse battery";

/// `curl` against the FTPES port: lists the home folder as `user`. Returns curl's exit code.
fn ftp_list(env: &Env, user: &str) -> i32 {
    let out = Command::new("curl")
        .args(["-sS", "--ssl-reqd", "-k", "--max-time", "20", "--user"])
        .arg(format!("{user}:{PASSWORD}"))
        .arg(format!("ftp://127.0.0.1:{}/", env.ports.ftp))
        .output()
        .expect("curl is required (apt-get install curl)");
    out.status.code().unwrap_or(-1)
}

/// `curl` against the HTTPS API: lists the home folder as `user`. Returns the HTTP status.
fn https_list(env: &Env, user: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-k",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
        ])
        .arg(format!("{user}:{PASSWORD}"))
        .arg(format!("https://127.0.0.1:{}/api/v1/list", env.ports.https))
        .output()
        .expect("curl is required (apt-get install curl)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// OpenSSH `sftp` with a password: `true` if the login worked and `ls` ran.
fn sftp_list(env: &Env, user: &str) -> bool {
    let cwd = env.dir.path();
    sftp_password_batch(env.ports.sftp, user, PASSWORD, "ls\n", cwd)
        .status
        .success()
}

/// The operator actions the audit log holds for `user`, oldest first.
fn audited_actions(env: &Env, user: &str) -> Vec<String> {
    let db = env.data_dir().join("meta.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "SELECT action FROM audit WHERE protocol = 'cli' AND user_name = '{user}' ORDER BY at_ms, id"
        ))
        .output()
        .expect("sqlite3 is required (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_user_disabled_with_the_cli_is_refused_on_every_protocol_and_the_change_is_audited() {
    let env = Env::new("");
    env.add_user("acme", "alice", PASSWORD);
    let server = env.serve();
    assert!(sftp_list(&env, "alice"), "alice logs in over SFTP before");
    assert_eq!(
        ftp_list(&env, "alice"),
        0,
        "alice logs in over FTPES before"
    );
    assert_eq!(
        https_list(&env, "alice"),
        200,
        "alice logs in over HTTPS before"
    );

    env.ok(&["user", "disable", "alice"], "");
    assert!(!sftp_list(&env, "alice"), "SFTP refuses a disabled user");
    // curl: 67 = "login denied".
    assert_eq!(ftp_list(&env, "alice"), 67, "FTPES refuses a disabled user");
    assert_eq!(
        https_list(&env, "alice"),
        401,
        "HTTPS refuses a disabled user"
    );

    env.ok(&["user", "enable", "alice"], "");
    assert_eq!(
        https_list(&env, "alice"),
        200,
        "enabled again, alice logs in"
    );
    server.stop();

    let actions = audited_actions(&env, "alice");
    assert_eq!(
        actions,
        ["user_created", "user_disabled", "user_enabled"],
        "every operator change is in the audit log"
    );
}

#[test]
fn files_put_into_a_missing_folder_creates_it_and_path_errors_name_the_path() {
    let env = Env::new("");
    env.add_user("acme", "u", PASSWORD);
    let local = env.dir.path().join("x.txt");
    std::fs::write(&local, b"parents are made like the HTTPS PUT makes them").unwrap();
    env.ok(
        &[
            "files",
            "put",
            local.to_str().unwrap(),
            "/new/deeper/x.txt",
            "--user",
            "u",
        ],
        "",
    );
    let listing = env.ok(&["files", "ls", "/new/deeper", "--user", "u"], "");
    assert!(listing.contains("x.txt"), "{listing}");

    let out = env.coffer(&["files", "ls", "/nowhere", "--user", "u"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nowhere") && err.contains("no such"), "{err}");

    let missing_local = env.dir.path().join("not-here.txt");
    let out = env.coffer(
        &[
            "files",
            "put",
            missing_local.to_str().unwrap(),
            "/y.txt",
            "--user",
            "u",
        ],
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not-here.txt"), "names the local file: {err}");

    let out = env.coffer(
        &["files", "mv", "/ghost.txt", "/new/g.txt", "--user", "u"],
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/ghost.txt"), "names the source: {err}");
}
