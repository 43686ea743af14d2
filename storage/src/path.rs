//! Path rules: normalise a client's path into checked components inside the user's root.
//!
//! Parses untrusted input: no panics, no indexing.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::{ErrorKind, VfsError, VfsResult};

/// Longest name of one file or folder, in bytes of UTF-8 after NFC normalisation.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest path a client may send, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// A normalised path below the user's root: zero or more checked names.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VPath {
    parts: Vec<String>,
}

impl VPath {
    /// The user's root.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a client path. Absolute and relative paths both start at the user's root
    /// (front ends resolve a working directory before calling). `.` is skipped, `..` goes up,
    /// and going above the root is refused. Names are NFC-normalised.
    pub fn parse(raw: &str) -> VfsResult<Self> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(invalid("path is longer than 4096 bytes"));
        }
        let mut parts: Vec<String> = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(VfsError::new(
                            ErrorKind::InvalidPath,
                            "path escapes the home folder with '..'",
                        ));
                    }
                }
                name => parts.push(check_name(name)?),
            }
        }
        Ok(Self { parts })
    }

    /// The names, from the root down.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// `true` for the user's root.
    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The parent path and the last name, or `None` for the root.
    pub fn split_last(&self) -> Option<(VPath, &str)> {
        let (last, rest) = self.parts.split_last()?;
        Some((
            VPath {
                parts: rest.to_vec(),
            },
            last.as_str(),
        ))
    }

    /// The last name, or `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    /// A child path.
    pub fn join(&self, name: &str) -> VfsResult<VPath> {
        let mut parts = self.parts.clone();
        parts.push(check_name(name)?);
        Ok(VPath { parts })
    }

    /// `true` if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &VPath) -> bool {
        self.parts.starts_with(&other.parts)
    }
}

impl std::fmt::Display for VPath {
    /// The absolute form, `/a/b`. Shown to the client only: never log it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.parts.is_empty() {
            return f.write_str("/");
        }
        for p in &self.parts {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// Checks and normalises one name.
pub fn check_name(name: &str) -> VfsResult<String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid("empty name, '.' and '..' are not file names"));
    }
    if name.chars().any(|c| c == '\0') {
        return Err(invalid("names may not contain NUL"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(invalid("names may not contain control characters"));
    }
    if name.contains('/') {
        return Err(invalid("names may not contain '/'"));
    }
    if has_hidden_format_character(name) {
        return Err(invalid(
            "names may not contain bidi controls or invisible format characters (Unicode TR 36)",
        ));
    }
    let nfc: String = name.nfc().collect();
    if nfc.len() > MAX_NAME_BYTES {
        return Err(invalid("name is longer than 255 bytes"));
    }
    Ok(nfc)
}

/// `true` if `name` holds a character a person cannot see that changes what they read: a bidi
/// control (U+202E makes `\u{202e}gnp.exe` show as `exe.png`), a zero-width space, a soft
/// hyphen, a byte-order mark, a tag character — every character of general category Cf
/// (Format), following Unicode TR 36 §3 and TR 39's restrictions. The zero-width joiner and
/// non-joiner are kept where scripts and emoji need them: between two non-ASCII characters
/// (`👩\u{200d}💻`, Persian `می\u{200c}خواهم`), never beside ASCII where they would split a
/// familiar word invisibly.
fn has_hidden_format_character(name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    chars.iter().enumerate().any(|(i, &c)| {
        if c.general_category() != GeneralCategory::Format {
            return false;
        }
        if c == '\u{200c}' || c == '\u{200d}' {
            let before = i.checked_sub(1).and_then(|j| chars.get(j));
            let after = chars.get(i + 1);
            let joins = |n: Option<&char>| n.is_some_and(|n| !n.is_ascii());
            return !(joins(before) && joins(after));
        }
        true
    })
}

fn invalid(msg: &str) -> VfsError {
    VfsError::new(ErrorKind::InvalidPath, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotdot_inside_the_root_is_resolved() {
        let p = VPath::parse("/a/b/../c/./d").unwrap();
        assert_eq!(p.parts(), ["a", "c", "d"]);
    }

    #[test]
    fn dotdot_escaping_the_root_is_refused() {
        for raw in ["..", "/..", "/a/../..", "../etc/passwd", "a/../../b"] {
            let e = VPath::parse(raw).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidPath, "{raw}");
        }
    }

    #[test]
    fn nul_and_control_characters_are_refused() {
        for raw in ["a\0b", "/x/\u{1}", "tab\there", "new\nline", "del\u{7f}"] {
            assert_eq!(
                VPath::parse(raw).unwrap_err().kind(),
                ErrorKind::InvalidPath,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn names_over_255_bytes_are_refused_and_255_is_fine() {
        let ok = "é".repeat(127) + "a"; // 255 bytes
        assert_eq!(ok.len(), 255);
        assert!(VPath::parse(&ok).is_ok());
        let long = "a".repeat(256);
        assert_eq!(
            VPath::parse(&long).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
    }

    #[test]
    fn paths_over_4096_bytes_are_refused() {
        let p = "/abc".repeat(1025);
        assert_eq!(VPath::parse(&p).unwrap_err().kind(), ErrorKind::InvalidPath);
    }

    #[test]
    fn names_are_nfc_normalised() {
        let decomposed = "e\u{301}.txt";
        let p = VPath::parse(decomposed).unwrap();
        assert_eq!(p.parts(), ["\u{e9}.txt"]);
    }

    #[test]
    fn bidi_controls_and_invisible_characters_are_refused() {
        for raw in [
            "\u{202e}gnp.exe",
            "a\u{202a}b",
            "x\u{2066}y\u{2069}",
            "rtl\u{200f}mark",
            "zero\u{200b}width",
            "\u{feff}bom.txt",
            "soft\u{ad}hyphen",
            "pay\u{200d}pal",
            "\u{200c}lead",
            "tag\u{e0041}",
        ] {
            let e = VPath::parse(raw).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidPath, "{raw:?}");
            assert!(e.message().contains("bidi"), "{}", e.message());
        }
    }

    #[test]
    fn joiners_inside_emoji_and_scripts_that_need_them_are_kept() {
        for raw in [
            "\u{1f469}\u{200d}\u{1f4bb} notes.txt",
            "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}.pdf",
            "\u{5e9}\u{5dc}\u{5d5}\u{5dd}.txt",
        ] {
            assert!(VPath::parse(raw).is_ok(), "{raw:?}");
        }
    }

    #[test]
    fn awkward_but_legal_names_survive() {
        let p = VPath::parse("/&+-é\" .txt/🦀 spaced  name").unwrap();
        assert_eq!(p.parts(), ["&+-é\" .txt", "🦀 spaced  name"]);
        assert_eq!(p.to_string(), "/&+-é\" .txt/🦀 spaced  name");
    }
}
