//! The SFTP front end: SSH (russh) with modern algorithms, password and public-key logins
//! against the Vault, and SFTP version 3 plus the OpenSSH extensions clients use, served by a
//! concurrent dispatch loop onto the user's [`coffer_storage::Vfs`]. See `docs/SFTP.md`.
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

mod error;
mod exec;
mod handles;
mod host_keys;
mod namespace;
mod server;
mod session;
pub mod wire;

pub use error::SftpError;
pub use host_keys::load_or_generate as load_or_generate_host_keys;
pub use server::SftpListener;
