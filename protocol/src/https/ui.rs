//! The browser pages, rendered on the server: login, folder view, logout. Actions (upload,
//! new folder, rename, delete) are small scripts in `static/app.js` calling the API with the
//! session cookie and the page's CSRF token. No inline script or style: the CSP forbids them.

use std::time::SystemTime;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use coffer_storage::{ErrorKind, FileInfo, VPath};
use serde::Deserialize;
use tracing::{debug, info};

use super::api::refuse_cross_site;
use super::app::{AppState, Peer};
use super::auth::{LOGIN_COOKIE, SESSION_COOKIE, WebSession, cookie, random_token, tokens_equal};
use super::headers::{html_escape, pct_encode_path, rfc3339};

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

const FOLDER_ICON: &str = r#"<svg class="icon folder" viewBox="0 0 24 24" aria-hidden="true"><path d="M3 6.5A1.5 1.5 0 0 1 4.5 5h4.6l2 2h8.4A1.5 1.5 0 0 1 21 8.5v9a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 17.5z"/></svg>"#;
const FILE_ICON: &str = r#"<svg class="icon file" viewBox="0 0 24 24" aria-hidden="true"><path d="M6 3h8l5 5v12a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1zm7 1.5V9h4.5"/></svg>"#;

fn session_of(state: &AppState, headers: &HeaderMap) -> Option<(String, WebSession)> {
    let id = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie(c, SESSION_COOKIE))?;
    state.gate.session(id).map(|s| (id.to_owned(), s))
}

fn set_cookie(resp: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn page(title: &str, body_attrs: &str, head_extra: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Coffer</title>
<link rel="stylesheet" href="/static/app.css">
{head_extra}<script src="/static/app.js" defer></script>
</head>
<body{body_attrs}>
{body}
</body>
</html>
"#,
        title = html_escape(title)
    )
}

/// `GET /`: the folder view when logged in, else the login page.
pub(crate) async fn home(State(state): State<AppState>, headers: HeaderMap) -> Redirect {
    if session_of(&state, &headers).is_some() {
        Redirect::to("/files/")
    } else {
        Redirect::to("/login")
    }
}

fn login_html(csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, html_escape(e)))
        .unwrap_or_default();
    page(
        "Log in",
        r#" class="login-page""#,
        "",
        &format!(
            r#"<main class="card">
<h1><span class="brand-mark">◆</span> Coffer</h1>
<p class="muted">Secure file exchange</p>
{error}<form method="post" action="/login" class="stack">
<input type="hidden" name="csrf" value="{csrf}">
<label>User name<input name="user" id="user" autocomplete="username" required autofocus></label>
<label>Password<input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" class="button primary" id="login">Log in</button>
</form>
</main>"#
        ),
    )
}

/// A fresh login form with its own CSRF token in a short-lived cookie (double submit).
fn login_response(status: StatusCode, error: Option<&str>) -> Response {
    let Ok(csrf) = random_token() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut resp = (status, Html(login_html(&csrf, error))).into_response();
    set_cookie(
        &mut resp,
        &format!(
            "{LOGIN_COOKIE}={csrf}; Path=/login; Max-Age=3600; HttpOnly; Secure; SameSite=Strict"
        ),
    );
    resp
}

/// `GET /login`.
pub(crate) async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session_of(&state, &headers).is_some() {
        return Redirect::to("/files/").into_response();
    }
    login_response(StatusCode::OK, None)
}

/// The login form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login`: checks the password (same lockout as SFTP and FTPES) and opens a session.
pub(crate) async fn login(
    State(state): State<AppState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie(c, LOGIN_COOKIE))
        .unwrap_or("");
    if expected.is_empty()
        || !tokens_equal(expected, &form.csrf)
        || refuse_cross_site(&axum::http::Method::POST, &headers).is_err()
    {
        return login_response(
            StatusCode::FORBIDDEN,
            Some("The login form expired. Please try again."),
        );
    }
    let password = coffer_storage::Password::new(form.password);
    let principal = match state
        .gate
        .login(&form.user, &password, &peer.ip().to_string())
        .await
    {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::LockedOut => {
            return login_response(
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many failed logins: this account is locked for a while."),
            );
        }
        Err(e) => {
            debug!(kind = e.kind().code(), "web login refused");
            return login_response(
                StatusCode::UNAUTHORIZED,
                Some("Wrong user name or password."),
            );
        }
    };
    info!(user = %principal.user.name, remote = %peer, "web login");
    let Ok((id, _)) = state.gate.open_session(principal) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut resp = Redirect::to("/files/").into_response();
    set_cookie(
        &mut resp,
        &format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict"),
    );
    set_cookie(
        &mut resp,
        &format!("{LOGIN_COOKIE}=; Path=/login; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
    );
    resp
}

