//! Authentication helpers and built-in implementations.
//!
//! Core authentication traits and types live in `unftp-core`.
pub mod anonymous;

/// Coffer patch: the message of an `AuthenticationError::new(TRY_LATER)` an authenticator
/// returns when it cannot check the password now (its hashing pool is full). The client gets
/// `421` ("try again later") and the connection closes, instead of `530`, which clients take
/// for a wrong password; it is not counted as a failed login.
pub const TRY_LATER: &str = "try later: too many logins are being checked";
pub use anonymous::AnonymousAuthenticator;

pub(crate) use unftp_core::auth::UserDetail;

mod pipeline;
pub(crate) use pipeline::AuthenticationPipeline;
