//! Which scheduled backups to keep: the newest one of each of the last N hours, N days and N
//! weeks that have one (UTC; weeks start on Monday), and always the newest of all. The rules
//! add up: a backup kept as one hour's newest may also be its day's. Pure: the caller lists
//! the files and deletes what this says.

use serde::{Deserialize, Serialize};

/// How many hours, days and weeks keep a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// For each backup (by when it was taken, ms since the Unix epoch, in any order), whether to
/// keep it.
pub fn keep(taken_ms: &[u64], policy: RetentionPolicy) -> Vec<bool> {
    let mut newest_first: Vec<usize> = (0..taken_ms.len()).collect();
    newest_first.sort_by_key(|&i| std::cmp::Reverse(taken_ms[i]));
    let mut keep = vec![false; taken_ms.len()];
    if let Some(&newest) = newest_first.first() {
        keep[newest] = true;
    }
    let hour = |ms: u64| ms / HOUR_MS;
    let day = |ms: u64| ms / DAY_MS;
    // 1970-01-01 was a Thursday: shifting by three days starts every week on a Monday.
    let week = |ms: u64| (ms / DAY_MS + 3) / 7;
    for (count, bucket) in [(policy.hourly, &hour as &dyn Fn(u64) -> u64), (policy.daily, &day), (policy.weekly, &week)] {
        let mut last_bucket = None;
        let mut kept = 0;
        for &i in &newest_first {
            if kept == count {
                break;
            }
            let b = bucket(taken_ms[i]);
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                keep[i] = true;
                kept += 1;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    /// Monday 2026-11-30 00:00 UTC.
    const MONDAY: u64 = 1_795_996_800_000;

    fn kept(taken: &[u64], policy: RetentionPolicy) -> Vec<u64> {
        let mut out: Vec<u64> = taken.iter().zip(keep(taken, policy)).filter(|(_, k)| *k).map(|(t, _)| *t).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn each_of_the_last_hours_keeps_its_newest_backup() {
        // Every 15 minutes for five hours, listed oldest first.
        let taken: Vec<u64> = (0..20).map(|i| MONDAY + i * 15 * MIN).collect();
        let policy = RetentionPolicy { hourly: 3, daily: 0, weekly: 0 };
        assert_eq!(kept(&taken, policy), vec![MONDAY + 165 * MIN, MONDAY + 225 * MIN, MONDAY + 285 * MIN]);
        // Order of the input does not matter.
        let mut reversed = taken.clone();
        reversed.reverse();
        assert_eq!(kept(&reversed, policy), kept(&taken, policy));
    }

    #[test]
    fn hours_days_and_weeks_add_up_and_the_newest_always_stays() {
        // Hourly for 15 days (Monday 30 Nov to Monday 14 Dec, 23:00).
        let taken: Vec<u64> = (0..15 * 24).map(|h| MONDAY + h * HOUR_MS).collect();
        let policy = RetentionPolicy { hourly: 2, daily: 3, weekly: 3 };
        let last = MONDAY + (15 * 24 - 1) * HOUR_MS;
        let end_of_day = |d: u64| MONDAY + d * DAY_MS + 23 * HOUR_MS;
        assert_eq!(
            kept(&taken, policy),
            vec![
                end_of_day(6),  // Sunday 6 Dec: week 1's newest
                end_of_day(12), // days 12 and 13, and Sunday 13 Dec: week 2's newest
                end_of_day(13),
                last - HOUR_MS, // the hour before the newest
                last,           // the newest: its hour, its day, its week
            ]
        );
        let none = RetentionPolicy { hourly: 0, daily: 0, weekly: 0 };
        assert_eq!(kept(&taken, none), vec![last], "the newest backup is never deleted");
        assert!(keep(&[], policy).is_empty());
    }
}