/// The logout form.
#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session (CSRF-checked, so no other site can log a user out).
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let Some((id, session)) = session_of(&state, &headers) else {
        return Redirect::to("/login").into_response();
    };
    if !tokens_equal(&form.csrf, &session.csrf) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    state.gate.close_session(&id);
    let mut resp = Redirect::to("/login").into_response();
    set_cookie(
        &mut resp,
        &format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
    );
    resp
}

/// `GET /files/`.
pub(crate) async fn folder_root(state: State<AppState>, headers: HeaderMap) -> Response {
    render_folder(state, headers, String::new()).await
}

/// `GET /files/{path}`: a folder's page; a file redirects to its download.
pub(crate) async fn folder(
    state: State<AppState>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    render_folder(state, headers, path).await
}

async fn render_folder(State(state): State<AppState>, headers: HeaderMap, raw: String) -> Response {
    let Some((_, session)) = session_of(&state, &headers) else {
        return Redirect::to("/login").into_response();
    };
    let user = session.principal.user.name.clone();
    let vfs = match state.vault.session(session.principal).await {
        Ok(v) => v,
        Err(e) => return error_page(e.kind(), e.message()),
    };
    let path = match VPath::parse(&raw) {
        Ok(p) => p,
        Err(e) => return error_page(e.kind(), e.message()),
    };
    let shown = path.to_string();
    match vfs.stat(&shown).await {
        Ok(info) if !info.is_dir() => {
            return Redirect::to(&format!("/api/v1/files/{}", pct_encode_path(&shown)))
                .into_response();
        }
        Ok(_) => {}
        Err(e) => return error_page(e.kind(), e.message()),
    }
    let entries = match vfs.list(&shown).await {
        Ok(v) => v,
        Err(e) => return error_page(e.kind(), e.message()),
    };
    let view = FolderView {
        user: &user,
        path: &path,
        csrf: &session.csrf,
        entries: &entries,
    };
    Html(view.render()).into_response()
}

struct FolderView<'a> {
    user: &'a str,
    path: &'a VPath,
    csrf: &'a str,
    entries: &'a [FileInfo],
}

