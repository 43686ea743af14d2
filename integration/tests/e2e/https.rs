//! HTTPS end to end: the real `coffer serve` driven by curl (HTTP/1.1 and HTTP/2) and by
//! headless Chromium (playwright-core) over loopback TLS.
//!
//! curl is required. The browser test needs `/usr/bin/chromium` and `npm`; it says loudly
//! when it cannot run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::harness::{Env, Server, assert_no_canary, bytes, marker, sha256};

const PASSWORD: &str = "correct horse battery";
const CHUNK: usize = 65536;

/// One HTTP exchange as curl saw it.
struct Reply {
    status: u16,
    /// Raw response headers, lower-cased.
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    /// The value of the last header `name` (lower-case), if any.
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}:");
        self.headers
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .next_back()
            .map(|v| v.trim().to_owned())
    }

    /// Every value of header `name` (lower-case), in order.
    fn header_all(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}:");
        self.headers
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_owned())
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_owned()
    }
}

/// A server with user alice (tenant acme) and a scratch folder for curl.
struct Site {
    env: Env,
    server: Option<Server>,
    local: PathBuf,
    calls: AtomicUsize,
}

impl Site {
    fn new() -> Self {
        Self::with("")
    }

    /// A site whose config has `extra` TOML appended.
    fn with(extra: &str) -> Self {
        Self::set_up(Env::new(extra))
    }

    /// A site whose tenant has a quota of `bytes`.
    fn with_quota(bytes: u64) -> Self {
        let env = Env::new("");
        env.ok(
            &["tenant", "add", "acme", "--quota", &bytes.to_string()],
            "",
        );
        Self::set_up(env)
    }

    fn set_up(env: Env) -> Self {
        env.add_user("acme", "alice", PASSWORD);
        let local = env.dir.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        let server = Some(env.serve());
        Self {
            env,
            server,
            local,
            calls: AtomicUsize::new(0),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.env.ports.https)
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Runs curl with `args` against the site; returns status, headers and body.
    fn curl(&self, args: &[&str]) -> Reply {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let body = self.local.join(format!(".body{n}"));
        let headers = self.local.join(format!(".headers{n}"));
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "900", "-o"])
            .arg(&body)
            .arg("-D")
            .arg(&headers)
            .args(["-w", "%{http_code}"])
            .args(args)
            .output()
            .expect("curl is required for the HTTPS tests: apt-get install curl");
        let status = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let reply = Reply {
            status,
            headers: std::fs::read_to_string(&headers)
                .unwrap_or_default()
                .to_lowercase(),
            body: std::fs::read(&body).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(&body);
        let _ = std::fs::remove_file(&headers);
        assert!(
            status != 0,
            "curl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server().logs()
        );
        reply
    }

    /// curl as alice with Basic authentication.
    fn alice(&self, args: &[&str]) -> Reply {
        let creds = format!("alice:{PASSWORD}");
        let mut all = vec!["-u", creds.as_str()];
        all.extend_from_slice(args);
        self.curl(&all)
    }

    fn put(&self, local: &Path, remote: &str, extra: &[&str]) -> Reply {
        let url = self.url(&format!("/api/v1/files/{remote}"));
        let file = local.to_str().unwrap();
        let mut args = vec!["-T", file];
        args.extend_from_slice(extra);
        args.push(&url);
        self.alice(&args)
    }

    fn get(&self, remote: &str, extra: &[&str]) -> Reply {
        let url = self.url(&format!("/api/v1/files/{remote}"));
        let mut args = extra.to_vec();
        args.push(&url);
        self.alice(&args)
    }

