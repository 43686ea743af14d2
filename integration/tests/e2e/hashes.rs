//! Stored hashes without download (issue 13 item 15): every protocol gives the SHA-256 sealed
//! in a file's row to a user who may read the file, and refuses one who may not.
//!
//! Clients: OpenSSH `ssh … sha256sum`, paramiko (`exec_command`, `check-file-name`,
//! `SFTPFile.check`), lftp `quote HASH`, Python `ftplib`, curl (`Repr-Digest`, JSON listing).
//! Each compares the server's answer with the SHA-256 the test computed of the bytes it
//! uploaded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, Env, Server, bytes, sha256};

const PASSWORD: &str = "correct horse battery";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// A name that needs quoting in a shell: an apostrophe, spaces, parentheses, a semicolon.
const AWKWARD: &str = "dir/it's (1); x.bin";

/// A server with alice (all permissions) and bob (list only, no read) in one tenant, both with
/// an Ed25519 key and a password.
struct Site {
    env: Env,
    server: Option<Server>,
    local: PathBuf,
}

impl Site {
    fn new() -> Self {
        let env = Env::new("");
        let local = env.dir.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        for (user, perms) in [("alice", "all"), ("bob", "list")] {
            let key = local.join(format!("id_{user}"));
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .status()
                .expect("OpenSSH (ssh-keygen) is required: apt-get install openssh-client");
            assert!(st.success());
            env.ok(
                &[
                    "user",
                    "add",
                    user,
                    "--tenant",
                    "acme",
                    "--password-stdin",
                    "--perms",
                    perms,
                    "--ssh-key",
                    &format!("{}.pub", key.display()),
                ],
                &format!("{PASSWORD}\n"),
            );
        }
        let server = Some(env.serve());
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", env.ports.sftp)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the sftp listener did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { env, server, local }
    }

    fn logs(&self) -> String {
        self.server.as_ref().unwrap().logs()
    }

    fn key(&self, user: &str) -> PathBuf {
        self.local.join(format!("id_{user}"))
    }

    fn write_local(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.local.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// `ssh user@host <command>` with the user's key; stdin is empty.
    fn ssh(&self, user: &str, command: &str) -> Output {
        Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
                "-T",
                "-i",
            ])
            .arg(self.key(user))
            .args(["-p", &self.env.ports.sftp.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Uploads with OpenSSH `sftp` as alice.
    fn sftp_upload(&self, files: &[(&Path, &str)]) {
        let mut script = String::from("-mkdir dir\n");
        for (local, remote) in files {
            script.push_str(&format!(
                "put \"{}\" \"{}\"\n",
                local.display(),
                remote.replace('"', "\\\"")
            ));
        }
        let batch = self.local.join(".batch");
        std::fs::write(&batch, script).unwrap();
        let out = Command::new("sftp")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-i",
            ])
            .arg(self.key("alice"))
            .args(["-P", &self.env.ports.sftp.to_string(), "-b"])
            .arg(&batch)
            .arg("alice@127.0.0.1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sftp upload failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    fn python(&self, script: &str, args: &[&str]) -> String {
        let file = self.local.join(".hash_test.py");
        std::fs::write(&file, script).unwrap();
        let out = Command::new("python3")
            .current_dir(&self.local)
            .arg(&file)
            .args(args)
            .output()
            .expect("python3 is required");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("ALL OK"),
            "python:\n{text}\n{}\n--- server log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        text
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn openssh_sha256sum_answers_like_coreutils_from_the_stored_hash() {
    let site = Site::new();
    let a = bytes(300_000, 1);
    let odd = bytes(70_000, 2);
    let pa = site.write_local("a.bin", &a);
    let po = site.write_local("odd.bin", &odd);
    let pe = site.write_local("empty.bin", b"");
    site.sftp_upload(&[(&pa, "a.bin"), (&po, AWKWARD), (&pe, "empty.bin")]);
    let (ha, ho) = (sha256(&a), sha256(&odd));

    // Shell quoting, as a user types it; relative and absolute paths.
    let out = site.ssh(
        "alice",
        r#"sha256sum a.bin '/dir/it'\''s (1); x.bin' "empty.bin""#,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}{}", site.logs());
    assert_eq!(
        stdout,
        format!("{ha}  a.bin\n{ho}  /dir/it's (1); x.bin\n{EMPTY_SHA256}  empty.bin\n")
    );

    // rclone's quoting: every unsafe byte behind a backslash; rclone reads the first field.
    let out = site.ssh("alice", r"sha256sum /dir/it\'s\ \(1\)\;\ x.bin");
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert_eq!(stdout.split(' ').next(), Some(ho.as_str()));

    // A missing file: a message on stderr, exit status 1, the other files still answered.
    let out = site.ssh("alice", "sha256sum nope.bin a.bin");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, format!("{ha}  a.bin\n"));
    assert_eq!(stderr, "sha256sum: nope.bin: No such file or directory\n");

    // A folder, like coreutils.
    let out = site.ssh("alice", "sha256sum dir");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("sha256sum: dir: Is a directory"));

    // The probe sync tools run: no path, empty standard input.
    let out = site.ssh("alice", "sha256sum");
    assert!(out.status.success());
    assert_eq!(text(&out).0, format!("{EMPTY_SHA256}  -\n"));

    // Hashes that are not stored are refused with a clear message.
    for cmd in ["md5sum a.bin", "sha1sum a.bin"] {
        let out = site.ssh("alice", cmd);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stdout}{stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.contains("stores only the SHA-256") && stderr.contains("use sha256sum"),
            "{cmd}: {stderr}"
        );
    }

    // bob may list but not read: no hash.
    let out = site.ssh("bob", "sha256sum a.bin");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr, "sha256sum: a.bin: Permission denied\n");

