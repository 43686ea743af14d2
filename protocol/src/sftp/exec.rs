//! The one kind of SSH `exec` Coffer runs: checksum commands of sync tools.
//!
//! `sha256sum <path>...` answers from the SHA-256 sealed in each file's row (never by reading
//! the file back), formatted exactly like GNU coreutils: `<hex>  <path>\n` on stdout, and
//! `sha256sum: <path>: No such file or directory` on stderr with exit status 1 for a file that
//! is missing or may not be read. Without a path (or with `-`) it hashes its standard input,
//! as coreutils does, so tools that probe for the command with an empty input (rclone) see
//! the hash of nothing. `md5sum` and `sha1sum` are answered with an error: Coffer stores only
//! SHA-256 (docs/SFTP.md says why). The command line is split like a POSIX shell splits
//! simple quoting (`'..'`, `".."`, backslash) by the `shell-words` crate; no shell runs, so
//! `;`, `|`, `$` and globs have no meaning and are plain characters of a name.

use aws_lc_rs::digest;
use coffer_storage::{ErrorKind, Vfs, VfsError};
use russh::ChannelMsg;
use russh::server::Msg;
use tracing::{debug, info};

use super::namespace::resolve;

/// The most standard input `sha256sum` without a path hashes.
const MAX_STDIN: usize = 1024 * 1024;

/// What an exec command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExecCommand {
    /// `sha256sum` over these operands (`-` is standard input; none means standard input).
    Sha256sum(Vec<String>),
    /// A checksum command whose hash Coffer does not store (`md5sum`, `sha1sum`).
    NotStored(String),
    /// A `sha256sum` line Coffer cannot serve: the message for stderr.
    Unusable(String),
}

/// Parses an exec command line; `None` for anything that is not a checksum command (the
/// caller refuses the request as before).
pub(crate) fn parse(command: &[u8]) -> Option<ExecCommand> {
    let line = std::str::from_utf8(command).ok()?;
    let Ok(words) = shell_words::split(line) else {
        let program = line.split_whitespace().next()?;
        return is_checksum(program).then(|| {
            ExecCommand::Unusable(format!("{program}: unbalanced quotes in the command line"))
        });
    };
    let (program, args) = words.split_first()?;
    match program.as_str() {
        "sha256sum" => Some(sha256sum_args(args)),
        "md5sum" | "sha1sum" | "sha224sum" | "sha384sum" | "sha512sum" | "b2sum" | "cksum" => {
            Some(ExecCommand::NotStored(program.clone()))
        }
        _ => None,
    }
}

fn is_checksum(program: &str) -> bool {
    program.ends_with("sum")
}

fn sha256sum_args(args: &[String]) -> ExecCommand {
    let mut operands = Vec::new();
    let mut options_done = false;
    for arg in args {
        if !options_done && arg == "--" {
            options_done = true;
        } else if !options_done && arg.len() > 1 && arg.starts_with('-') {
            // Binary/text mode make no difference on this server; anything else changes the
            // output format or checks a list, which is not offered.
            if arg != "-b" && arg != "--binary" && arg != "-t" && arg != "--text" {
                return ExecCommand::Unusable(format!(
                    "sha256sum: option '{}' is not supported on this server; \
                     usage: sha256sum [--] FILE...",
                    printable(arg)
                ));
            }
        } else {
            operands.push(arg.clone());
        }
    }
    ExecCommand::Sha256sum(operands)
}

/// Runs an accepted checksum command on its channel and ends the channel with its exit status.
pub(crate) async fn run(channel: russh::Channel<Msg>, vfs: Vfs, command: ExecCommand) {
    let (mut incoming, out) = channel.split();
    let (stdout, stderr, status) = match command {
        ExecCommand::Sha256sum(operands) => sha256sum(&vfs, &mut incoming, operands).await,
        ExecCommand::NotStored(program) => {
            info!(program = %program, "refused a checksum command for a hash that is not stored");
            (
                String::new(),
                format!(
                    "{program}: not available on this server: Coffer stores only the SHA-256 \
                     of each file; use sha256sum\n"
                ),
                1,
            )
        }
        ExecCommand::Unusable(message) => (String::new(), format!("{message}\n"), 1),
    };
    if !stdout.is_empty() {
        let _ = out.data_bytes(stdout.into_bytes()).await;
    }
    if !stderr.is_empty() {
        let _ = out.extended_data_bytes(1, stderr.into_bytes()).await;
    }
    let _ = out.exit_status(status).await;
    let _ = out.eof().await;
    let _ = out.close().await;
    debug!(status, "checksum command ended");
}