    fn write_local(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.local.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

#[test]
fn curl_upload_and_download_at_chunk_boundaries_over_http1_and_http2() {
    let site = Site::new();
    let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17];
    for (i, &size) in sizes.iter().enumerate() {
        let proto = if i % 2 == 0 { "--http1.1" } else { "--http2" };
        let data = bytes(size, i as u64 + 1);
        let local = site.write_local(&format!("in{size}"), &data);
        let name = format!("size-{size}.bin");
        let r = site.put(&local, &name, &[proto]);
        assert_eq!(
            r.status,
            201,
            "PUT {size} B: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["size"], size as u64);
        let back = site.get(&name, &[proto]);
        assert_eq!(back.status, 200);
        assert_eq!(back.body.len(), size, "{size} B over {proto}");
        assert_eq!(sha256(&back.body), sha256(&data), "{size} B over {proto}");
    }
    // Replacing answers 204 and the new content is served.
    let newer = bytes(CHUNK + 5, 99);
    let local = site.write_local("newer", &newer);
    assert_eq!(site.put(&local, "size-1.bin", &[]).status, 204);
    assert_eq!(sha256(&site.get("size-1.bin", &[]).body), sha256(&newer));
    // curl -T into a folder that does not exist yet creates it.
    let deep = site.put(&local, "reports/2026/q4.bin", &[]);
    assert_eq!(deep.status, 201);
    assert_eq!(deep.json()["path"], "/reports/2026/q4.bin");
    assert_eq!(
        sha256(&site.get("reports/2026/q4.bin", &[]).body),
        sha256(&newer)
    );
}

#[test]
fn curl_large_file_round_trip_keeps_its_sha256() {
    // 256 MiB by default; COFFER_TEST_HTTPS_MIB=1024 for the full 1 GiB.
    let mib: usize = std::env::var("COFFER_TEST_HTTPS_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let site = Site::new();
    let block = bytes(1 << 20, 7);
    let local = site.local.join("large.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&local).unwrap());
        for i in 0..mib {
            f.write_all(&(i as u64).to_le_bytes()).unwrap();
            f.write_all(&block[8..]).unwrap();
        }
    }
    let want = sha256(&std::fs::read(&local).unwrap());
    let t = Instant::now();
    let up = site.put(&local, "large.bin", &[]);
    assert_eq!(up.status, 201, "{}", String::from_utf8_lossy(&up.body));
    println!("PUT {mib} MiB in {:?}", t.elapsed());
    let out = site.local.join("large.out");
    let t = Instant::now();
    let url = site.url("/api/v1/files/large.bin");
    let creds = format!("alice:{PASSWORD}");
    let st = Command::new("curl")
        .args(["-sS", "-k", "--fail", "-u", &creds, "-o"])
        .arg(&out)
        .arg(&url)
        .status()
        .unwrap();
    assert!(st.success());
    println!("GET {mib} MiB in {:?}", t.elapsed());
    assert_eq!(std::fs::metadata(&out).unwrap().len(), (mib as u64) << 20);
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), want);
}

#[test]
fn ranges_conditional_get_head_and_content_disposition() {
    let site = Site::new();
    let size = 200_000;
    let data = bytes(size, 5);
    let local = site.write_local("r.bin", &data);
    // The file is named `résumé "Q4" & more.bin`.
    let remote = "r%C3%A9sum%C3%A9%20%22Q4%22%20%26%20more.bin";
    assert_eq!(site.put(&local, remote, &[]).status, 201);

    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-0", 0, 0),
        ("bytes=199999-199999", 199_999, 199_999),
        ("bytes=65530-65545", 65_530, 65_545),
        ("bytes=-100", size - 100, size - 1),
        ("bytes=131000-", 131_000, size - 1),
    ];
    for (range, first, last) in cases {
        let r = site.get(remote, &["-H", &format!("Range: {range}")]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range").unwrap(),
            format!("bytes {first}-{last}/{size}"),
            "{range}"
        );
        assert_eq!(r.body, &data[first..=last], "{range}");
    }
    let r = site.get(remote, &["-H", "Range: bytes=200000-"]);
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range").unwrap(),
        format!("bytes */{size}")
    );
    assert_eq!(r.code(), "range_not_satisfiable");

    let full = site.get(remote, &[]);
    assert_eq!(full.status, 200);
    let etag = full.header("etag").unwrap();
    assert!(etag.starts_with('"'), "{etag}");
    assert!(full.header("last-modified").unwrap().ends_with("gmt"));
    let cd = full.header("content-disposition").unwrap();
    assert!(
        cd.contains("filename*=utf-8''r%c3%a9sum%c3%a9%20%22q4%22%20%26%20more.bin"),
        "{cd}"
    );

    let cached = site.get(remote, &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());

    let head = site.get(remote, &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").unwrap(), size.to_string());
    assert_eq!(head.header("etag").unwrap(), etag);

    // A new version gets a new ETag: the old one no longer matches.
    let local2 = site.write_local("r2.bin", &bytes(10, 6));
    assert_eq!(site.put(&local2, remote, &[]).status, 204);
    let after = site.get(remote, &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!(after.status, 200);
    assert_eq!(after.body.len(), 10);
}

#[test]
fn folders_listing_move_delete_and_json_errors() {
    let site = Site::new();
    let r = site.alice(&["-X", "POST", &site.url("/api/v1/folders/inbox")]);
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["type"], "folder");
    let again = site.alice(&["-X", "POST", &site.url("/api/v1/folders/inbox")]);
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "already_exists");

    let local = site.write_local("a.txt", b"hello");
    assert_eq!(site.put(&local, "inbox/a.txt", &[]).status, 201);
    let list = site.alice(&[&site.url("/api/v1/list/inbox")]).json();
    assert_eq!(list["path"], "/inbox");
    assert_eq!(list["entries"][0]["name"], "a.txt");
    assert_eq!(list["entries"][0]["type"], "file");
    assert_eq!(list["entries"][0]["size"], 5);
    let root = site.alice(&[&site.url("/api/v1/list")]).json();
    assert_eq!(root["entries"][0]["name"], "inbox");
    assert_eq!(root["entries"][0]["type"], "folder");

    let mv = site.alice(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"from": "/inbox/a.txt", "to": "/inbox/b.txt"}"#,
        &site.url("/api/v1/move"),
    ]);
    assert_eq!(mv.status, 200, "{}", String::from_utf8_lossy(&mv.body));
    assert_eq!(site.get("inbox/b.txt", &[]).body, b"hello");
    let gone = site.get("inbox/a.txt", &[]);
    assert_eq!(gone.status, 404);
    assert_eq!(gone.code(), "not_found");
    assert!(!gone.json()["message"].as_str().unwrap().is_empty());

    let not_empty = site.alice(&["-X", "DELETE", &site.url("/api/v1/files/inbox")]);
    assert_eq!(not_empty.status, 409);
    assert_eq!(not_empty.code(), "not_empty");
    let del = site.alice(&["-X", "DELETE", &site.url("/api/v1/files/inbox/b.txt")]);
    assert_eq!(del.status, 204);
    assert_eq!(site.get("inbox/b.txt", &[]).status, 404);
    assert_eq!(
        site.alice(&["-X", "DELETE", &site.url("/api/v1/files/inbox")])
            .status,
        204
    );
    let empty = site.alice(&[&site.url("/api/v1/list/")]).json();
    assert_eq!(empty["entries"].as_array().unwrap().len(), 0);

    let doc = site.curl(&[&site.url("/api/v1/openapi.json")]).json();
    assert_eq!(doc["openapi"], "3.0.3");
    for method in ["get", "put", "delete", "head"] {
        assert!(
            doc["paths"]["/api/v1/files/{path}"][method].is_object(),
            "{method}"
        );
    }
    assert!(doc["paths"]["/api/v1/move"]["post"].is_object());
}

#[test]
fn wrong_passwords_get_401_and_a_locked_account_answers_the_same() {
    let site = Site::new();
    site.env.add_user("acme", "bob", PASSWORD);
    let url = site.url("/api/v1/list");
    let none = site.curl(&[&url]);
    assert_eq!(none.status, 401);
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("basic")
    );
    assert_eq!(none.code(), "auth_failed");
    let bearer = site.curl(&["-H", "Authorization: Bearer not-a-token", &url]);
    assert_eq!(bearer.status, 401);
    for i in 0..5 {
        let r = site.curl(&["-u", "bob:wrong password", &url]);
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let locked = site.curl(&["-u", &format!("bob:{PASSWORD}"), &url]);
    // No 429 for existing users only: that would tell who exists (docs/SECURITY.md).
    assert_eq!(
        locked.status,
        401,
        "{}",
        String::from_utf8_lossy(&locked.body)
    );
    assert_eq!(locked.code(), "auth_failed");
    // alice is not affected.
    assert_eq!(site.alice(&[&url]).status, 200);
}

