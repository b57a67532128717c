#![allow(clippy::unwrap_used)]

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn intervals_align_to_the_epoch() {
    let s = Schedule::interval_secs(60.0).unwrap();
    assert_eq!(s.next_after(at(0)), Some(at(60)));
    assert_eq!(s.next_after(at(59)), Some(at(60)));
    assert_eq!(s.next_after(at(60)), Some(at(120)));
    assert_eq!(s.latest_at_or_before(at(119)), Some(at(60)));
    let frac = Schedule::interval_secs(1.5).unwrap();
    assert_eq!(
        frac.next_after(at(3)),
        Some(UNIX_EPOCH + Duration::from_millis(4500))
    );
}

#[test]
fn interval_ticks_never_share_a_second() {
    let s = Schedule::interval_secs(1.0001).unwrap();
    let mut t = at(1_700_000_000);
    let mut last = i64::MIN;
    for _ in 0..10_000 {
        t = s.next_after(t).unwrap();
        assert!(unix_secs(t) > last);
        last = unix_secs(t);
    }
}

#[test]
fn bad_intervals_are_refused() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            Schedule::interval_secs(bad),
            Err(ScheduleError::IntervalNotPositive(_))
        ));
    }
    assert!(matches!(
        Schedule::interval_secs(0.999),
        Err(ScheduleError::IntervalTooShort { .. })
    ));
    assert!(Schedule::interval_secs(1e300).is_err());
}

#[test]
fn cron_five_and_six_fields() {
    let five = Schedule::cron("*/5 * * * *").unwrap();
    assert_eq!(five.period(), Duration::from_secs(300));
    assert_eq!(five.next_after(at(1)), Some(at(300)));
    let six = Schedule::cron("*/10 * * * * *").unwrap();
    assert_eq!(six.period(), Duration::from_secs(10));
    assert_eq!(six.next_after(at(10)), Some(at(20)));
    assert_eq!(six.latest_at_or_before(at(29)), Some(at(20)));
}

#[test]
fn cron_errors_name_the_expression() {
    for bad in ["", "* * *", "61 * * * *", "* * * * * * *", "bogus"] {
        let err = Schedule::cron(bad).unwrap_err();
        assert!(matches!(err, ScheduleError::Cron { .. }), "{bad}: {err}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    assert!(matches!(
        Schedule::cron("0 0 30 2 *"),
        Err(ScheduleError::NeverFires { .. } | ScheduleError::Cron { .. })
    ));
}

#[test]
fn weekday_cron_is_about_daily() {
    let s = Schedule::cron("0 9 * * MON-FRI").unwrap();
    let day = 86_400.0;
    let p = s.period().as_secs_f64();
    assert!(p > day && p < 1.5 * day, "{p}");
    assert!(s.less_often_than(&Schedule::cron("@daily").unwrap()));
    assert!(!s.less_often_than(&Schedule::cron("@weekly").unwrap()));
}

#[test]
fn comparisons() {
    let minute = Schedule::interval_secs(60.0).unwrap();
    let cron_minute = Schedule::cron("* * * * *").unwrap();
    assert!(!minute.less_often_than(&cron_minute));
    assert!(!cron_minute.less_often_than(&minute));
    let hour = Schedule::interval_secs(3600.0).unwrap();
    assert!(hour.less_often_than(&minute));
    assert!(!minute.less_often_than(&hour));
}

#[test]
fn from_str_and_serde() {
    assert_eq!(
        "2".parse::<Schedule>().unwrap(),
        Schedule::Interval(Duration::from_secs(2))
    );
    assert!(matches!(
        "@hourly".parse::<Schedule>().unwrap(),
        Schedule::Cron(_)
    ));
    let s: Schedule = serde_json::from_str("30").unwrap();
    assert_eq!(s, Schedule::Interval(Duration::from_secs(30)));
    let s: Schedule = serde_json::from_str("\"0 0 * * *\"").unwrap();
    assert_eq!(s.period(), Duration::from_secs(86_400));
    let err = serde_json::from_str::<Schedule>("0.1").unwrap_err();
    assert!(err.to_string().contains("minimum"), "{err}");
    let o: Overlap = serde_json::from_str("\"queue\"").unwrap();
    assert_eq!(o, Overlap::Queue);
    assert_eq!("ALLOW".parse::<Overlap>().unwrap(), Overlap::Allow);
}