    // Still no shell: other commands are refused as before.
    let out = site.ssh("alice", "cat /etc/passwd");
    assert!(!out.status.success());
    assert!(!text(&out).0.contains("root:"));

    // Audited like a read: the five hashes alice was given (a.bin twice, the odd name twice,
    // empty.bin once), with the node id; refusals and standard input are not file reads.
    let mut site = site;
    let _ = site.server.take().unwrap().stop();
    let out = Command::new("sqlite3")
        .arg(site.env.data_dir().join("meta.db"))
        .arg(
            "SELECT user_name, protocol, outcome, node_id IS NOT NULL FROM audit \
             WHERE action = 'checksum' ORDER BY id",
        )
        .output()
        .expect("sqlite3 is required (apt-get install sqlite3)");
    let rows = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        vec!["alice|sftp|ok|1"; 5],
        "checksum audit records: {rows}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PARAMIKO: &str = r#"
import errno, sys, paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY
port, keys, want_a, want_odd, awkward = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

def connect(user):
    t = paramiko.Transport(("127.0.0.1", port))
    t.connect(username=user, pkey=paramiko.Ed25519Key.from_private_key_file(keys + "/id_" + user))
    return t

def exec_(t, cmd):
    ch = t.open_session()
    ch.exec_command(cmd)
    out = ch.makefile("rb").read().decode()
    err = ch.makefile_stderr("rb").read().decode()
    return ch.recv_exit_status(), out, err

def check_file_name(s, path, algs="sha256", start=0, length=0, block=0):
    t, msg = s._request(CMD_EXTENDED, "check-file-name", path, algs,
                        paramiko.sftp.int64(start), paramiko.sftp.int64(length), block)
    assert t == CMD_EXTENDED_REPLY, t
    assert msg.get_text() == "check-file"
    alg = msg.get_text()
    return alg, msg.get_remainder().hex()

t = connect("alice")
status, out, err = exec_(t, "sha256sum /a.bin")
assert (status, out, err) == (0, want_a + "  /a.bin\n", ""), (status, out, err)
status, out, err = exec_(t, "sha256sum /missing.bin")
assert status == 1 and "No such file or directory" in err, (status, out, err)

s = paramiko.SFTPClient.from_transport(t)
assert check_file_name(s, "/a.bin") == ("sha256", want_a)
assert check_file_name(s, awkward, algs="md5,sha256") == ("sha256", want_odd)
# SFTPFile.check sends check-file-handle on an open file.
with s.open("/a.bin", "rb") as f:
    assert f.check("sha256").hex() == want_a
for bad in [dict(algs="md5"), dict(start=1), dict(length=10), dict(block=256)]:
    try:
        check_file_name(s, "/a.bin", **bad)
        raise SystemExit("unsupported check-file accepted: %r" % bad)
    except IOError as e:
        assert "sha256" in str(e) or "whole file" in str(e), e
try:
    check_file_name(s, "/missing.bin")
    raise SystemExit("missing file hashed")
except IOError as e:
    assert e.errno == errno.ENOENT, e
t.close()

t = connect("bob")
status, out, err = exec_(t, "sha256sum /a.bin")
assert status == 1 and out == "" and "Permission denied" in err, (status, out, err)
s = paramiko.SFTPClient.from_transport(t)
try:
    check_file_name(s, "/a.bin")
    raise SystemExit("bob got a hash")
except IOError as e:
    assert e.errno == errno.EACCES, e
t.close()
print("ALL OK")
"#;

#[test]
fn paramiko_exec_and_sftp_check_file_give_the_stored_hash_to_readers_only() {
    let python_has_paramiko = Command::new("python3")
        .args(["-c", "import paramiko"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !python_has_paramiko {
        harness::missing_client("PARAMIKO", "paramiko", "apt-get install python3-paramiko");
        return;
    }
    let site = Site::new();
    let a = bytes(200_000, 3);
    let odd = bytes(1, 4);
    let pa = site.write_local("a.bin", &a);
    let po = site.write_local("odd.bin", &odd);
    site.sftp_upload(&[(&pa, "a.bin"), (&po, AWKWARD)]);
    site.python(
        PARAMIKO,
        &[
            &site.env.ports.sftp.to_string(),
            &site.local.display().to_string(),
            &sha256(&a),
            &sha256(&odd),
            &format!("/{AWKWARD}"),
        ],
    );
}

const FTPLIB: &str = r#"
import ftplib, ssl, sys, io
port, want, size = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

def login(user):
    f = ftplib.FTP_TLS(context=ctx, timeout=20)
    f.connect("127.0.0.1", port)
    f.login(user, "correct horse battery")
    f.prot_p()
    return f

f = login("alice")
feat = f.sendcmd("FEAT")
assert "HASH SHA-256*" in feat and "XSHA256" in feat, feat
assert f.sendcmd("OPTS HASH") == "200 SHA-256", "OPTS HASH"
assert f.sendcmd("OPTS HASH SHA-256") == "200 SHA-256"
try:
    f.sendcmd("OPTS HASH MD5")
    raise SystemExit("OPTS HASH MD5 accepted")
except ftplib.error_perm as e:
    assert str(e).startswith("504"), e
r = f.sendcmd("HASH up.bin")
assert r == "213 SHA-256 0-%s %s up.bin" % (size, want), r
f.cwd("/sub")
r = f.sendcmd("HASH ../up.bin")
assert r == "213 SHA-256 0-%s %s ../up.bin" % (size, want), r
assert f.sendcmd("XSHA256 /up.bin") == "213 " + want
for cmd in ["HASH /missing.bin", "XSHA256 /missing.bin", "HASH /sub"]:
    try:
        f.sendcmd(cmd)
        raise SystemExit(cmd + " answered")
    except ftplib.error_perm as e:
        assert str(e).startswith("550"), (cmd, e)
assert f.sendcmd("NOOP").startswith("200")
f.quit()

f = login("bob")
try:
    f.sendcmd("HASH /up.bin")
    raise SystemExit("bob got a hash")
except ftplib.error_perm as e:
    assert str(e).startswith("550") and want not in str(e), e
f.quit()
print("ALL OK")
"#;

#[test]
fn ftp_hash_and_xsha256_through_lftp_and_ftplib_give_the_stored_hash_to_readers_only() {
    let site = Site::new();
    let data = bytes(150_000, 5);
    let local = site.write_local("up.bin", &data);
    let want = sha256(&data);
    let lftp = |user: &str, script: &str| {
        let full = format!(
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; \
             set ssl:verify-certificate no; set net:max-retries 1; set net:timeout 20; \
             open -u {user},'{PASSWORD}' -p {} 127.0.0.1; {script}",
            site.env.ports.ftp
        );
        Command::new("lftp")
            .current_dir(&site.local)
            .args(["-c", &full])
            .stdin(Stdio::null())
            .output()
            .expect("lftp is required: apt-get install lftp")
    };
    let out = lftp(
        "alice",
        &format!(
            "put {} -o up.bin; mkdir sub; quote HASH up.bin",
            local.display()
        ),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}{}", site.logs());
    assert!(
        stdout.contains(&format!("213 SHA-256 0-{} {want} up.bin", data.len())),
        "lftp quote HASH:\n{stdout}{stderr}"
    );
    site.python(
        FTPLIB,
        &[
            &site.env.ports.ftp.to_string(),
            &want,
            &data.len().to_string(),
        ],
    );
}

#[test]
fn https_repr_digest_and_the_json_listing_carry_the_stored_hash_for_readers_only() {
    use base64::Engine as _;
    let site = Site::new();
    let data = bytes(500_000, 6);
    let local = site.write_local("w.bin", &data);
    let want = sha256(&data);
    let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&want).unwrap());
    let curl = |user: &str, args: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "60", "-u"])
            .arg(format!("{user}:{PASSWORD}"))
            .args(args)
            .output()
            .expect("curl is required: apt-get install curl");
        assert!(out.status.success(), "curl {args:?}: {}", text(&out).1);
        text(&out)
    };
    let url = |p: &str| format!("https://127.0.0.1:{}{p}", site.env.ports.https);
    let (_, _) = curl(
        "alice",
        &[
            "--fail",
            "-T",
            &local.display().to_string(),
            &url("/api/v1/files/docs/w.bin"),
        ],
    );
    let digest = format!("sha-256=:{b64}:");
    let repr_digest = |headers: &str| -> Option<String> {
        headers.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("repr-digest")
                .then(|| value.trim().to_owned())
        })
    };
    // HEAD, GET and a range GET: the header describes the whole file each time.
    let (head, _) = curl("alice", &["-I", &url("/api/v1/files/docs/w.bin")]);
    assert_eq!(repr_digest(&head), Some(digest.clone()), "HEAD:\n{head}");
    let (get, _) = curl(
        "alice",
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            &url("/api/v1/files/docs/w.bin"),
        ],
    );
    assert_eq!(repr_digest(&get), Some(digest.clone()), "GET:\n{get}");
    let (range, _) = curl(
        "alice",
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-r",
            "100-199",
            &url("/api/v1/files/docs/w.bin"),
        ],
    );
    assert!(
        range.starts_with("HTTP/2 206") || range.starts_with("HTTP/1.1 206"),
        "{range}"
    );
    assert_eq!(
        repr_digest(&range),
        Some(digest.clone()),
        "range GET:\n{range}"
    );
    // The listing: sha256 (hex) on the file, none on a folder.
    let (list, _) = curl("alice", &["--fail", &url("/api/v1/list/docs")]);
    let doc: serde_json::Value = serde_json::from_str(&list).unwrap();
    let entry = &doc["entries"][0];
    assert_eq!(entry["name"], "w.bin", "{list}");
    assert_eq!(entry["sha256"], want.as_str(), "{list}");
    let (root, _) = curl("alice", &["--fail", &url("/api/v1/list/")]);
    let doc: serde_json::Value = serde_json::from_str(&root).unwrap();
    assert_eq!(doc["entries"][0]["type"], "folder");
    assert!(doc["entries"][0].get("sha256").is_none(), "{root}");
    // A missing file: 404, no digest.
    let (missing, _) = curl("alice", &["-I", &url("/api/v1/files/docs/nope.bin")]);
    assert!(missing.contains(" 404"), "{missing}");
    assert_eq!(repr_digest(&missing), None);
    // bob may list but not read: the entry is there, its hash is not.
    let (head, _) = curl("bob", &["-I", &url("/api/v1/files/docs/w.bin")]);
    assert!(head.contains(" 200"), "bob HEAD:\n{head}");
    assert_eq!(repr_digest(&head), None, "bob HEAD:\n{head}");
    assert!(!head.contains(&b64));
    let (list, _) = curl("bob", &["--fail", &url("/api/v1/list/docs")]);
    let doc: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(doc["entries"][0]["name"], "w.bin", "{list}");
    assert!(
        doc["entries"][0].get("sha256").is_none(),
        "bob's listing: {list}"
    );
}
