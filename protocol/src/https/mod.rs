//! The HTTPS front end: a browser UI and a script API (`/api/v1/`) over the user's
//! [`coffer_storage::Vfs`], on axum behind rustls, HTTP/1.1 and HTTP/2. See `docs/HTTPS.md`.
//!
//! Everything here handles bytes from the network: no unwrap, expect, indexing or panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod api;
mod app;
mod auth;
mod headers;
mod routes;
mod server;
mod ui;

pub use server::{HttpsError, HttpsListener};
