//! Protocol-neutral helpers shared by the front ends: how a storage failure is answered, and
//! the TLS certificate of FTPES and HTTPS, and the limits on connections before login.

pub mod limits;
mod status;
pub mod time;
pub mod tls;

pub use status::{
    ALL_KINDS, HttpError, HttpStatus, SftpStatus, ftp_error_kind, ftp_reply_code, http_status,
    login_retry_later, sftp_status,
};
