//! The script API under `/api/v1/`: streamed uploads and ranged downloads of files, folders,
//! listings and moves, with JSON errors whose `code` comes from the one status table.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use coffer_storage::{
    ErrorKind, FileInfo, FileReader, FileWriter, Interrupted, Permissions, VPath, Vfs, VfsError,
    WriteOptions,
};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::debug;

use super::app::{AppState, Peer};
use super::auth::{SESSION_COOKIE, cookie, parse_basic, parse_bearer, tokens_equal};
use super::headers::{
    RangeRequest, content_disposition, http_date, none_match, parse_range, rfc3339,
};
use crate::common::{HttpError, http_status};

/// Plaintext bytes per body frame of a download.
const DOWNLOAD_FRAME: usize = 512 * 1024;
/// Frames read ahead of the client.
const DOWNLOAD_QUEUE: usize = 4;
/// The header a browser page sends its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Which `WWW-Authenticate` challenges a `401` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// None (not a 401, or a browser session: its page logs in through the form).
    None,
    /// The request sent a bearer token: `Bearer` with `error="invalid_token"` (RFC 6750).
    Bearer,
    /// Basic credentials or none at all: both schemes the API takes, `Basic` last.
    Any,
}

/// A failed API call: HTTP status, stable code, human message (never a file name).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    challenge: Challenge,
}

impl ApiError {
    /// An HTTP-level error from the one table in `common/status.rs`.
    pub(crate) fn http(e: HttpError, message: impl Into<String>) -> Self {
        let s = e.status();
        Self {
            status: StatusCode::from_u16(s.status).unwrap_or(StatusCode::BAD_REQUEST),
            code: s.code,
            message: message.into(),
            challenge: Challenge::None,
        }
    }

    /// The same error, answered with `challenge` if it is a `401`.
    fn challenging(mut self, challenge: Challenge) -> Self {
        if self.status == StatusCode::UNAUTHORIZED {
            self.challenge = challenge;
        }
        self
    }
}

