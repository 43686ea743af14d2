//! Coffer's front ends over the one [`coffer_storage::Vfs`]: SFTP and FTPES; HTTPS joins
//! here with their reply tables in [`common`].

pub mod common;
pub mod ftp;
pub mod sftp;
