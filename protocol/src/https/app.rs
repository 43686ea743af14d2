//! The whole HTTP application: the API, the browser pages and their static files, behind one
//! layer that puts the security headers on every response.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use coffer_storage::Vault;

use super::auth::Gatekeeper;
use super::{routes, ui};

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
        .fallback(ui::not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
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