#[test]
fn dot_dot_and_encoded_dot_dot_cannot_leave_the_home_folder() {
    let site = Site::new();
    site.env.add_user("other", "carol", PASSWORD);
    let secret = site.write_local("secret", b"carol's data");
    let carol = format!("carol:{PASSWORD}");
    let up = site.curl(&[
        "-u",
        &carol,
        "-T",
        secret.to_str().unwrap(),
        &site.url("/api/v1/files/secret.txt"),
    ]);
    assert_eq!(up.status, 201);
    let local = site.write_local("x", b"x");
    for path in [
        "/api/v1/files/../../secret.txt",
        "/api/v1/files/%2e%2e/secret.txt",
        "/api/v1/files/%2E%2E/%2e%2e/carol/secret.txt",
        "/api/v1/files/a/..%2F..%2Fsecret.txt",
        "/api/v1/list/%2e%2e",
    ] {
        let r = site.alice(&["--path-as-is", &site.url(path)]);
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(!r.body.windows(5).any(|w| w == b"carol"), "{path}");
        // HTTP/1.1: a PUT that the router refuses (405 on /list) is answered before its body
        // is read, and over HTTP/2 curl may then see the stream reset instead of the reply.
        let put = site.alice(&[
            "--http1.1",
            "--path-as-is",
            "-T",
            local.to_str().unwrap(),
            &site.url(path),
        ]);
        assert!(
            matches!(put.status, 400 | 404 | 405),
            "PUT {path}: {}",
            put.status
        );
    }
    let r = site.alice(&["--path-as-is", &site.url("/api/v1/files/%2e%2e/x")]);
    assert_eq!(r.code(), "invalid_path");
    // Nothing landed in alice's root, and carol's file is untouched.
    let root = site.alice(&[&site.url("/api/v1/list")]).json();
    assert_eq!(root["entries"].as_array().unwrap().len(), 0, "{root}");
    let back = site.curl(&["-u", &carol, &site.url("/api/v1/files/secret.txt")]);
    assert_eq!(back.body, b"carol's data");
}

