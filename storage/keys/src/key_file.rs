//! The local master key file: refused unless it is private (0600), created atomically if missing.

use std::fs::{DirBuilder, File, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::KeyError;

/// Length of a master key, and so of a valid master key file, in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The raw contents of a master key file.
pub(crate) type MasterKeyBytes = Zeroizing<[u8; MASTER_KEY_LEN]>;

/// Permission bits that must be clear: any access by the group or by others.
const GROUP_OR_OTHER_ACCESS: u32 = 0o077;
/// Mode of a newly created key file.
const KEY_FILE_MODE: u32 = 0o600;
/// Mode of directories created to hold a new key file.
const KEY_DIR_MODE: u32 = 0o700;

/// Reads an existing key file, refusing a missing, shared or wrongly sized one.
pub(crate) fn read(path: &Path) -> Result<MasterKeyBytes, KeyError> {
    let file = File::open(path).map_err(|err| io_error("cannot open", path, &err))?;
    read_checked(path, file)
}

/// Reads the key file, or creates a fresh random one if there is none.
pub(crate) fn read_or_create(path: &Path) -> Result<MasterKeyBytes, KeyError> {
    match File::open(path) {
        Ok(file) => read_checked(path, file),
        Err(err) if err.kind() == ErrorKind::NotFound => create(path),
        Err(err) => Err(io_error("cannot open", path, &err)),
    }
}

/// Checks the already opened file (so the checks and the read see the same inode), then reads it.
fn read_checked(path: &Path, mut file: File) -> Result<MasterKeyBytes, KeyError> {
    let metadata = file
        .metadata()
        .map_err(|err| io_error("cannot inspect", path, &err))?;
    if !metadata.is_file() {
        return Err(bad_key_file(path, "it is not a regular file".to_owned()));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & GROUP_OR_OTHER_ACCESS != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if metadata.len() != MASTER_KEY_LEN as u64 {
        return Err(wrong_length(path, metadata.len()));
    }
    let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    file.read_exact(key.as_mut_slice())
        .map_err(|err| io_error("cannot read", path, &err))?;
    let mut trailing = [0u8; 1];
    let extra = file
        .read(&mut trailing)
        .map_err(|err| io_error("cannot read", path, &err))?;
    if extra != 0 {
        return Err(bad_key_file(path, "it grew while being read".to_owned()));
    }
    Ok(key)
}

/// Writes a new random key to a private temporary file, syncs it, and publishes it under
/// `path` without ever replacing a file another process created in the meantime.
fn create(path: &Path) -> Result<MasterKeyBytes, KeyError> {
    let dir = parent_dir(path);
    DirBuilder::new()
        .recursive(true)
        .mode(KEY_DIR_MODE)
        .create(dir)
        .map_err(|err| io_error("cannot create the directory of", path, &err))?;
    let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    aws_lc_rs::rand::fill(key.as_mut_slice()).map_err(|_| KeyError::Random)?;

    let mut temp = tempfile::Builder::new()
        .prefix(".coffer-master-key.")
        .permissions(Permissions::from_mode(KEY_FILE_MODE))
        .tempfile_in(dir)
        .map_err(|err| io_error("cannot create a temporary file for", path, &err))?;
    let write_failed = |err: std::io::Error| io_error("cannot write", path, &err);
    // The umask may have removed bits from the creation mode; the rule is exactly 0600.
    temp.as_file()
        .set_permissions(Permissions::from_mode(KEY_FILE_MODE))
        .map_err(write_failed)?;
    temp.write_all(key.as_slice()).map_err(write_failed)?;
    temp.as_file().sync_all().map_err(write_failed)?;
    match temp.persist_noclobber(path) {
        Ok(_) => {}
        // Another process won the race: its key is the one in use, so use it too.
        Err(err) if err.error.kind() == ErrorKind::AlreadyExists => return read(path),
        Err(err) => return Err(io_error("cannot create", path, &err.error)),
    }
    sync_dir(dir, path)?;
    Ok(key)
}

/// Makes the new directory entry durable, so a crash cannot lose a key already in use.
fn sync_dir(dir: &Path, path: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|err| io_error("cannot sync the directory of", path, &err))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn io_error(action: &str, path: &Path, err: &std::io::Error) -> KeyError {
    KeyError::Io(format!(
        "{action} master key file {}: {err}",
        path.display()
    ))
}

fn bad_key_file(path: &Path, reason: String) -> KeyError {
    KeyError::BadKeyFile {
        path: path.to_path_buf(),
        reason,
    }
}

fn wrong_length(path: &Path, len: u64) -> KeyError {
    bad_key_file(
        path,
        format!("it holds {len} bytes but a master key is exactly {MASTER_KEY_LEN} bytes"),
    )
}
