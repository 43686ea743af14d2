//! Coffer's front ends over the one [`coffer_storage::Vfs`]: SFTP, FTPES and HTTPS, with
//! their reply tables in [`common`].

pub mod common;
pub mod ftp;
pub mod https;
pub mod sftp;
