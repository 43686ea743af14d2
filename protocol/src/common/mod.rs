//! Protocol-neutral helpers shared by the front ends: how a storage failure is answered.

mod status;

pub use status::{SftpStatus, sftp_status};
