//! The fuzzed property of the path normaliser, shared by the libFuzzer target and the
//! stable-toolchain smoke test in `storage/tests/path_fuzz_smoke.rs`.

use coffer_storage::VPath;

/// Any client string: parsing never panics, and an accepted path is in normal form — no
/// empty, `.` or `..` names, no NUL or control characters, no name over 255 bytes, and
/// printing then parsing again gives the same path.
pub fn parse_path(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let Ok(path) = VPath::parse(&raw) else { return };
    for name in path.parts() {
        assert!(
            !name.is_empty() && name != "." && name != "..",
            "unnormalised name"
        );
        assert!(name.len() <= 255, "name over 255 bytes");
        assert!(
            !name.chars().any(|c| c.is_control() || c == '/'),
            "forbidden character"
        );
    }
    let again = VPath::parse(&path.to_string()).expect("a printed path parses");
    assert_eq!(again, path, "print/parse round trip");
}
