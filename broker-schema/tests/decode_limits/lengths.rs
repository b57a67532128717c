//! Length headers that claim more than the input holds, trailing bytes, and
//! every marker family.

use super::*;

/// Rejected as malformed, at once: no allocation follows a lying header.
fn assert_rejected_quickly(bytes: &[u8]) {
    let started = Instant::now();
    let err = decode_no_panic(bytes).unwrap_err();
    assert!(
        matches!(err, Error::Malformed { .. }),
        "{}: {err:?}",
        hex(bytes)
    );
    assert!(started.elapsed() < Duration::from_millis(500), "too slow");
    assert_eq!(err.field(), None);
}

#[test]
fn an_array32_claiming_4_billion_items_in_10_bytes_is_rejected() {
    assert_rejected_quickly(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0]);
}

#[test]
fn every_length_header_that_overclaims_is_rejected() {
    let claims: &[&[u8]] = &[
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'v', 0x01], // map32
        &[0xde, 0xff, 0xff, 0xa1, b'v', 0x01],             // map16
        &[0xdc, 0xff, 0xff, 0xc0, 0xc0],                   // array16
        &[0x9f, 0xc0],                                     // fixarray 15
        &[0x8f, 0xc0, 0xc0],                               // fixmap 15
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],             // str32
        &[0xda, 0xff, 0xff, b'a'],                         // str16
        &[0xd9, 0xff, b'a'],                               // str8
        &[0xbf, b'a'],                                     // fixstr 31
        &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],             // bin32
        &[0xc5, 0xff, 0xff, 0x00],                         // bin16
        &[0xc4, 0xff, 0x00],                               // bin8
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x05, 0x00],       // ext32
        &[0xc8, 0xff, 0xff, 0x05, 0x00],                   // ext16
        &[0xc7, 0xff, 0x05, 0x00],                         // ext8
        &[0xd8, 0x05, 0x00],                               // fixext16
        &[0xcf, 0x00],                                     // uint64
        &[0xcb, 0x00, 0x00],                               // float64
        &[0xdd, 0xff, 0xff],                               // array32, length cut
    ];
    for bytes in claims {
        assert_rejected_quickly(bytes);
    }
}

#[test]
fn an_overclaiming_input_inside_a_valid_envelope_is_rejected() {
    let mut bytes = with_input(V::Nil);
    // Replace the input's nil by an array32 claiming u32::MAX items; the
    // created_at field after it cannot fill them.
    let nil_at = bytes.windows(6).position(|w| w == b"input\xc0").unwrap() + 5;
    bytes.splice(nil_at..=nil_at, [0xdd, 0xff, 0xff, 0xff, 0xff]);
    assert_rejected_quickly(&bytes);
}

#[test]
fn trailing_bytes_are_malformed_at_their_offset() {
    let mut bytes = with_input(V::Nil);
    let end = bytes.len();
    bytes.push(0xc0);
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, Error::Malformed { offset, .. } if offset == end),
        "{err:?}"
    );
    // Two envelopes back to back are not one.
    let mut twice = with_input(V::Nil);
    twice.extend(with_input(V::Nil));
    assert!(matches!(decode(&twice), Err(Error::Malformed { .. })));
}

#[test]
fn the_reserved_marker_is_malformed() {
    let mut bytes = with_input(V::Nil);
    let nil_at = bytes.iter().position(|&b| b == 0xc0).unwrap();
    bytes[nil_at] = 0xc1;
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, Error::Malformed { offset, .. } if offset == nil_at),
        "{err:?}"
    );
}

#[test]
fn check_limits_accepts_every_marker_family() {
    let value = V::Array(vec![
        V::Nil,
        V::Boolean(true),
        V::from(7),
        V::from(-7),
        V::from(200),
        V::from(-200),
        V::from(70_000),
        V::from(-70_000),
        V::from(5_000_000_000u64),
        V::from(-5_000_000_000i64),
        V::F32(1.5),
        V::F64(2.5),
        V::from("s"),
        V::from("x".repeat(40)),
        V::from("x".repeat(300)),
        V::from("x".repeat(70_000)),
        V::Binary(vec![1; 3]),
        V::Binary(vec![1; 300]),
        V::Binary(vec![1; 70_000]),
        V::Ext(1, vec![1]),
        V::Ext(1, vec![1; 2]),
        V::Ext(1, vec![1; 4]),
        V::Ext(1, vec![1; 8]),
        V::Ext(1, vec![1; 16]),
        V::Ext(1, vec![1; 3]),
        V::Ext(1, vec![1; 300]),
        V::Ext(1, vec![1; 70_000]),
        V::Array(vec![V::Nil; 20]),
        V::Array(vec![V::Nil; 70_000]),
        V::Map(vec![(V::from(1), V::Nil); 20]),
        V::Map(vec![(V::from(1), V::Nil); 70_000]),
    ]);
    let bytes = pack(&value);
    assert!(check_limits(&bytes, &DecodeLimits::default()).is_ok());
    // And inside an envelope, the decoder passes all of it through.
    let env = decode(&with_input(value.clone())).unwrap();
    assert_eq!(env.input, value);
}
