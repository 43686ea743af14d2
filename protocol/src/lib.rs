//! Coffer's front ends over the one [`coffer_storage::Vfs`]: SFTP and HTTPS; FTPES joins
//! here with their reply tables in [`common`].

pub mod common;
pub mod https;
pub mod sftp;
