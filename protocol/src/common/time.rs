//! Calendar formatting of timestamps for listings and headers, in UTC, without a date crate:
//! `ls -l` dates (SFTP longnames, FTP LIST), RFC 3339 (JSON, CLI), FTP's `YYYYMMDDHHMMSS`
//! (MDTM, MLSD) and HTTP's IMF-fixdate (`Last-Modified`).

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// A UTC calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month 1-12.
    pub month: u32,
    /// Day 1-31.
    pub day: u32,
    /// Hour 0-23.
    pub hour: u32,
    /// Minute 0-59.
    pub minute: u32,
    /// Second 0-59.
    pub second: u32,
    /// Days since 1970-01-01 (for the weekday).
    days: i64,
}

impl Utc {
    /// The calendar time of `secs` seconds since the Unix epoch.
    pub fn from_secs(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            days,
        }
    }

    /// The calendar time of `ms` milliseconds since the Unix epoch.
    pub fn from_ms(ms: i64) -> Self {
        Self::from_secs(ms.div_euclid(1000))
    }

    fn month_name(&self) -> &'static str {
        MONTHS
            .get(self.month.saturating_sub(1) as usize)
            .copied()
            .unwrap_or("Jan")
    }

    /// `2023-11-14T22:13:20Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `20231114221320` (FTP MDTM and MLSD `modify=`).
    pub fn ftp(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `Tue, 14 Nov 2023 22:13:20 GMT` (HTTP `Last-Modified`).
    pub fn http(&self) -> String {
        let weekday = WEEKDAYS[self.days.rem_euclid(7) as usize];
        format!(
            "{weekday}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            self.day,
            self.month_name(),
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }
}

/// `Mon dd HH:MM` within the last six months, `Mon dd  YYYY` otherwise (as `ls -l`, in UTC);
/// `t` and `now` in seconds since the epoch.
pub fn ls_date(t: u64, now: u64) -> String {
    let c = Utc::from_secs(t as i64);
    const SIX_MONTHS: u64 = 182 * 86_400;
    if t + SIX_MONTHS > now && t <= now + 3600 {
        format!(
            "{} {:>2} {:02}:{:02}",
            c.month_name(),
            c.day,
            c.hour,
            c.minute
        )
    } else {
        format!("{} {:>2}  {}", c.month_name(), c.day, c.year)
    }
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_dates_show_the_time_of_day_and_old_ones_the_year() {
        let t = 1_700_000_000;
        assert_eq!(ls_date(t, t + 60), "Nov 14 22:13");
        assert_eq!(ls_date(t, t + 400 * 86_400), "Nov 14  2023");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn formats_match_their_standards() {
        let c = Utc::from_secs(1_700_000_000);
        assert_eq!(c.rfc3339(), "2023-11-14T22:13:20Z");
        assert_eq!(c.ftp(), "20231114221320");
        assert_eq!(c.http(), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(Utc::from_ms(0).http(), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(Utc::from_ms(-1000).rfc3339(), "1969-12-31T23:59:59Z");
    }
}
