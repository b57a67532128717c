//! Nesting depth limits.

use super::*;

#[test]
fn thirty_two_levels_are_accepted() {
    // The envelope map is level 1, so the input may nest 31 more.
    let env = decode(&with_input(nested_arrays(31))).unwrap();
    assert_eq!(env.input, nested_arrays(31));
}

#[test]
fn thirty_three_levels_are_too_deep() {
    let bytes = with_input(nested_arrays(32));
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, Error::TooDeep { limit: 32, .. }), "{err:?}");
    assert_eq!(err.field(), None);
}

#[test]
fn deep_maps_count_like_arrays() {
    let mut value = V::Nil;
    for _ in 0..40 {
        value = map(vec![("k", value)]);
    }
    let err = decode(&with_input(value)).unwrap_err();
    assert!(matches!(err, Error::TooDeep { limit: 32, .. }), "{err:?}");
}

#[test]
fn the_offset_of_too_deep_points_at_the_container() {
    // Forty one-element arrays, no envelope: the 33rd opens at byte 32.
    let mut bytes = vec![0x91u8; 40];
    bytes.push(0xc0);
    assert_eq!(
        decode(&bytes).unwrap_err(),
        Error::TooDeep {
            limit: 32,
            offset: 32
        }
    );
}

#[test]
fn a_million_nested_arrays_fail_fast_without_recursion() {
    let mut bytes = vec![0x91u8; MIB - 1];
    bytes.push(0xc0);
    let started = Instant::now();
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, Error::TooDeep { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn custom_depth_limits_apply() {
    let bytes = with_input(nested_arrays(3)); // 4 levels in all
    let at = |max_depth| {
        decode_with(
            &bytes,
            &DecodeLimits {
                max_depth,
                ..DecodeLimits::default()
            },
        )
    };
    assert!(at(4).is_ok());
    assert!(matches!(at(3), Err(Error::TooDeep { limit: 3, .. })));
}