impl From<VfsError> for ApiError {
    fn from(e: VfsError) -> Self {
        let s = http_status(e.kind());
        Self {
            status: StatusCode::from_u16(s.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: s.code,
            message: e.message().to_owned(),
            challenge: if e.kind() == ErrorKind::AuthFailed {
                Challenge::Any
            } else {
                Challenge::None
            },
        }
    }
}

const BASIC_CHALLENGE: &str = "Basic realm=\"Coffer\", charset=\"UTF-8\"";
const BEARER_CHALLENGE: &str = "Bearer realm=\"Coffer\"";
const BEARER_INVALID: &str = "Bearer realm=\"Coffer\", error=\"invalid_token\"";

/// The JSON body every API error has: `{"code", "message"}`.
pub(crate) fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = error_body(self.status, self.code, &self.message);
        let values: &[&'static str] = match self.challenge {
            Challenge::None => &[],
            Challenge::Bearer => &[BEARER_INVALID],
            Challenge::Any => &[BEARER_CHALLENGE, BASIC_CHALLENGE],
        };
        for v in values {
            resp.headers_mut()
                .append(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `true` for methods that change state (and so need CSRF protection from browsers).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a state-changing request a browser says comes from another site, whatever its
/// credentials (a cached Basic login is as ambient as a cookie).
pub(crate) fn refuse_cross_site(method: &Method, headers: &HeaderMap) -> ApiResult<()> {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if changes_state(method) && matches!(site, "cross-site" | "same-site") {
        return Err(ApiError::http(
            HttpError::Csrf,
            "cross-site requests may not change anything",
        ));
    }
    Ok(())
}

/// The caller's storage session: Basic, bearer token, or browser session (+ CSRF header).
pub(crate) async fn api_vfs(
    state: &AppState,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
) -> ApiResult<Vfs> {
    refuse_cross_site(method, headers)?;
    let remote = peer.ip().to_string();
    let gate = &state.gate;
    let principal = if let Some(auth) = header_str(headers, header::AUTHORIZATION) {
        if let Some((user, password)) = parse_basic(auth) {
            return Ok(gate.basic_session(&user, &password, &remote).await?);
        } else if let Some(token) = parse_bearer(auth) {
            return gate
                .token_session(token, &remote)
                .await
                .map_err(|e| ApiError::from(e).challenging(Challenge::Bearer));
        } else {
            return Err(VfsError::new(
                ErrorKind::AuthFailed,
                "unsupported Authorization scheme: use Basic or Bearer",
            )
            .into());
        }
    } else if let Some(id) =
        header_str(headers, header::COOKIE).and_then(|c| cookie(c, SESSION_COOKIE))
    {
        let Some(session) = gate.session(id) else {
            return Err(ApiError::http(
                HttpError::SessionExpired,
                "the session has expired; log in again",
            ));
        };
        if changes_state(method) {
            let sent = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !tokens_equal(sent, &session.csrf) {
                return Err(ApiError::http(
                    HttpError::Csrf,
                    "missing or wrong CSRF token",
                ));
            }
        }
        session.principal
    } else {
        return Err(VfsError::new(ErrorKind::AuthFailed, "authentication required").into());
    };
    Ok(state.vault.session(principal).await?)
}

fn etag_value(info: &FileInfo) -> String {
    format!("\"{}\"", info.etag())
}

fn entry_json(info: &FileInfo, path: &str) -> serde_json::Value {
    json!({
        "name": info.name,
        "path": path,
        "type": if info.is_dir() { "folder" } else { "file" },
        "size": info.size,
        "modified": rfc3339(info.mtime),
        "etag": info.etag(),
    })
}

/// `Repr-Digest` (RFC 9530).
const REPR_DIGEST: header::HeaderName = header::HeaderName::from_static("repr-digest");

/// The `Repr-Digest` value for a SHA-256: `sha-256=:<base64>:` (an RFC 8941 byte sequence).
fn repr_digest(hash: &[u8; 32]) -> String {
    use base64::Engine as _;
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn set(resp: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// `GET`/`HEAD /api/v1/files/{path}`: the file, whole or one range.
pub(crate) async fn download(
    State(state): State<AppState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    let vfs = api_vfs(&state, peer, &method, &headers).await?;
    // One lookup for the headers and the body (a small file's bytes come with its row).
    let target = vfs.stat_for_read(&path).await?;
    let (info, sha256) = (target.info().clone(), target.sha256());
    if info.is_dir() {
        return Err(VfsError::new(
            ErrorKind::IsADirectory,
            "is a folder; list it with /api/v1/list/",
        )
        .into());
    }
    let etag = etag_value(&info);
    let mut resp = Response::new(Body::empty());
    set(&mut resp, header::ETAG, &etag);
    // RFC 9530: the digest of the whole representation, also on a range reply; from the
    // stored hash, for users who may read the file.
    if let Some(hash) = sha256 {
        set(&mut resp, REPR_DIGEST, &repr_digest(&hash));
    }
    set(&mut resp, header::LAST_MODIFIED, &http_date(info.mtime));
    set(&mut resp, header::ACCEPT_RANGES, "bytes");
    if header_str(&headers, header::IF_NONE_MATCH).is_some_and(|v| none_match(v, &etag)) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    set(&mut resp, header::CONTENT_TYPE, "application/octet-stream");
    set(
        &mut resp,
        header::CONTENT_DISPOSITION,
        &content_disposition(&info.name),
    );
    let size = info.size;
    let (start, len) = match parse_range(header_str(&headers, header::RANGE), size) {
        RangeRequest::Full => (0, size),
        RangeRequest::Partial { start, end } => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            set(
                &mut resp,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{size}"),
            );
            (start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut r = ApiError::http(
                HttpError::RangeNotSatisfiable,
                "the requested range lies outside the file",
            )
            .into_response();
            set(&mut r, header::CONTENT_RANGE, &format!("bytes */{size}"));
            return Ok(r);
        }
    };
    set(&mut resp, header::CONTENT_LENGTH, &len.to_string());
    if method == Method::HEAD || len == 0 {
        return Ok(resp);
    }
    let reader = vfs.open_target(target).await?;
    if len <= DOWNLOAD_FRAME as u64 {
        // One frame: read here, without a reading task and its channel (most files are small).
        let mut data = reader.read_at(start, len as usize).await?;
        if (data.len() as u64) < len {
            let mut all = bytes::BytesMut::from(&data[..]);
            while (all.len() as u64) < len {
                let at = start + all.len() as u64;
                let more = reader.read_at(at, len as usize - all.len()).await?;
                if more.is_empty() {
                    return Err(VfsError::new(
                        ErrorKind::Integrity,
                        "the stored file is shorter than its row",
                    )
                    .into());
                }
                all.extend_from_slice(&more);
            }
            data = all.freeze();
        }
        *resp.body_mut() = Body::from(data);
    } else {
        *resp.body_mut() = Body::new(stream_file(reader, start, len));
    }
    Ok(resp)
}

/// Bytes `start..start+len` of `reader`, read by a task a few frames ahead of the client.
/// Only the chunks covering the range are fetched and decrypted.
fn stream_file(reader: FileReader, start: u64, len: u64) -> ChannelBody {
    let (tx, rx) = mpsc::channel(DOWNLOAD_QUEUE);
    tokio::spawn(async move {
        let mut offset = start;
        let end = start + len;
        while offset < end {
            let want = ((end - offset).min(DOWNLOAD_FRAME as u64)) as usize;
            let piece = match reader.read_at(offset, want).await {
                Ok(b) if b.is_empty() => Err(VfsError::new(
                    ErrorKind::Integrity,
                    "the stored file is shorter than its row",
                )),
                other => other,
            };
            let ok = match &piece {
                Ok(b) => {
                    offset += b.len() as u64;
                    true
                }
                Err(e) => {
                    debug!(kind = e.kind().code(), "download failed midway");
                    false
                }
            };
            if tx.send(piece).await.is_err() || !ok {
                break;
            }
        }
    });
    ChannelBody { rx, len }
}

/// A response body fed by the reading task; an error aborts the response, so a client never
/// takes a short or unverified download for a whole one.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, VfsError>>,
    len: u64,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = VfsError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, VfsError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// `PUT /api/v1/files/{path}`: streams the body into a new version; 201 if the file is new,
/// 204 if it replaced one. Missing parent folders are created (with the mkdir permission).
/// `If-None-Match: *` creates only: `412 precondition_failed` if the name holds a file.
pub(crate) async fn upload(
    State(state): State<AppState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let mut body = body;
    let create_only = header_str(&headers, header::IF_NONE_MATCH).is_some_and(|v| v.trim() == "*");
    let (writer, existed) =
        match open_upload(&state, peer, &method, &headers, &path, create_only).await {
            Ok(w) => w,
            Err(e) => {
                drain(&mut body).await;
                return Err(e);
            }
        };
    let declared = header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    // The body is read and the upload finished by a task of its own: when the connection dies
    // mid-body, hyper drops this handler, and the writer must still be told the upload was
    // interrupted rather than be dropped.
    let task = tokio::spawn(async move { stream_into(writer, &mut body, declared).await });
    let info = match task.await {
        Ok(r) => r?,
        Err(e) => {
            debug!(error = %e, "upload task failed");
            return Err(VfsError::new(ErrorKind::Internal, "the upload failed").into());
        }
    };
    let mut resp = if existed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let clean = VPath::parse(&path)?.to_string();
        (StatusCode::CREATED, Json(entry_json(&info, &clean))).into_response()
    };
    set(&mut resp, header::ETAG, &etag_value(&info));
    Ok(resp)
}

/// Bytes of a refused upload read and dropped so the client sees the error reply (an HTTP/2
/// stream reset before the body is sent hides it from curl); larger bodies are cut off.
const DRAIN_LIMIT: u64 = 1024 * 1024;

async fn drain(body: &mut Body) {
    let mut seen = 0u64;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                seen += d.len() as u64;
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
}

async fn open_upload(
    state: &AppState,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    create_only: bool,
) -> ApiResult<(FileWriter, bool)> {
    let vfs = api_vfs(state, peer, method, headers).await?;
    let opts = WriteOptions {
        truncate: true,
        exclusive: create_only,
    };
    let writer = match vfs.create(path, opts).await {
        Err(e)
            if e.kind() == ErrorKind::NotFound
                && vfs.permissions().contains(Permissions::MKDIR) =>
        {
            let parsed = VPath::parse(path)?;
            if let Some((parent, _)) = parsed.split_last() {
                vfs.mkdir_all(&parent).await?;
            }
            vfs.create(path, opts).await?
        }
        Err(e) if create_only && e.kind() == ErrorKind::AlreadyExists => {
            return Err(ApiError::http(
                HttpError::PreconditionFailed,
                "a file with that name exists (If-None-Match: *)",
            ));
        }
        other => other?,
    };
    // Whether a file held the name is what the writer found when it looked the name up.
    let existed = writer.replaces();
    Ok((writer, existed))
}

/// Writes the request body into `writer` as it arrives and commits. A body that ends early
/// (the connection reset or closed, an HTTP/2 stream reset, fewer bytes than its
/// `Content-Length` said) is an interrupted upload: the writer's one policy decides what stays
/// (never a replaced version; see docs/ARCHITECTURE.md "Interrupted uploads").
async fn stream_into(
    mut writer: FileWriter,
    body: &mut Body,
    declared: Option<u64>,
) -> ApiResult<FileInfo> {
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                debug!(error = %e, bytes = offset, "upload body ended early");
                return Err(interrupted(writer).await);
            }
        };
        if let Ok(data) = frame.into_data() {
            if let Err(e) = writer.write_at(offset, &data).await {
                writer.abort().await;
                return Err(e.into());
            }
            offset += data.len() as u64;
        }
    }
    if declared.is_some_and(|n| n != offset) {
        debug!(bytes = offset, declared = ?declared, "upload body shorter than its Content-Length");
        return Err(interrupted(writer).await);
    }
    Ok(writer.commit().await?)
}

async fn interrupted(writer: FileWriter) -> ApiError {
    let message = match writer.interrupted().await {
        Interrupted::Kept(info) => format!(
            "the request body ended early; the {} bytes received were kept as a new file (an existing file is never replaced by a partial one)",
            info.size
        ),
        Interrupted::Discarded => {
            "the request body ended early; nothing was stored and any earlier version is untouched"
                .to_owned()
        }
    };
    ApiError::http(HttpError::UploadInterrupted, message)
}

/// `DELETE /api/v1/files/{path}`: a file, or an empty folder.
pub(crate) async fn delete(
    State(state): State<AppState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> ApiResult<StatusCode> {
    let vfs = api_vfs(&state, peer, &method, &headers).await?;
    if vfs.stat(&path).await?.is_dir() {
        vfs.rmdir(&path).await?;
    } else {
        vfs.remove(&path).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/folders/{path}`: creates one folder (its parent must exist).
pub(crate) async fn mkdir(
    State(state): State<AppState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    let vfs = api_vfs(&state, peer, &method, &headers).await?;
    let info = vfs.mkdir(&path).await?;
    let clean = VPath::parse(&path)?.to_string();
    Ok((StatusCode::CREATED, Json(entry_json(&info, &clean))).into_response())
}

/// `GET /api/v1/list/{path}`: the folder's entries as JSON.
pub(crate) async fn list(
    State(state): State<AppState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    method: Method,
    headers: HeaderMap,
    path: Option<Path<String>>,
) -> ApiResult<Response> {
    let path = path.map(|Path(p)| p).unwrap_or_default();
    let vfs = api_vfs(&state, peer, &method, &headers).await?;
    let clean = VPath::parse(&path)?;
    let entries = vfs.list_with_sha256(&path).await?;
    let items: Vec<_> = entries
        .iter()
        .map(|(e, hash)| {
            let child = clean
                .join(&e.name)
                .map(|p| p.to_string())
                .unwrap_or_default();
            let mut item = entry_json(e, &child);
            // Files only, and only for users who may read them (from the stored row hash).
            if let (Some(hash), Some(obj)) = (hash, item.as_object_mut()) {
                obj.insert("sha256".to_owned(), hex(hash).into());
            }
            item
        })
        .collect();
    Ok(Json(json!({"path": clean.to_string(), "entries": items})).into_response())
}

/// Body of `POST /api/v1/move`: `from` and either `to` (a path: move) or `name` (a new name
/// in the same folder: rename).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveRequest {
    from: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    replace: bool,
}

/// `name` as one name: no `/` or `\`, not `.`, `..` or empty.
fn single_name(name: &str) -> ApiResult<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(ApiError::http(
            HttpError::InvalidName,
            "a new name must be one name: no '/' or '\\', not '.' or '..' (to move, send \"to\")",
        ));
    }
    Ok(name)
}

/// `POST /api/v1/move`: renames (`name`) or moves (`to`) a file or folder.
pub(crate) async fn rename(
    State(state): State<AppState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let vfs = api_vfs(&state, peer, &method, &headers).await?;
    let bad = || {
        ApiError::http(
            HttpError::BadRequest,
            "the body must be JSON {\"from\": \"...\", \"to\": \"...\"} or {\"from\": \"...\", \"name\": \"...\"}",
        )
    };
    let req: MoveRequest = serde_json::from_slice(&body).map_err(|_| bad())?;
    let to = match (&req.to, &req.name) {
        (Some(to), None) => VPath::parse(to)?,
        (None, Some(name)) => {
            let name = single_name(name)?;
            let from = VPath::parse(&req.from)?;
            let Some((parent, _)) = from.split_last() else {
                return Err(VfsError::new(
                    ErrorKind::InvalidPath,
                    "the home folder cannot be renamed",
                )
                .into());
            };
            parent.join(name)?
        }
        _ => return Err(bad()),
    };
    let to = to.to_string();
    vfs.rename(&req.from, &to, req.replace).await?;
    let info = vfs.stat(&to).await?;
    Ok(Json(entry_json(&info, &to)).into_response())
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn openapi() -> Response {
    let mut resp = Json(super::routes::openapi_document()).into_response();
    set(&mut resp, header::CACHE_CONTROL, "no-cache");
    resp
}

/// Any other `/api/v1/` path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::http(HttpError::NoRoute, "no such API endpoint")
}