/// Logs in through the form with a cookie jar; returns the jar path and the page's CSRF token.
fn browser_login(site: &Site, jar: &Path) -> (Reply, String) {
    let jar_s = jar.to_str().unwrap();
    let form = site.curl(&["-c", jar_s, "-b", jar_s, &site.url("/login")]);
    assert_eq!(form.status, 200);
    let html = String::from_utf8_lossy(&form.body).to_string();
    let csrf = between(&html, r#"name="csrf" value=""#, "\"");
    let login = site.curl(&[
        "-c",
        jar_s,
        "-b",
        jar_s,
        "--data-urlencode",
        "user=alice",
        "--data-urlencode",
        &format!("password={PASSWORD}"),
        "--data-urlencode",
        &format!("csrf={csrf}"),
        &site.url("/login"),
    ]);
    assert_eq!(
        login.status,
        303,
        "{}",
        String::from_utf8_lossy(&login.body)
    );
    let page = site.curl(&["-b", jar_s, &site.url("/files/")]);
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    let token = between(&html, r#"<meta name="csrf-token" content=""#, "\"");
    (login, token)
}

fn between(hay: &str, start: &str, end: &str) -> String {
    let i = hay
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in {hay}"))
        + start.len();
    let j = hay[i..].find(end).unwrap() + i;
    hay[i..j].to_owned()
}

#[test]
fn browser_session_cookie_flags_csrf_and_security_headers() {
    let site = Site::new();
    let jar = site.local.join("jar");
    let jar_s = jar.to_str().unwrap();

    // A login post without the form's token is refused.
    let forged = site.curl(&[
        "--data",
        &format!("user=alice&password={PASSWORD}&csrf=forged"),
        &site.url("/login"),
    ]);
    assert_eq!(forged.status, 403);
    assert!(
        forged
            .header("set-cookie")
            .is_none_or(|c| !c.contains("coffer_session"))
    );

    let (login, csrf) = browser_login(&site, &jar);
    let cookie = login
        .headers
        .lines()
        .find(|l| l.starts_with("set-cookie: coffer_session="))
        .unwrap()
        .to_owned();
    for flag in ["httponly", "secure", "samesite=strict", "path=/"] {
        assert!(cookie.contains(flag), "{flag} missing from {cookie}");
    }
    let page = site.curl(&["-b", jar_s, &site.url("/files/")]);
    assert!(String::from_utf8_lossy(&page.body).contains("Upload files"));
    for (h, want) in [
        ("strict-transport-security", "max-age="),
        ("content-security-policy", "script-src 'self'"),
        ("content-security-policy", "frame-ancestors 'none'"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert!(
            page.header(h).is_some_and(|v| v.contains(want)),
            "{h} should contain {want}: {:?}",
            page.header(h)
        );
    }
    assert!(
        !page
            .header("content-security-policy")
            .unwrap()
            .contains("unsafe-inline")
    );

    // State changes with the session cookie but without the CSRF token are refused.
    let local = site.write_local("f.txt", b"from the browser");
    let url = site.url("/api/v1/files/f.txt");
    let no_token = site.curl(&["-b", jar_s, "-T", local.to_str().unwrap(), &url]);
    assert_eq!(no_token.status, 403);
    assert_eq!(no_token.code(), "csrf");
    let wrong = site.curl(&[
        "-b",
        jar_s,
        "-H",
        "X-CSRF-Token: 00",
        "-X",
        "POST",
        &site.url("/api/v1/folders/x"),
    ]);
    assert_eq!(wrong.status, 403);
    assert_eq!(
        site.alice(&[&site.url("/api/v1/list")]).json()["entries"],
        serde_json::json!([])
    );

    // With the token it works; GETs need none.
    let header = format!("X-CSRF-Token: {csrf}");
    let ok = site.curl(&[
        "-b",
        jar_s,
        "-H",
        &header,
        "-T",
        local.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(ok.status, 201);
    assert_eq!(site.curl(&["-b", jar_s, &url]).body, b"from the browser");

    // A browser-flagged cross-site request is refused even with valid Basic credentials.
    let cross = site.alice(&["-H", "Sec-Fetch-Site: cross-site", "-X", "DELETE", &url]);
    assert_eq!(cross.status, 403);
    assert_eq!(site.get("f.txt", &[]).status, 200);

    // Logout needs the token too, then the session is dead.
    let bad_logout = site.curl(&["-b", jar_s, "--data", "csrf=nope", &site.url("/logout")]);
    assert_eq!(bad_logout.status, 403);
    let logout = site.curl(&[
        "-b",
        jar_s,
        "-c",
        jar_s,
        "--data",
        &format!("csrf={csrf}"),
        &site.url("/logout"),
    ]);
    assert_eq!(logout.status, 303);
    assert_eq!(logout.header("location").unwrap(), "/login");
    let after = site.curl(&["-b", jar_s, &site.url("/files/")]);
    assert_eq!(after.status, 303);
    assert_eq!(after.header("location").unwrap(), "/login");
}

#[test]
fn session_expires_after_the_idle_timeout() {
    let env = Env::new("");
    let toml = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        toml.replacen("[https]\n", "[https]\nsession_idle_secs = 2\n", 1),
    )
    .unwrap();
    env.add_user("acme", "alice", PASSWORD);
    let local = env.dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let server = Some(env.serve());
    let site = Site {
        env,
        server,
        local,
        calls: AtomicUsize::new(0),
    };
    let jar = site.local.join("jar");
    let jar_s = jar.to_str().unwrap();
    browser_login(&site, &jar);
    assert_eq!(site.curl(&["-b", jar_s, &site.url("/files/")]).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let r = site.curl(&["-b", jar_s, &site.url("/files/")]);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").unwrap(), "/login");
}

#[test]
fn canary_scan_is_clean_after_https_uploads() {
    let mut site = Site::new();
    let m = marker();
    let mut content = bytes(3 * CHUNK, 3);
    content.extend_from_slice(m.as_bytes());
    content.extend(std::iter::repeat_n(b'A', 1000));
    content.extend_from_slice(m.as_bytes());
    let local = site.write_local("canary", &content);
    let folder = format!("{m}-folder");
    let r = site.alice(&[
        "-X",
        "POST",
        &site.url(&format!("/api/v1/folders/{folder}")),
    ]);
    assert_eq!(r.status, 201);
    let remote = format!("{folder}/{m}.txt");
    assert_eq!(site.put(&local, &remote, &["--http2"]).status, 201);
    assert_eq!(sha256(&site.get(&remote, &[]).body), sha256(&content));
    let list = site.alice(&[&site.url(&format!("/api/v1/list/{folder}"))]);
    assert!(String::from_utf8_lossy(&list.body).contains(&m));
    let (ok, logs) = site.server.take().unwrap().stop();
    assert!(ok, "serve did not stop cleanly:\n{logs}");
    assert_no_canary(&site.env.data_dir(), &[("server log", logs.as_bytes())], &m);
}

/// The browser test's folder: `integration/browser` with playwright-core installed.
fn browser_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let st = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status();
        if !st.is_ok_and(|s| s.success()) {
            return None;
        }
    }
    Some(dir)
}

#[test]
fn headless_chromium_logs_in_uploads_downloads_renames_deletes_and_logs_out() {
    if std::env::var_os("COFFER_SKIP_CHROMIUM").is_some() {
        println!("COFFER_SKIP_CHROMIUM is set: skipping the browser test");
        return;
    }
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "/usr/bin/chromium is missing: apt-get install -y chromium (or set COFFER_SKIP_CHROMIUM=1)"
    );
    let dir = browser_dir().expect(
        "npm install of playwright-core in integration/browser failed: install npm and run `npm install` there (or set COFFER_SKIP_CHROMIUM=1)",
    );
    let site = Site::new();
    let one = bytes(300_000, 11);
    let two = b"second file, small\n".to_vec();
    site.write_local("report one.bin", &one);
    site.write_local("notes-é.txt", &two);
    // Same names, other contents: uploading them must ask before anything is replaced.
    let again = site.local.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let one_again = bytes(1234, 12);
    let two_again = b"second file, replaced\n".to_vec();
    std::fs::write(again.join("report one.bin"), &one_again).unwrap();
    std::fs::write(again.join("notes-é.txt"), &two_again).unwrap();
    let shots = artifact_dir();
    let out = Command::new("node")
        .arg(dir.join("ui-test.mjs"))
        .env("COFFER_URL", site.url(""))
        .env("COFFER_USER", "alice")
        .env("COFFER_PASSWORD", PASSWORD)
        .env("UPLOAD_ONE", site.local.join("report one.bin"))
        .env("UPLOAD_TWO", site.local.join("notes-é.txt"))
        .env("UPLOAD_ONE_AGAIN", again.join("report one.bin"))
        .env("UPLOAD_TWO_AGAIN", again.join("notes-é.txt"))
        .env(
            "TWO_AGAIN_TEXT",
            String::from_utf8(two_again.clone()).unwrap(),
        )
        .env("DOWNLOAD_DIR", &site.local)
        .env("SCREENSHOT_DIR", &shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser script failed:\n{stdout}\n{stderr}\n{}",
        site.server().logs()
    );
    // The downloaded copy matches what was uploaded through the page.
    let downloaded = std::fs::read(site.local.join("downloaded.bin")).unwrap();
    assert_eq!(sha256(&downloaded), sha256(&one));
    // What the browser left: the folder with the renamed file, the deleted one gone.
    let list = site
        .alice(&[&site.url("/api/v1/list/Shared%20stuff")])
        .json();
    let mut names: Vec<_> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "renamed report.bin".to_owned(),
            "report one (1).bin".to_owned()
        ],
        "{list}"
    );
    // "Keep both" left the first upload as it was and stored the second beside it.
    assert_eq!(
        sha256(&site.get("Shared%20stuff/renamed%20report.bin", &[]).body),
        sha256(&one)
    );
    assert_eq!(
        sha256(&site.get("Shared%20stuff/report%20one%20(1).bin", &[]).body),
        sha256(&one_again)
    );
    // The refused rename to "../escaped.bin" moved nothing out of the folder.
    let root = site.alice(&[&site.url("/api/v1/list/")]).json();
    assert_eq!(root["entries"].as_array().unwrap().len(), 1, "{root}");
    println!("screenshots in {}", shots.display());
}

