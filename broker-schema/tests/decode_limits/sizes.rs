//! Body size limits.

use super::*;

/// A valid envelope whose encoding is exactly `size` bytes.
fn envelope_of_size(size: usize) -> Vec<u8> {
    let probe = |n: usize| encode(&Envelope::new("pad", V::from("x".repeat(n)))).unwrap();
    let mut n = size - 100;
    for _ in 0..4 {
        let bytes = probe(n);
        if bytes.len() == size {
            return bytes;
        }
        n = n + size - bytes.len();
    }
    panic!("no envelope of {size} bytes")
}

#[test]
fn a_body_of_exactly_1_mib_is_accepted() {
    assert!(decode(&envelope_of_size(MIB)).is_ok());
}

#[test]
fn a_body_over_1_mib_is_too_large() {
    let err = decode(&envelope_of_size(MIB + 1)).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: MIB + 1,
            limit: MIB
        }
    );
    assert_eq!(err.field(), None);
}

#[test]
fn size_is_checked_before_anything_else() {
    // Garbage that would be malformed is reported as too large, at once.
    let garbage = vec![0xc1u8; 8 * MIB];
    let started = Instant::now();
    let err = decode(&garbage).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn custom_size_limits_apply() {
    let bytes = envelope_of_size(1000);
    let tight = DecodeLimits {
        max_bytes: 999,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_with(&bytes, &tight),
        Err(Error::TooLarge {
            size: 1000,
            limit: 999
        })
    ));
    let exact = DecodeLimits {
        max_bytes: 1000,
        ..DecodeLimits::default()
    };
    assert!(decode_with(&bytes, &exact).is_ok());
}

#[test]
fn default_limits_are_1_mib_and_32_levels() {
    let limits = DecodeLimits::default();
    assert_eq!(limits.max_bytes, 1_048_576);
    assert_eq!(limits.max_depth, 32);
}
