//! Pure HTTP helpers for downloads: `Range` parsing (RFC 9110 §14), HTTP and RFC 3339 dates,
//! `Content-Disposition` with an RFC 5987 UTF-8 file name, and percent-encoding of path
//! segments. Parses untrusted header values: no panics, no indexing.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::time::Utc;

/// What a `Range` header asks of a file of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// No usable single range: serve the whole file with 200 (absent, malformed or multi-range;
    /// RFC 9110 lets a server ignore a `Range` it does not support).
    Full,
    /// Serve bytes `start..=end` with 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// The range lies outside the file: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Interprets a `Range` header value for a file of `size` bytes.
pub(crate) fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(n) = last.parse::<u64>() else {
            return RangeRequest::Full;
        };
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial {
            start: size.saturating_sub(n),
            end: size - 1,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeRequest::Full,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(size - 1),
    }
}

/// `true` if an `If-None-Match` value matches `etag` (quoted, strong), or is `*`.
pub(crate) fn none_match(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn utc(t: SystemTime) -> Utc {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Utc::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// An IMF-fixdate for `Last-Modified`: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(t: SystemTime) -> String {
    utc(t).http()
}

/// RFC 3339 in UTC, for JSON listings: `2026-11-25T04:22:21Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    utc(t).rfc3339()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (safe in a path segment,
/// a query value and an RFC 5987 `ext-value`).
pub(crate) fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path below the root as a URL path: each name percent-encoded, joined by `/`.
pub(crate) fn pct_encode_path(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty())
        .map(pct_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// `attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266 / RFC 5987).
pub(crate) fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        pct_encode(name)
    )
}

/// HTML-escapes text for element content and quoted attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ranges_first_last_suffix_and_open_ended() {
        use RangeRequest::*;
        assert_eq!(
            parse_range(Some("bytes=0-0"), 10),
            Partial { start: 0, end: 0 }
        );
        assert_eq!(
            parse_range(Some("bytes=9-9"), 10),
            Partial { start: 9, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=4-"), 10),
            Partial { start: 4, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=4-100"), 10),
            Partial { start: 4, end: 9 }
        );
    }

    #[test]
    fn ranges_beyond_the_end_are_unsatisfiable_and_garbage_is_ignored() {
        use RangeRequest::*;
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse_range(None, 10), Full);
    }

    #[test]
    fn dates_are_imf_fixdate_and_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc3339(t), "1994-11-06T08:49:37Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn utf8_names_get_an_rfc5987_filename_and_a_safe_ascii_fallback() {
        assert_eq!(
            content_disposition("résumé \"1\".pdf"),
            "attachment; filename=\"r_sum_ _1_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
        );
    }

    #[test]
    fn if_none_match_lists_and_star() {
        assert!(none_match("\"a\", \"b\"", "\"b\""));
        assert!(none_match("W/\"b\"", "\"b\""));
        assert!(none_match("*", "\"b\""));
        assert!(!none_match("\"c\"", "\"b\""));
    }

    #[test]
    fn html_and_urls_escape_hostile_names() {
        assert_eq!(
            html_escape("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
        assert_eq!(pct_encode_path("/a b/%2e%2e/é"), "a%20b/%252e%252e/%C3%A9");
    }
}
