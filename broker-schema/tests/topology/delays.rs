//! Delay routes: units, rounding and the longest delay.

use super::*;

#[test]
fn no_delay_needs_no_delay_route() {
    assert_eq!(topo().delay_route("default", Duration::ZERO).unwrap(), None);
    // Sub-millisecond delays round to zero milliseconds first.
    assert_eq!(
        topo()
            .delay_route("default", Duration::from_micros(999))
            .unwrap(),
        None
    );
}

#[test]
fn one_millisecond_rounds_up_to_one_unit() {
    let route = topo()
        .delay_route("default", Duration::from_millis(1))
        .unwrap()
        .unwrap();
    assert_eq!(route.exchange, "celeriac.delay.00");
    assert_eq!(route.routing_key, format!("{}1.default", "0.".repeat(24)));
    assert_eq!(route.delay, Duration::from_millis(100));
}

#[test]
fn one_hundred_milliseconds_is_exactly_one_unit() {
    let route = topo()
        .delay_route("default", Duration::from_millis(100))
        .unwrap()
        .unwrap();
    assert_eq!(route.exchange, "celeriac.delay.00");
    assert_eq!(route.delay, Duration::from_millis(100));
    let next = topo()
        .delay_route("default", Duration::from_millis(101))
        .unwrap()
        .unwrap();
    assert_eq!(next.exchange, "celeriac.delay.01");
    assert_eq!(next.routing_key, format!("{}1.0.default", "0.".repeat(23)));
    assert_eq!(next.delay, Duration::from_millis(200));
}

#[test]
fn two_and_a_half_seconds_is_25_units() {
    // 25 = 0b11001: levels 4, 3 and 0.
    let route = topo()
        .delay_route("default", Duration::from_millis(2_500))
        .unwrap()
        .unwrap();
    assert_eq!(route.exchange, "celeriac.delay.04");
    assert_eq!(
        route.routing_key,
        "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1.0.0.1.default"
    );
    assert_eq!(route.delay, Duration::from_millis(2_500));
}

#[test]
fn thirty_days_fit() {
    let route = topo()
        .delay_route("default", Duration::from_millis(30 * DAY_MS))
        .unwrap()
        .unwrap();
    let units = 30 * DAY_MS / 100;
    assert_eq!(units, 25_920_000);
    assert_eq!(route.exchange, "celeriac.delay.24");
    assert_eq!(route.routing_key, format!("{}default", bits(units)));
    assert_eq!(route.delay, Duration::from_millis(30 * DAY_MS));
}

#[test]
fn thirty_nine_days_are_too_long() {
    let err = topo()
        .delay_route("default", Duration::from_millis(39 * DAY_MS))
        .unwrap_err();
    assert_eq!(
        err,
        Error::DelayTooLong {
            requested_ms: 39 * DAY_MS,
            max_ms: 3_355_443_100
        }
    );
}

#[test]
fn the_longest_delay_fits_and_one_millisecond_more_does_not() {
    let route = topo().delay_route("default", MAX_DELAY).unwrap().unwrap();
    assert_eq!(route.exchange, "celeriac.delay.24");
    assert_eq!(route.routing_key, format!("{}default", "1.".repeat(25)));
    assert_eq!(route.delay, MAX_DELAY);
    let over = MAX_DELAY + Duration::from_millis(1);
    assert!(matches!(
        topo().delay_route("default", over),
        Err(Error::DelayTooLong { .. })
    ));
    assert!(matches!(
        topo().delay_route("default", Duration::MAX),
        Err(Error::DelayTooLong { .. })
    ));
}
