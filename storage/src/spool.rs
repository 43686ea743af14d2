//! The spool: a local directory holding the sealed chunks of uploads in flight, and nothing else;
//! and the free-space floor that keeps uploads from filling its disk or the local object store's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::error::{ErrorKind, VfsError, VfsResult, internal};

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

/// The free space under which uploads are refused (`uploads.min_free_bytes`,
/// `uploads.min_free_percent`): the larger of the two counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeSpaceFloor {
    /// Bytes that must stay free.
    pub min_free_bytes: u64,
    /// Percent of the file system's size that must stay free (0 to 100).
    pub min_free_percent: u8,
}

impl FreeSpaceFloor {
    /// No floor: uploads are never refused for space (and `statvfs` is never called).
    pub const NONE: Self = Self {
        min_free_bytes: 0,
        min_free_percent: 0,
    };

    /// The default: 1 GiB or 1 % of the file system, whichever is larger.
    pub const DEFAULT: Self = Self {
        min_free_bytes: 1024 * 1024 * 1024,
        min_free_percent: 1,
    };

    /// The floor in bytes on a file system of `total` bytes.
    pub fn bytes_on(self, total: u64) -> u64 {
        let share = u128::from(total) * u128::from(self.min_free_percent.min(100)) / 100;
        self.min_free_bytes
            .max(u64::try_from(share).unwrap_or(u64::MAX))
    }

    fn is_none(self) -> bool {
        self.min_free_bytes == 0 && self.min_free_percent == 0
    }
}

/// How long one `statvfs` answer is reused: uploads check every 1 MiB batch, so a busy node
/// asks the kernel at most ten times a second per disk, not once per batch.
const SAMPLE_MS: i64 = 100;

/// One watched directory (the spool's, the local object store's) and its last sample.
#[derive(Debug)]
struct Disk {
    /// What it is, for messages: never a path a client could see.
    what: &'static str,
    dir: PathBuf,
    sampled_ms: AtomicI64,
    available: AtomicU64,
    total: AtomicU64,
    /// Below the floor at the last check: a warning is logged once per crossing.
    low: AtomicBool,
}

/// Keeps uploads from filling the disks they write to: a new upload is refused while a
/// watched disk has less free space than the floor, and an upload in flight fails when it
/// would take the disk below half the floor (the other half is the reserve running uploads
/// may use to finish, so the disk itself never fills).
#[derive(Debug)]
pub(crate) struct FreeSpace {
    floor: FreeSpaceFloor,
    disks: Vec<Disk>,
}

/// Which check: a new upload (the whole floor) or one growing (half of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    NewUpload,
    Growth,
}

impl FreeSpace {
    /// Watches `dirs` (`(what, directory)`) against `floor`.
    pub(crate) fn new(floor: FreeSpaceFloor, dirs: Vec<(&'static str, PathBuf)>) -> Self {
        let disks = dirs
            .into_iter()
            .map(|(what, dir)| Disk {
                what,
                dir,
                sampled_ms: AtomicI64::new(i64::MIN),
                available: AtomicU64::new(0),
                total: AtomicU64::new(0),
                low: AtomicBool::new(false),
            })
            .collect();
        Self { floor, disks }
    }

    /// `InsufficientStorage` if a watched disk is too full for `admit`.
    pub(crate) fn check(&self, admit: Admit) -> VfsResult<()> {
        if self.floor.is_none() {
            return Ok(());
        }
        for disk in &self.disks {
            let Some((available, total)) = disk.sample() else {
                continue;
            };
            let floor = self.floor.bytes_on(total);
            let low = available < floor;
            if disk.low.swap(low, Ordering::Relaxed) != low {
                if low {
                    warn!(
                        disk = disk.what,
                        available_bytes = available,
                        floor_bytes = floor,
                        "free space is below the floor (uploads.min_free_bytes / \
                         min_free_percent): new uploads are refused"
                    );
                } else {
                    info!(
                        disk = disk.what,
                        available_bytes = available,
                        floor_bytes = floor,
                        "free space is back above the floor: uploads are accepted again"
                    );
                }
            }
            if refused(admit, available, floor) {
                return Err(VfsError::new(
                    ErrorKind::InsufficientStorage,
                    format!(
                        "insufficient storage: the server's {} disk is nearly full; retry later",
                        disk.what
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `admit` is refused with `available` bytes free under a floor of `floor` bytes.
fn refused(admit: Admit, available: u64, floor: u64) -> bool {
    match admit {
        Admit::NewUpload => available < floor,
        Admit::Growth => available < floor / 2,
    }
}

impl Disk {
    /// (available to unprivileged users, total) bytes, from a sample at most [`SAMPLE_MS`]
    /// old; `None` if the file system cannot be asked (the write itself then reports it).
    fn sample(&self) -> Option<(u64, u64)> {
        let now = now_ms();
        if now.saturating_sub(self.sampled_ms.load(Ordering::Relaxed)) < SAMPLE_MS {
            return Some((
                self.available.load(Ordering::Relaxed),
                self.total.load(Ordering::Relaxed),
            ));
        }
        match rustix::fs::statvfs(&self.dir) {
            Ok(st) => {
                let available = st.f_bavail.saturating_mul(st.f_frsize);
                let total = st.f_blocks.saturating_mul(st.f_frsize);
                self.available.store(available, Ordering::Relaxed);
                self.total.store(total, Ordering::Relaxed);
                self.sampled_ms.store(now, Ordering::Relaxed);
                Some((available, total))
            }
            Err(e) => {
                debug!(disk = self.what, error = %e, "statvfs failed; free space not checked");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_the_larger_of_bytes_and_percent() {
        let floor = FreeSpaceFloor {
            min_free_bytes: 1000,
            min_free_percent: 10,
        };
        assert_eq!(floor.bytes_on(5_000), 1000);
        assert_eq!(floor.bytes_on(50_000), 5_000);
        assert_eq!(FreeSpaceFloor::NONE.bytes_on(u64::MAX), 0);
        assert_eq!(
            FreeSpaceFloor {
                min_free_bytes: 0,
                min_free_percent: 100
            }
            .bytes_on(u64::MAX),
            u64::MAX
        );
    }

    #[test]
    fn uploads_in_flight_may_use_half_the_reserve_new_ones_none() {
        assert!(refused(Admit::NewUpload, 999, 1000));
        assert!(!refused(Admit::NewUpload, 1000, 1000));
        assert!(!refused(Admit::Growth, 999, 1000));
        assert!(!refused(Admit::Growth, 500, 1000));
        assert!(refused(Admit::Growth, 499, 1000));
    }

    #[test]
    fn a_real_disk_is_measured_and_a_floor_above_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let watched = || vec![("spool", dir.path().to_owned())];
        let open = FreeSpace::new(FreeSpaceFloor::NONE, watched());
        open.check(Admit::NewUpload).unwrap();
        let tiny = FreeSpace::new(
            FreeSpaceFloor {
                min_free_bytes: 1,
                min_free_percent: 0,
            },
            watched(),
        );
        tiny.check(Admit::NewUpload).unwrap();
        let full = FreeSpace::new(
            FreeSpaceFloor {
                min_free_bytes: u64::MAX,
                min_free_percent: 0,
            },
            watched(),
        );
        let e = full.check(Admit::NewUpload).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InsufficientStorage);
        assert!(e.message().contains("spool"), "{}", e.message());
        assert!(full.disks[0].low.load(Ordering::Relaxed));
        assert!(full.check(Admit::Growth).is_err());
    }
}
