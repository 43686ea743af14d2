//! The whole HTTP application: the API, the browser pages and their static files, behind one
//! layer that puts the security headers on every response.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use coffer_storage::Vault;

use super::auth::Gatekeeper;
use super::{api, routes, ui};
use crate::common::HttpError;

/// Shared by every request of the listener.
#[derive(Clone, Debug)]
pub(crate) struct AppState(Arc<Shared>);

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) vault: Vault,
    pub(crate) gate: Gatekeeper,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(vault: Vault, gate: Gatekeeper) -> Self {
        Self(Arc::new(Shared { vault, gate }))
    }
}

/// The client's address, added to each request by the connection that carried it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// No script, style, frame or form target from anywhere but this origin; no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The router of the whole site.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(ui::home))
        .route("/login", get(ui::login_page).post(ui::login))
        .route("/logout", post(ui::logout))
        .route("/files", get(ui::folder_root))
        .route("/files/", get(ui::folder_root))
        .route("/files/{*path}", get(ui::folder))
        .route("/static/app.js", get(ui::script))
        .route("/static/app.css", get(ui::stylesheet))
        .merge(routes::api_router())
        .fallback(fallback)
        .layer(middleware::from_fn(api_errors_as_json))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// The API's prefix: every response below it is JSON.
const API_PREFIX: &str = "/api/v1/";

/// Unknown paths: a JSON `no_route` under the API (including `/api/v1/files/` without a
/// path), the HTML page elsewhere.
async fn fallback(uri: Uri) -> Response {
    if uri.path().starts_with(API_PREFIX) || uri.path() == "/api/v1" {
        api::not_found().await.into_response()
    } else {
        ui::not_found().await
    }
}

/// Gives every error under `/api/v1/` that a layer below the handlers produced without a
/// body of its own (the router's `405`, an extractor's rejection) the API's JSON error body
/// with a code from the one table, keeping its status and headers (`Allow`).
async fn api_errors_as_json(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with(API_PREFIX);
    let resp = next.run(req).await;
    let status = resp.status();
    if !api || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // An extractor's rejection says in plain text what was wrong; keep it as the message.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let (code, message) = match HttpError::for_status(status.as_u16()) {
        Some(e) => {
            let fallback = match e {
                HttpError::MethodNotAllowed => "this endpoint does not take that method",
                HttpError::NoRoute => "no such API endpoint",
                _ => "the request was refused",
            };
            let message = if text.is_empty() {
                fallback.to_owned()
            } else {
                text
            };
            (e.status().code, message)
        }
        None => ("internal", "the request failed".to_owned()),
    };
    let fresh = api::error_body(status, code, &message);
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &fresh_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

/// Adds HSTS, CSP, nosniff, the referrer policy and (unless the handler chose otherwise)
/// `Cache-Control: no-store` to every response.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