impl FolderView<'_> {
    fn breadcrumbs(&self) -> String {
        let mut out = String::from(r#"<nav class="crumbs" aria-label="Breadcrumbs">"#);
        let parts = self.path.parts();
        if parts.is_empty() {
            out.push_str(r#"<span aria-current="page">Home</span>"#);
        } else {
            out.push_str(r#"<a href="/files/">Home</a>"#);
        }
        let mut href = String::from("/files/");
        for (i, name) in parts.iter().enumerate() {
            href.push_str(&super::headers::pct_encode(name));
            href.push('/');
            out.push_str(r#"<span class="sep">/</span>"#);
            if i + 1 == parts.len() {
                out.push_str(&format!(
                    r#"<span aria-current="page">{}</span>"#,
                    html_escape(name)
                ));
            } else {
                out.push_str(&format!(r#"<a href="{href}">{}</a>"#, html_escape(name)));
            }
        }
        out.push_str("</nav>");
        out
    }

    fn row(&self, e: &FileInfo) -> String {
        let full = self
            .path
            .join(&e.name)
            .map(|p| p.to_string())
            .unwrap_or_default();
        let url = pct_encode_path(&full);
        let (icon, href, kind, size, extra) = if e.is_dir() {
            (
                FOLDER_ICON,
                format!("/files/{url}/"),
                "dir",
                "—".to_owned(),
                "",
            )
        } else {
            (
                FILE_ICON,
                format!("/api/v1/files/{url}"),
                "file",
                human_size(e.size),
                " download",
            )
        };
        let secs = e
            .mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stamp = rfc3339(e.mtime);
        let shown = stamp.replace('T', " ").trim_end_matches('Z').to_owned();
        let shown = shown.get(..16).unwrap_or(&shown).to_owned();
        let name = html_escape(&e.name);
        format!(
            r#"<tr data-name="{name}" data-kind="{kind}" data-size="{bytes}" data-modified="{secs}">
<td class="name"><span class="entry">{icon}<a href="{href}"{extra}>{name}</a></span></td>
<td class="num">{size}</td>
<td class="when"><time datetime="{stamp}">{shown} UTC</time></td>
<td class="actions"><button type="button" class="button small rename">Rename</button><button type="button" class="button small danger delete">Delete</button></td>
</tr>
"#,
            bytes = e.size,
        )
    }

    fn render(&self) -> String {
        let title = self.path.file_name().unwrap_or("Home");
        let rows: String = if self.entries.is_empty() {
            r#"<tr class="empty"><td colspan="4">This folder is empty. Drop files here or use “Upload files”.</td></tr>"#.to_owned()
        } else {
            let (mut dirs, mut files): (Vec<_>, Vec<_>) =
                self.entries.iter().partition(|e| e.is_dir());
            dirs.append(&mut files);
            dirs.iter().map(|e| self.row(e)).collect()
        };
        let body = format!(
            r#"<header class="top">
<a class="brand" href="/files/"><span class="brand-mark">◆</span> Coffer</a>
<span class="who">{user}</span>
<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="button small" id="logout">Log out</button></form>
</header>
<main class="folder-view">
{crumbs}
<div class="toolbar">
<label class="button primary" for="picker">Upload files</label>
<input type="file" id="picker" multiple>
<button type="button" class="button" id="new-folder">New folder</button>
</div>
<div id="drop" class="drop" aria-hidden="true">Drop files anywhere on this page to upload them here</div>
<ul id="uploads" class="uploads"></ul>
<p id="status" class="status" role="status"></p>
<table id="listing">
<thead><tr>
<th class="sortable" data-sort="name" aria-sort="ascending"><button type="button">Name</button></th>
<th class="sortable num" data-sort="size"><button type="button">Size</button></th>
<th class="sortable when" data-sort="modified"><button type="button">Modified</button></th>
<th class="actions"><span class="sr-only">Actions</span></th>
</tr></thead>
<tbody>
{rows}</tbody>
</table>
<dialog id="conflict" class="card dialog" aria-labelledby="conflict-title">
<h2 id="conflict-title">This file already exists</h2>
<p>This folder already holds a file named “<span id="conflict-name"></span>”. Replace it with the one you are uploading, or keep both under a new name?</p>
<div class="dialog-actions">
<button type="button" class="button" id="conflict-cancel">Skip this file</button>
<button type="button" class="button" id="conflict-keep">Keep both</button>
<button type="button" class="button primary" id="conflict-replace">Replace</button>
</div>
</dialog>
</main>"#,
            user = html_escape(self.user),
            csrf = self.csrf,
            crumbs = self.breadcrumbs(),
        );
        page(
            title,
            &format!(r#" data-path="{}""#, html_escape(&self.path.to_string())),
            &format!("<meta name=\"csrf-token\" content=\"{}\">\n", self.csrf),
            &body,
        )
    }
}

/// `1.5 MB`-style sizes (decimal units, as file managers show).
fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

fn error_page(kind: ErrorKind, message: &str) -> Response {
    let s = crate::common::http_status(kind);
    let status = StatusCode::from_u16(s.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = format!(
        r#"<main class="card"><h1>{}</h1><p>{}</p><p><a class="button" href="/files/">Back to your files</a></p></main>"#,
        status.as_u16(),
        html_escape(message)
    );
    (status, Html(page("Error", "", "", &body))).into_response()
}

/// Unknown pages.
pub(crate) async fn not_found() -> Response {
    error_page(ErrorKind::NotFound, "There is no such page.")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /static/app.js`.
pub(crate) async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /static/app.css`.
pub(crate) async fn stylesheet() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1500), "1.5 KB");
        assert_eq!(human_size(1_073_741_824), "1.1 GB");
    }

    #[test]
    fn hostile_names_are_escaped_in_the_folder_view() {
        let info = FileInfo {
            name: "<script>alert(1)<\"x\">".into(),
            kind: coffer_storage::EntryKind::File,
            size: 3,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            id: 1,
            version: 1,
        };
        let path = VPath::root();
        let entries = [info];
        let html = FolderView {
            user: "a&b",
            path: &path,
            csrf: "t",
            entries: &entries,
        }
        .render();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("a&amp;b"));
        assert!(html.contains("/api/v1/files/%3Cscript%3Ealert%281%29%3C%22x%22%3E"));
    }
}
