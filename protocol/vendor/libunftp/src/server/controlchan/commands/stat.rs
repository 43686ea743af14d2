//! The RFC 959 Status (`STAT`) command
//
// This command shall cause a status response to be sent over
// the control connection in the form of a reply.  The command
// may be sent during a file transfer (along with the Telnet IP
// and Synch signals--see the Section on FTP Commands) in which
// case the server will respond with the status of the
// operation in progress, or it may be sent between file
// transfers.  In the latter case, the command may have an
// argument field.  If the argument is a pathname, the command
// is analogous to the "list" command except that data shall be
// transferred over the control connection.  If a partial
// pathname is given, the server may respond with a list of
// file names or attributes associated with that specification.
// If no argument is given, the server should return general
// status information about the server FTP process.  This
// should include current values of all transfer parameters and
// the status of connections.

use crate::{
    auth::UserDetail,
    server::controlchan::replies::storage_error_reply,
    server::{
        chancomms::ControlChanMsg,
        controlchan::{
            Reply, ReplyCode,
            error::ControlChanError,
            handler::{CommandContext, CommandHandler},
        },
    },
    storage::{Fileinfo, Metadata, StorageBackend},
};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;

#[derive(Debug)]
pub struct Stat {
    path: Option<Bytes>,
}

impl Stat {
    pub fn new(path: Option<Bytes>) -> Self {
        Stat { path }
    }
}

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for Stat
where
    User: UserDetail,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: 'static + Metadata,
{
    // Coffer patch: no library or back-end names in the status, no panic without a user,
    // `STAT path` relative to the working directory, 213 for a file and 212 for a folder
    // (RFC 959), failures through the one storage error table.
    #[tracing_attributes::instrument]
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        match self.path.clone() {
            None => {
                let session = args.session.lock().await;
                let text: Vec<String> = vec![
                    "Server status:".to_string(),
                    format!("Logged in as {}", session.username.as_deref().unwrap_or("nobody")),
                    format!("TLS on the control connection: {}", if session.cmd_tls { "yes" } else { "no" }),
                    format!("TLS on data connections (PROT P): {}", if session.data_tls { "yes" } else { "no" }),
                    format!("Restart offset (REST): {}", session.start_pos),
                    "End of status".to_string(),
                ];
                Ok(Reply::new_multiline(ReplyCode::SystemStatus, text))
            }
            Some(path) => {
                let path: &str = std::str::from_utf8(&path)?;
                let (user, storage, path) = {
                    let session = args.session.lock().await;
                    (session.user.clone(), Arc::clone(&session.storage), session.cwd.join(path))
                };
                let tx: Sender<ControlChanMsg> = args.tx_control_chan.clone();
                let logger = args.logger;

                tokio::spawn(async move {
                    let reply = match (*user).as_ref() {
                        None => Reply::new(ReplyCode::NotLoggedIn, "Please log in first"),
                        Some(user) => match storage.metadata(user, &path).await {
                            Err(e) => storage_error_reply(&e),
                            Ok(meta) if meta.is_dir() => match storage.list_vec(user, &path).await {
                                Ok(mut lines) => {
                                    lines.insert(0, "Status of folder:".to_string());
                                    lines.push("End of status".to_string());
                                    Reply::new_multiline(ReplyCode::DirectoryStatus, lines)
                                }
                                Err(e) => storage_error_reply(&e),
                            },
                            Ok(meta) => {
                                let line = Fileinfo {
                                    path: path.clone(),
                                    metadata: meta,
                                }
                                .to_string();
                                Reply::new_multiline(ReplyCode::FileStatus, vec!["Status of file:".to_string(), line, "End of status".to_string()])
                            }
                        },
                    };
                    if let Err(err) = tx.send(ControlChanMsg::CommandChannelReply(reply)).await {
                        slog::warn!(logger, "STAT: Could not send internal message with the STAT reply: {}", err);
                    }
                });
                Ok(Reply::none())
            }
        }
    }
}
