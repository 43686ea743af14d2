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

/// Starts `program args`, kills it after `after` (no clean close: what a crashed client or a
/// dropped connection does), and waits for it.
fn killed_after(mut cmd: Command, after: std::time::Duration) {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the client is installed (see integration/run-tests)");
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

/// A rate-limited OpenSSH `sftp` upload of `local` to `remote`, password login.
fn sftp_upload(env: &Env, local: &std::path::Path, remote: &str) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let cwd = env.dir.path();
    let askpass = cwd.join(".askpass-cut.sh");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{PASSWORD}'\n")).unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let batch = cwd.join(format!(".cut-{}", remote.trim_start_matches('/')));
    std::fs::write(&batch, format!("put {} {remote}\n", local.display())).unwrap();
    let mut c = Command::new("sftp");
    c.args(["-o", "BatchMode=no", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args(["-l", "16000", "-P", &env.ports.sftp.to_string(), "-b"])
        .arg(&batch)
        .arg("alice@127.0.0.1")
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    c
}

/// A rate-limited curl upload over FTPES or HTTPS.
fn curl_upload(local: &std::path::Path, url: String) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "-k", "--ssl-reqd", "--limit-rate", "2M", "-u"])
        .arg(format!("alice:{PASSWORD}"))
        .arg("-T")
        .arg(local)
        .arg(url);
    c
}

/// The bytes of `remote` as the CLI reads them, or `None` if it does not exist.
fn stored(env: &Env, remote: &str) -> Option<Vec<u8>> {
    let out = env.dir.path().join("stored.out");
    let _ = std::fs::remove_file(&out);
    let r = env.coffer(
        &[
            "files",
            "get",
            remote,
            out.to_str().unwrap(),
            "--user",
            "alice",
        ],
        "",
    );
    r.status.success().then(|| std::fs::read(&out).unwrap())
}

#[test]
fn an_upload_cut_off_midway_behaves_the_same_on_sftp_ftpes_and_https() {
    let env = Env::new("");
    env.add_user("acme", "alice", PASSWORD);
    let old = crate::harness::bytes(1 << 20, 41);
    let new = crate::harness::bytes(24 << 20, 42);
    let (old_file, new_file) = (
        env.dir.path().join("old.bin"),
        env.dir.path().join("new.bin"),
    );
    std::fs::write(&old_file, &old).unwrap();
    std::fs::write(&new_file, &new).unwrap();
    for proto in ["sftp", "ftp", "https"] {
        env.ok(
            &[
                "files",
                "put",
                old_file.to_str().unwrap(),
                &format!("/{proto}-replace.bin"),
                "--user",
                "alice",
            ],
            "",
        );
    }
    let server = env.serve();
    let cut = std::time::Duration::from_millis(3000);
    let (ftp, https) = (env.ports.ftp, env.ports.https);
    for name in ["replace", "new"] {
        killed_after(
            sftp_upload(&env, &new_file, &format!("/sftp-{name}.bin")),
            cut,
        );
        killed_after(
            curl_upload(&new_file, format!("ftp://127.0.0.1:{ftp}/ftp-{name}.bin")),
            cut,
        );
        killed_after(
            curl_upload(
                &new_file,
                format!("https://127.0.0.1:{https}/api/v1/files/https-{name}.bin"),
            ),
            cut,
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut new_outcomes = Vec::new();
    for proto in ["sftp", "ftp", "https"] {
        assert_eq!(
            stored(&env, &format!("/{proto}-replace.bin")).map(|b| crate::harness::sha256(&b)),
            Some(crate::harness::sha256(&old)),
            "{proto}: a replace cut off midway leaves the old version whole"
        );
        let partial = stored(&env, &format!("/{proto}-new.bin"));
        if let Some(p) = &partial {
            assert!(
                !p.is_empty() && p.len() < new.len() && new.starts_with(p),
                "{proto}: a new name cut off keeps only a prefix of what was sent ({} bytes)",
                p.len()
            );
        }
        new_outcomes.push((proto, partial.is_some()));
    }
    assert!(
        new_outcomes.iter().all(|(_, kept)| *kept),
        "keep_partial = \"new-files\" (the default) keeps the prefix of a new name on every protocol: {new_outcomes:?}"
    );
    server.stop();
}

/// `curl` with a cookie jar against the HTTPS port; returns (status, body).
fn browser(env: &Env, jar: &std::path::Path, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "-b"])
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("https://127.0.0.1:{}{path}", env.ports.https))
        .output()
        .expect("curl is required (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn a_browser_session_of_a_user_disabled_with_the_cli_is_refused_at_its_next_request() {
    let env = Env::new("");
    env.add_user("acme", "alice", PASSWORD);
    let _server = env.serve();
    let jar = env.dir.path().join("cookies.txt");
    let (code, form) = browser(&env, &jar, &[], "/login");
    assert_eq!(code, 200);
    let csrf = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the login form carries a CSRF token")
        .to_owned();
    let (code, _) = browser(
        &env,
        &jar,
        &[
            "--data-urlencode",
            "user=alice",
            "--data-urlencode",
            &format!("password={PASSWORD}"),
            "--data-urlencode",
            &format!("csrf={csrf}"),
        ],
        "/login",
    );
    assert_eq!(code, 303, "the login redirects to the files page");
    let (code, page) = browser(&env, &jar, &[], "/files/");
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("action=\"/logout\""),
        "the files page of a logged-in user"
    );

    env.ok(&["user", "disable", "alice"], "");
    let (code, page) = browser(&env, &jar, &[], "/files/");
    assert_ne!(
        code, 200,
        "the open browser session is refused once disabled: {page}"
    );
    assert!(
        !page.contains("action=\"/logout\""),
        "no files page for a disabled user"
    );

    env.ok(&["user", "enable", "alice"], "");
    let (code, _) = browser(&env, &jar, &[], "/files/");
    assert_eq!(code, 200, "enabled again, the session works");
}
