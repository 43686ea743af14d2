//! `MFMT` (draft-somers-ftp-mfxx): sets a file's modification time through the Vfs, as SFTP's
//! `setstat` does. libunftp routes it to the SITE handler named `MFMT` (patched libunftp) and
//! then advertises it in `FEAT`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use libunftp::options::{Reply, ReplyCode, SiteCommandContext, SiteCommandHandler};

use super::auth::FtpUser;
use super::backend::{VfsBackend, reply};

/// The `MFMT` handler.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mfmt;

#[async_trait]
impl SiteCommandHandler<VfsBackend, FtpUser> for Mfmt {
    async fn handle(&self, ctx: &SiteCommandContext<VfsBackend, FtpUser>) -> Reply {
        let Some((time, name)) = ctx.arguments.split_once(' ') else {
            return usage();
        };
        let Some(mtime) = parse_time(time) else {
            return usage();
        };
        let Some(user) = (*ctx.user).as_ref() else {
            return Reply::new(ReplyCode::NotLoggedIn, "Please log in first");
        };
        let path = ctx.cwd.join(name);
        let Some(vpath) = path.to_str() else {
            return Reply::new(ReplyCode::BadFileName, "names must be UTF-8");
        };
        match user.vfs.set_times(vpath, mtime).await {
            Ok(()) => {
                Reply::new_with_string(ReplyCode::FileStatus, format!("Modify={time}; {name}"))
            }
            Err(e) => libunftp::options::storage_error_reply(&reply(e)),
        }
    }
}

fn usage() -> Reply {
    Reply::new(
        ReplyCode::ParameterSyntaxError,
        "Usage: MFMT YYYYMMDDHHMMSS[.sss] path (UTC)",
    )
}

/// `YYYYMMDDHHMMSS` with optional `.sss` fraction, in UTC (RFC 3659 time-val).
fn parse_time(s: &str) -> Option<SystemTime> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| whole.get(r).and_then(|d| d.parse::<u32>().ok());
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(8..10)?, num(10..12)?, num(12..14)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let nanos = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let digits: u32 = f.parse().ok()?;
            digits * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfmt_times_parse_as_utc_with_optional_milliseconds() {
        let t = parse_time("20240229123456").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_709_210_096
        );
        let t = parse_time("19700101000001.250").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_millis(1250)
        );
        for bad in [
            "2023022912000",
            "20230229120000",
            "20241301000000",
            "2024010100000x",
            "20240101000000.",
        ] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }
}