/// Where screenshots go: `$CARGO_TARGET_DIR/../https-artifacts` or under the target dir.
fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    let dir = target.join("https-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_api_token_uploads_and_downloads_until_it_is_revoked() {
    let site = Site::new();
    let token = site
        .env
        .ok(&["token", "create", "--user", "alice"], "")
        .trim()
        .to_owned();
    let auth = format!("Authorization: Bearer {token}");
    let data = bytes(100_000, 7);
    let local = site.write_local("by-token.bin", &data);
    let url = site.url("/api/v1/files/by-token.bin");
    let put = site.curl(&["-H", &auth, "-T", local.to_str().unwrap(), &url]);
    assert_eq!(put.status, 201, "upload with the token");
    // Uploaded as alice: her password sees it.
    let listed = site.alice(&[&site.url("/api/v1/list/")]).json();
    assert!(
        listed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "by-token.bin"),
        "{listed}"
    );
    let get = site.curl(&["-H", &auth, &url]);
    assert_eq!(get.status, 200);
    assert_eq!(sha256(&get.body), sha256(&data));

    let id = token.split('_').nth(1).unwrap();
    site.env.ok(&["token", "revoke", "--user", "alice", id], "");
    let after = site.curl(&["-H", &auth, &url]);
    assert_eq!(after.status, 401, "a revoked token still works");
    assert_eq!(after.code(), "auth_failed");
}

#[test]
fn every_api_response_is_json_unknown_routes_405_and_bearer_challenges() {
    let site = Site::new();
    // Unknown endpoints and /api/v1/files/ without a path: JSON no_route, never the HTML page.
    for path in [
        "/api/v1/nope",
        "/api/v1/files/",
        "/api/v1/files",
        "/api/v1/list/x/../..",
    ] {
        let r = site.alice(&["--path-as-is", &site.url(path)]);
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{path}: {:?} {}",
            r.header("content-type"),
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.status >= 400, "{path}: {}", r.status);
        assert!(!r.json()["message"].as_str().unwrap().is_empty(), "{path}");
    }
    let nope = site.alice(&[&site.url("/api/v1/nope")]);
    assert_eq!((nope.status, nope.code()), (404, "no_route".to_owned()));
    let files = site.alice(&[&site.url("/api/v1/files/")]);
    assert_eq!((files.status, files.code()), (404, "no_route".to_owned()));
    // Outside the API the HTML page stays.
    let page = site.curl(&[&site.url("/nope")]);
    assert_eq!(page.status, 404);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );

    // A method an endpoint does not take: 405 with a JSON body, Allow kept.
    for (method, path) in [
        ("POST", "/api/v1/list"),
        ("DELETE", "/api/v1/openapi.json"),
        ("PATCH", "/api/v1/files/a.txt"),
    ] {
        let r = site.alice(&["-X", method, &site.url(path)]);
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.code(), "method_not_allowed", "{method} {path}");
        assert!(r.header("allow").is_some(), "{method} {path}: no Allow");
    }

    // A bearer token that is wrong gets a Bearer challenge; no credentials get both schemes.
    let url = site.url("/api/v1/list");
    let bearer = site.curl(&["-H", "Authorization: Bearer cft_nope_nope", &url]);
    assert_eq!(bearer.status, 401);
    assert_eq!(bearer.code(), "auth_failed");
    let challenges = bearer.header_all("www-authenticate");
    assert!(
        challenges.iter().any(|c| c.starts_with("bearer")),
        "{challenges:?}"
    );
    let none = site.curl(&[&url]);
    let challenges = none.header_all("www-authenticate");
    assert!(
        challenges.iter().any(|c| c.starts_with("bearer")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("basic")),
        "{challenges:?}"
    );

    // A body the move endpoint cannot read: JSON bad_request.
    let bad = site.alice(&[
        "-X",
        "POST",
        "--data",
        "not json",
        &site.url("/api/v1/move"),
    ]);
    assert_eq!((bad.status, bad.code()), (400, "bad_request".to_owned()));
}

