//! Per-user permissions: what a user may do in their tree.

use crate::error::{ErrorKind, VfsError};

/// A set of permissions, stored as bits in the users table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions(u32);

impl Permissions {
    /// List folders and stat entries.
    pub const LIST: Self = Self(1);
    /// Download files.
    pub const READ: Self = Self(2);
    /// Upload new files, overwrite, append, set times.
    pub const WRITE: Self = Self(4);
    /// Delete files and empty folders.
    pub const DELETE: Self = Self(8);
    /// Rename and move.
    pub const RENAME: Self = Self(16);
    /// Create folders.
    pub const MKDIR: Self = Self(32);
    /// Everything.
    pub const ALL: Self = Self(63);

    const NAMES: [(&'static str, Self); 6] = [
        ("list", Self::LIST),
        ("read", Self::READ),
        ("write", Self::WRITE),
        ("delete", Self::DELETE),
        ("rename", Self::RENAME),
        ("mkdir", Self::MKDIR),
    ];

    /// From stored bits (unknown bits dropped).
    pub fn from_bits(bits: u32) -> Self {
        Self(bits & Self::ALL.0)
    }

    /// The stored bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// `true` if every permission in `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses `all` or a comma-separated list such as `list,read`.
    pub fn parse(list: &str) -> Result<Self, VfsError> {
        let mut bits = 0;
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                return Ok(Self::ALL);
            }
            let (_, p) = Self::NAMES.iter().find(|(n, _)| *n == word).ok_or_else(|| {
                VfsError::new(
                    ErrorKind::InvalidPath,
                    format!("unknown permission {word:?}; use all or a list of list,read,write,delete,rename,mkdir"),
                )
            })?;
            bits |= p.0;
        }
        Ok(Self(bits))
    }
}

impl std::fmt::Display for Permissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Self::ALL {
            return f.write_str("all");
        }
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, p)| self.contains(*p))
            .map(|(n, _)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let p = Permissions::parse("list, read").unwrap();
        assert!(p.contains(Permissions::READ) && !p.contains(Permissions::WRITE));
        assert_eq!(p.to_string(), "list,read");
        assert_eq!(Permissions::parse("all").unwrap(), Permissions::ALL);
        assert!(Permissions::parse("list,fly").is_err());
    }
}
