//! Coffer's front ends over the one [`coffer_storage::Vfs`]: SFTP today; FTPES and HTTPS join
//! here with their reply tables in [`common`].

pub mod common;
pub mod sftp;