#[test]
fn put_with_if_none_match_star_never_replaces_and_rename_refuses_separators() {
    let site = Site::new();
    let first = site.write_local("first", b"first version");
    let second = site.write_local("second", b"second version");
    assert_eq!(site.put(&first, "docs/a.txt", &[]).status, 201);
    // Create-only upload over an existing name: 412, the file untouched.
    let r = site.put(&second, "docs/a.txt", &["-H", "If-None-Match: *"]);
    assert_eq!(r.status, 412, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.code(), "precondition_failed");
    assert_eq!(site.get("docs/a.txt", &[]).body, b"first version");
    // ... and to a free name it creates.
    let r = site.put(&second, "docs/b.txt", &["-H", "If-None-Match: *"]);
    assert_eq!(r.status, 201);

    let mv = |body: &str| {
        site.alice(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            body,
            &site.url("/api/v1/move"),
        ])
    };
    // A new name with a separator or a dot-dot would move the file: refused, nothing moves.
    for name in ["../a.txt", "x/a.txt", "x\\\\a.txt", "..", ".", ""] {
        let r = mv(&format!(r#"{{"from": "/docs/a.txt", "name": "{name}"}}"#));
        assert_eq!(
            r.status,
            400,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.code(), "invalid_name", "{name}");
    }
    assert_eq!(site.get("docs/a.txt", &[]).body, b"first version");
    let root = site.alice(&[&site.url("/api/v1/list")]).json();
    assert_eq!(root["entries"].as_array().unwrap().len(), 1, "{root}");
    // A plain new name renames in place.
    let r = mv(r#"{"from": "/docs/a.txt", "name": "c.txt"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/docs/c.txt");
    assert_eq!(site.get("docs/c.txt", &[]).body, b"first version");
    // Both or neither of to/name: bad_request.
    let r = mv(r#"{"from": "/docs/c.txt", "name": "d.txt", "to": "/d.txt"}"#);
    assert_eq!((r.status, r.code()), (400, "bad_request".to_owned()));
    // Moving stays an explicit action through "to".
    let r = mv(r#"{"from": "/docs/c.txt", "to": "/c.txt"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(site.get("c.txt", &[]).body, b"first version");
}

/// A rustls client trusting the site's generated certificate.
fn client_tls(site: &Site) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let cert = site.env.data_dir().join("tls").join("cert.pem");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A `PUT` over HTTP/1.1 that announces `data.len()` bytes, sends the first `sent`, waits for
/// the server to take them, then closes the TCP connection without TLS `close_notify` — what a
/// killed client or a reset connection does.
fn cut_off_put(site: &Site, remote: &str, data: &[u8], sent: usize) {
    use base64::Engine;
    use std::io::Write;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", site.env.ports.https)).unwrap();
    let conn =
        rustls::ClientConnection::new(client_tls(site), "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}").as_bytes());
    write!(
        tls,
        "PUT /api/v1/files/{remote} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .unwrap();
    tls.write_all(&data[..sent]).unwrap();
    tls.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    tls.sock.shutdown(std::net::Shutdown::Both).unwrap();
}

/// Waits until the server log holds `n` lines containing `what`.
fn wait_for_log(site: &Site, what: &str, n: usize) {
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let logs = site.server().logs();
        if logs.matches(what).count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {n}× '{what}' in the log:\n{logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn an_upload_cut_off_midway_never_replaces_and_keeps_a_new_names_prefix() {
    let site = Site::new();
    let old = bytes(200_000, 21);
    let local = site.write_local("old", &old);
    assert_eq!(site.put(&local, "report.bin", &[]).status, 201);

    // A replace cut off halfway: the old version stays, whole.
    let new = bytes(300_000, 22);
    cut_off_put(&site, "report.bin", &new, 150_000);
    wait_for_log(&site, "upload interrupted", 1);
    let back = site.get("report.bin", &[]);
    assert_eq!(back.status, 200);
    assert_eq!(
        sha256(&back.body),
        sha256(&old),
        "the old version was damaged"
    );

    // A new name cut off halfway: the bytes received are kept (keep_partial = "new-files").
    cut_off_put(&site, "fresh.bin", &new, 150_000);
    wait_for_log(&site, "upload interrupted", 2);
    let kept = site.get("fresh.bin", &[]);
    assert_eq!(kept.status, 200, "the prefix of a new name was not kept");
    assert_eq!(kept.body.len(), 150_000);
    assert_eq!(sha256(&kept.body), sha256(&new[..150_000]));

    // A killed curl (no close_notify, the kernel closes the socket) mid-replace: old stays.
    let big = bytes(4 << 20, 23);
    let big_local = site.write_local("big", &big);
    let url = site.url("/api/v1/files/report.bin");
    let creds = format!("alice:{PASSWORD}");
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--http1.1",
            "--limit-rate",
            "512k",
            "-u",
            &creds,
            "-T",
        ])
        .arg(&big_local)
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    curl.kill().unwrap();
    curl.wait().unwrap();
    wait_for_log(&site, "upload interrupted", 3);
    assert_eq!(sha256(&site.get("report.bin", &[]).body), sha256(&old));
    let logs = site.server().logs();
    assert!(logs.contains("upload interrupted; kept"), "{logs}");
}

#[test]
fn with_keep_partial_never_a_cut_off_upload_leaves_nothing() {
    let site = Site::with("\n[uploads]\nkeep_partial = \"never\"\n");
    let old = bytes(100_000, 31);
    let local = site.write_local("old", &old);
    assert_eq!(site.put(&local, "kept.bin", &[]).status, 201);
    let new = bytes(300_000, 32);
    cut_off_put(&site, "fresh.bin", &new, 150_000);
    wait_for_log(&site, "upload interrupted", 1);
    cut_off_put(&site, "kept.bin", &new, 150_000);
    wait_for_log(&site, "upload interrupted", 2);
    let gone = site.get("fresh.bin", &[]);
    assert_eq!((gone.status, gone.code()), (404, "not_found".to_owned()));
    assert_eq!(sha256(&site.get("kept.bin", &[]).body), sha256(&old));
    let root = site.alice(&[&site.url("/api/v1/list")]).json();
    assert_eq!(root["entries"].as_array().unwrap().len(), 1, "{root}");
    assert_eq!(
        site.server()
            .logs()
            .matches("upload interrupted; discarded")
            .count(),
        2
    );
}

/// `(notBefore, notAfter)` of the certificate the server presents, in Unix seconds, read by
/// `openssl s_client` and `openssl x509 -dates`.
fn served_dates(port: u16) -> (i64, i64) {
    let pem = served_certificate(port, &[]);
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-dates", "-dateopt", "iso_8601"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is required: apt-get install openssl");
    {
        use std::io::Write;
        x509.stdin
            .take()
            .unwrap()
            .write_all(pem.as_bytes())
            .unwrap();
    }
    let out = x509.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let date = |key: &str| {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} not in {text}"));
        iso_seconds(line.trim())
    };
    (date("notBefore="), date("notAfter="))
}

/// The output of `openssl s_client` against the HTTPS port (its certificate is in it).
fn served_certificate(port: u16, extra: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is required: apt-get install openssl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `2026-12-04 18:44:52Z` as Unix seconds.
fn iso_seconds(s: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap() };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const DAY_SECS: i64 = 86_400;

/// Writes a certificate and key made by openssl, valid for `days` from now, to `dir`.
fn openssl_certificate(dir: &Path, days: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .args(["-days", &days.to_string(), "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is required: apt-get install openssl");
    assert!(st.success());
}

#[test]
fn the_generated_certificate_is_valid_for_a_year_and_the_server_picks_the_cipher() {
    let site = Site::new();
    let (from, to) = served_dates(site.env.ports.https);
    let now = unix_now();
    assert!((now - from).abs() < DAY_SECS, "notBefore {from}, now {now}");
    let left = to - now;
    assert!(
        left > 364 * DAY_SECS && left <= 366 * DAY_SECS,
        "valid for {} days",
        left / DAY_SECS
    );
    // The server's order of suites wins: a client that lists AES-128 and ChaCha20 before
    // AES-256 still gets AES-256-GCM.
    let out = served_certificate(
        site.env.ports.https,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
        ],
    );
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{out}"
    );
}

#[test]
fn a_generated_certificate_near_its_end_or_valid_for_decades_is_renewed_at_start() {
    for days in [10, 800_000] {
        let env = Env::new("");
        let tls = env.data_dir().join("tls");
        openssl_certificate(&tls, days);
        let before = std::fs::read(tls.join("cert.pem")).unwrap();
        let server = env.serve();
        let (_, to) = served_dates(env.ports.https);
        let left = to - unix_now();
        assert!(
            left > 364 * DAY_SECS && left <= 366 * DAY_SECS,
            "{days}-day certificate: now valid for {} days\n{}",
            left / DAY_SECS,
            server.logs()
        );
        assert_ne!(std::fs::read(tls.join("cert.pem")).unwrap(), before);
        assert!(
            server
                .logs()
                .contains("generated a self-signed TLS certificate")
        );
    }
}

#[test]
fn the_operators_certificate_is_served_as_is_even_close_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    openssl_certificate(dir.path(), 5);
    let before = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let env = Env::new(&format!(
        "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    ));
    let server = env.serve();
    let (_, to) = served_dates(env.ports.https);
    let left = to - unix_now();
    assert!(
        left > 4 * DAY_SECS && left <= 5 * DAY_SECS,
        "valid for {} days",
        left / DAY_SECS
    );
    assert_eq!(std::fs::read(dir.path().join("cert.pem")).unwrap(), before);
    assert!(!env.data_dir().join("tls").join("cert.pem").exists());
    assert!(!server.logs().contains("generated a self-signed"));
}

#[test]
fn idle_strangers_cannot_keep_a_real_user_out_and_are_closed_after_the_grace_time() {
    use std::io::Read;
    let site = Site::with("\n[limits]\nlogin_grace_secs = 2\n");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], site.env.ports.https));
    // 300 connections from 127.0.0.1 that never say anything.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let s =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        idle.push(s);
    }
    let closed = |socks: &[std::net::TcpStream]| {
        socks
            .iter()
            .filter(|s| {
                let mut b = [0u8; 16];
                let mut r: &std::net::TcpStream = s;
                match r.read(&mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            })
            .count()
    };
    // A real user from another address logs in and lists at once.
    let t = Instant::now();
    let creds = format!("alice:{PASSWORD}");
    let out = Command::new("curl")
        .args(["-sS", "-k", "--interface", "127.0.0.9", "--max-time", "5"])
        .args(["-u", &creds, "-w", "\n%{http_code}"])
        .arg(site.url("/api/v1/list"))
        .output()
        .expect("curl is required for the HTTPS tests: apt-get install curl");
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.ends_with("200"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    // Beyond the per-address limit (32) the strangers were closed at once...
    let early = closed(&idle);
    assert!(early >= 300 - 32, "only {early} of 300 closed at once");
    // ... and the rest once the 2 s grace time has passed.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let late = closed(&idle);
    assert_eq!(late, 300, "{late} of 300 closed after the grace time");
    let logs = site.server().logs();
    assert!(logs.contains("connection refused before login"), "{logs}");
    assert!(logs.contains("within the login grace time"), "{logs}");
}

/// One HTTP/1.1 keep-alive connection over TLS (rustls), requests sent one at a time: the
/// server sees every request of a test on the same connection.
struct KeepAlive {
    tls: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
}

impl KeepAlive {
    fn open(site: &Site) -> Self {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", site.env.ports.https)).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let conn = rustls::ClientConnection::new(client_tls(site), "localhost".try_into().unwrap())
            .unwrap();
        Self {
            tls: rustls::StreamOwned::new(conn, tcp),
        }
    }

    /// `GET path` with `Authorization: authorization`; the status (the body is read and
    /// dropped). Panics if the server closed the connection.
    fn get(&mut self, path: &str, authorization: &str) -> u16 {
        use std::io::{BufRead, Read, Write};
        write!(
            self.tls,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {authorization}\r\n\r\n"
        )
        .unwrap();
        self.tls.flush().unwrap();
        let mut reader = std::io::BufReader::new(&mut self.tls);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).unwrap();
            assert!(n > 0, "the server closed the keep-alive connection");
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let status: u16 = head[0].split(' ').nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .iter()
            .find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        // The BufReader holds nothing more: the server answers one request at a time.
        assert!(reader.buffer().is_empty());
        status
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b}")
}