/// Answers `sha256sum`: (stdout, stderr, exit status), like coreutils.
async fn sha256sum(
    vfs: &Vfs,
    incoming: &mut russh::ChannelReadHalf,
    mut operands: Vec<String>,
) -> (String, String, u32) {
    if operands.is_empty() {
        operands.push("-".to_owned());
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut status = 0;
    let mut stdin_read = false;
    for operand in &operands {
        let hash = if operand == "-" {
            if stdin_read {
                // coreutils reads standard input once; a second `-` hashes nothing.
                Ok(hex(digest::digest(&digest::SHA256, b"").as_ref()))
            } else {
                stdin_read = true;
                hash_stdin(incoming).await
            }
        } else {
            stored_hash(vfs, operand).await
        };
        match hash {
            Ok(hex) => stdout.push_str(&line(&hex, operand)),
            Err(reason) => {
                status = 1;
                stderr.push_str(&format!("sha256sum: {}: {reason}\n", printable(operand)));
            }
        }
    }
    (stdout, stderr, status)
}

/// The stored hash of one file, as lowercase hex; the error is coreutils' wording.
async fn stored_hash(vfs: &Vfs, operand: &str) -> Result<String, String> {
    let path = resolve(operand).map_err(|e| reason(&e))?;
    match vfs.sha256(&path).await {
        Ok((_, hash)) => Ok(hex(&hash)),
        Err(e) => Err(reason(&e)),
    }
}

/// coreutils' words for the failures a user can cause; the error's own (name-free) message
/// for the rest.
fn reason(e: &VfsError) -> String {
    match e.kind() {
        ErrorKind::NotFound => "No such file or directory".to_owned(),
        ErrorKind::PermissionDenied => "Permission denied".to_owned(),
        ErrorKind::IsADirectory => "Is a directory".to_owned(),
        ErrorKind::NotADirectory => "Not a directory".to_owned(),
        _ => e.message().to_owned(),
    }
}

async fn hash_stdin(incoming: &mut russh::ChannelReadHalf) -> Result<String, String> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut total = 0usize;
    while let Some(msg) = incoming.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                total = total.saturating_add(data.len());
                if total > MAX_STDIN {
                    return Err(format!(
                        "standard input longer than {MAX_STDIN} bytes is not hashed here"
                    ));
                }
                ctx.update(&data);
            }
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(hex(ctx.finish().as_ref()))
}

/// One output line as GNU coreutils writes it: a name holding a backslash, a newline or a
/// carriage return is escaped and the line starts with a backslash.
fn line(hex: &str, name: &str) -> String {
    if name.contains(['\\', '\n', '\r']) {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{hex}  {escaped}\n")
    } else {
        format!("{hex}  {name}\n")
    }
}

/// A name for a message, with control characters shown escaped.
fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect::<String>()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_split_like_a_shell() {
        assert_eq!(
            parse(br#"sha256sum 'a b.txt' "c d" e\ f"#),
            Some(ExecCommand::Sha256sum(vec![
                "a b.txt".into(),
                "c d".into(),
                "e f".into()
            ]))
        );
        // rclone escapes every unsafe byte with a backslash.
        assert_eq!(
            parse(br"sha256sum /dir/it\'s\ \(1\)\;.bin"),
            Some(ExecCommand::Sha256sum(vec!["/dir/it's (1);.bin".into()]))
        );
        assert_eq!(
            parse(b"sha256sum -- -x"),
            Some(ExecCommand::Sha256sum(vec!["-x".into()]))
        );
        assert_eq!(parse(b"sha256sum"), Some(ExecCommand::Sha256sum(vec![])));
    }

    #[test]
    fn other_commands_are_not_ours_and_other_hashes_are_refused() {
        assert_eq!(parse(b"echo ${ShellId}%ComSpec%"), None);
        assert_eq!(parse(b"ls -la"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(
            parse(b"md5sum x"),
            Some(ExecCommand::NotStored("md5sum".into()))
        );
        assert!(matches!(
            parse(b"sha256sum 'open"),
            Some(ExecCommand::Unusable(_))
        ));
        assert!(matches!(
            parse(b"sha256sum --check list"),
            Some(ExecCommand::Unusable(_))
        ));
    }

    #[test]
    fn lines_are_formatted_like_coreutils() {
        assert_eq!(line("ab", "x y"), "ab  x y\n");
        assert_eq!(line("ab", "a\\b\nc"), "\\ab  a\\\\b\\nc\n");
    }
}
