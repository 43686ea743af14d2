//! The spool: a local directory holding the sealed chunks of uploads in flight, and nothing else.

use std::path::{Path, PathBuf};

use crate::error::{VfsResult, internal};

/// File-name suffix of spool files.
const SPOOL_SUFFIX: &str = ".spool";

/// The spool directory.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating, mode 0700) the spool directory.
    pub(crate) fn open(dir: &Path) -> VfsResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| internal("cannot create the spool directory", e))?;
        set_mode(dir, 0o700)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The path of a spool file for a new upload named `name` (random, no user data).
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{SPOOL_SUFFIX}"))
    }

    /// Removes one spool file; missing is fine.
    pub(crate) fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.path(name));
    }

    /// Removes every spool file (at start, after uploads rows were handled). Returns how many.
    pub(crate) fn remove_all(&self) -> VfsResult<usize> {
        let mut n = 0;
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| internal("cannot read the spool", e))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(SPOOL_SUFFIX)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Spool {
    /// Removes every subdirectory whose name satisfies `dead` (spools of operator commands
    /// that are no longer running). Returns how many.
    pub(crate) fn remove_dirs_where(&self, dead: impl Fn(&str) -> bool) -> VfsResult<usize> {
        let mut n = 0;
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| internal("cannot read the spool", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && dead(&name) && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn set_mode(path: &Path, mode: u32) -> VfsResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| internal("cannot set spool permissions", e))
}