/// Login audit rows of `user` with `outcome`, waiting up to 10 s for `at_least` of them (the
/// audit is written in the background).
fn login_audits(site: &Site, user: &str, outcome: &str, at_least: usize) -> usize {
    let db = site.env.data_dir().join("meta.db");
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg(format!(
                "SELECT COUNT(*) FROM audit WHERE protocol = 'https' AND user_name = '{user}' \
                 AND outcome = '{outcome}'"
            ))
            .output()
            .expect("sqlite3 is required (apt-get install sqlite3)");
        let n: usize = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_password_changed_by_the_cli_refuses_the_old_one_on_the_next_keep_alive_request() {
    let site = Site::new();
    let mut conn = KeepAlive::open(&site);
    let old = basic("alice", PASSWORD);
    let new = basic("alice", "a brand new passphrase");
    // Verified once, then served from the cache on the same connection.
    for i in 0..3 {
        assert_eq!(conn.get("/api/v1/list/", &old), 200, "request {i}");
    }
    site.env.ok(
        &["user", "passwd", "alice", "--password-stdin"],
        "a brand new passphrase\n",
    );
    assert_eq!(
        conn.get("/api/v1/list/", &old),
        401,
        "the old password still works after the CLI changed it"
    );
    assert_eq!(conn.get("/api/v1/list/", &new), 200, "the new password");
    assert_eq!(
        conn.get("/api/v1/list/", &new),
        200,
        "the new password, cached"
    );
    assert_eq!(
        conn.get("/api/v1/list/", &old),
        401,
        "the old password again"
    );
    // The refusals were counted and audited like any wrong password.
    assert!(login_audits(&site, "alice", "bad_credentials", 2) >= 2);
}

#[test]
fn a_user_disabled_by_the_cli_is_refused_on_the_next_request_and_enabled_again_works() {
    let site = Site::new();
    let token = site
        .env
        .ok(&["token", "create", "--user", "alice"], "")
        .trim()
        .to_owned();
    let bearer = format!("Bearer {token}");
    let pass = basic("alice", PASSWORD);
    let mut conn = KeepAlive::open(&site);
    for _ in 0..2 {
        assert_eq!(conn.get("/api/v1/list/", &pass), 200);
        assert_eq!(conn.get("/api/v1/list/", &bearer), 200);
    }
    site.env.ok(&["user", "disable", "alice"], "");
    assert_eq!(
        conn.get("/api/v1/list/", &pass),
        401,
        "password of a disabled user"
    );
    assert_eq!(
        conn.get("/api/v1/list/", &bearer),
        401,
        "token of a disabled user"
    );
    site.env.ok(&["user", "enable", "alice"], "");
    assert_eq!(conn.get("/api/v1/list/", &pass), 200, "enabled again");
    assert_eq!(
        conn.get("/api/v1/list/", &bearer),
        200,
        "enabled again, token"
    );
    // Both refusals were audited: the password one under the user's name, the token one
    // under the token's id.
    assert!(login_audits(&site, "alice", "disabled", 1) >= 1);
    let label = format!("token:{}", token.split('_').nth(1).unwrap());
    assert!(login_audits(&site, &label, "disabled", 1) >= 1);
}

#[test]
fn a_token_revoked_by_the_cli_is_refused_on_the_next_keep_alive_request() {
    let site = Site::new();
    let make = || {
        site.env
            .ok(&["token", "create", "--user", "alice"], "")
            .trim()
            .to_owned()
    };
    let (revoked, kept) = (make(), make());
    let mut conn = KeepAlive::open(&site);
    for _ in 0..3 {
        assert_eq!(conn.get("/api/v1/list/", &format!("Bearer {revoked}")), 200);
        assert_eq!(conn.get("/api/v1/list/", &format!("Bearer {kept}")), 200);
    }
    let id = revoked.split('_').nth(1).unwrap();
    site.env.ok(&["token", "revoke", "--user", "alice", id], "");
    assert_eq!(
        conn.get("/api/v1/list/", &format!("Bearer {revoked}")),
        401,
        "a revoked token still works"
    );
    assert_eq!(conn.get("/api/v1/list/", &format!("Bearer {kept}")), 200);
    // A wrong secret under a live token id is refused and audited, cache or not.
    let forged = format!(
        "{}{}",
        &kept[..kept.len() - 1],
        if kept.ends_with('A') { 'B' } else { 'A' }
    );
    assert_eq!(conn.get("/api/v1/list/", &format!("Bearer {forged}")), 401);
    assert!(
        login_audits(
            &site,
            &format!("token:{}", kept.split('_').nth(1).unwrap()),
            "bad_token",
            1
        ) >= 1
    );
}

#[test]
fn wrong_passwords_beside_a_cached_good_one_are_still_refused_counted_and_audited() {
    let site = Site::new();
    let mut conn = KeepAlive::open(&site);
    let good = basic("alice", PASSWORD);
    assert_eq!(conn.get("/api/v1/list/", &good), 200);
    // A wrong password from the same place and connection: refused each time, however warm
    // the cache of the right one, until the (name, address) lock refuses even the right one.
    for i in 0..5 {
        let wrong = basic("alice", &format!("wrong {i}"));
        assert_eq!(conn.get("/api/v1/list/", &wrong), 401, "wrong password {i}");
    }
    assert!(login_audits(&site, "alice", "bad_credentials", 5) >= 5);
    assert_eq!(
        conn.get("/api/v1/list/", &good),
        401,
        "the locked-out source is refused even with a cached password"
    );
    assert!(login_audits(&site, "alice", "throttled_name_address", 1) >= 1);
}

/// A tenant's quota, end to end: the upload that would take the tenant over it is refused
/// (507, `quota_exceeded`) and leaves nothing; a replace by a smaller file and a delete make
/// room. The count quotas are checked against is what `coffer fsck` checks: changed behind
/// the server's back (in `meta.db`), it refuses an upload that fits, fsck names the tenant
/// and both figures and fails, `fsck --repair` recounts, and the upload then goes through.
#[test]
fn a_tenant_quota_refuses_the_upload_beyond_it_and_fsck_repairs_a_drifted_count() {
    let site = Site::with_quota(10_000);
    let four = site.write_local("four.bin", &bytes(4_000, 1));
    let one = site.write_local("one.bin", &bytes(1_000, 2));
    assert_eq!(site.put(&four, "a.bin", &[]).status, 201);
    assert_eq!(site.put(&four, "b.bin", &[]).status, 201);
    let over = site.put(&four, "c.bin", &[]);
    assert_eq!(over.status, 507, "{}", String::from_utf8_lossy(&over.body));
    assert_eq!(over.code(), "quota_exceeded");
    assert_eq!(
        site.get("c.bin", &[]).status,
        404,
        "a refused upload leaves nothing"
    );
    assert_eq!(site.get("a.bin", &[]).body, bytes(4_000, 1));

    // A smaller a.bin (5,000 used) makes room for c.bin (9,000).
    assert!(site.put(&one, "a.bin", &[]).status / 100 == 2);
    assert_eq!(site.put(&four, "c.bin", &[]).status, 201);
    assert_eq!(site.put(&four, "d.bin", &[]).status, 507);
    let del = site.alice(&["-X", "DELETE", &site.url("/api/v1/files/b.bin")]);
    assert_eq!(del.status, 204);
    assert_eq!(site.put(&four, "d.bin", &[]).status, 201);
    // Clean once the replicator has copied the objects (fsck checks the replica too).
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let fsck = site.env.coffer(&["fsck"], "");
        let text = String::from_utf8_lossy(&fsck.stdout).into_owned();
        if fsck.status.success() {
            assert!(text.contains("3 files, 0 problems"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "fsck never came clean: {text}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    let list = site.env.ok(&["tenant", "list"], "");
    assert!(list.contains("\tquota=10000\tused=9000\tfiles=3"), "{list}");

    // 9,000 bytes in 3 files; the count is made to say 14,000 in 4.
    let db = site.env.data_dir().join("meta.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(".timeout 5000")
        .arg("UPDATE tenant_usage SET bytes = bytes + 5000, files = files + 1")
        .output()
        .expect("sqlite3 is required for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        site.put(&one, "e.bin", &[]).status,
        507,
        "checked against the count"
    );
    let drifted = site.env.coffer(&["fsck"], "");
    let text = String::from_utf8_lossy(&drifted.stdout);
    assert!(
        !drifted.status.success(),
        "fsck must fail on a drifted count: {text}"
    );
    assert!(
        text.contains("usage: tenant ")
            && text.contains(
                "the usage count says 14000 bytes in 4 files, its files hold 9000 bytes in 3"
            ),
        "{text}"
    );
    let repaired = site.env.ok(&["fsck", "--repair"], "");
    assert!(repaired.contains(" - recounted"), "{repaired}");
    assert!(repaired.contains("1 problems, 1 repaired"), "{repaired}");
    assert!(site.env.ok(&["fsck"], "").contains("3 files, 0 problems"));
    assert_eq!(site.put(&one, "e.bin", &[]).status, 201);
    assert_eq!(site.put(&one, "f.bin", &[]).status, 507);
}
