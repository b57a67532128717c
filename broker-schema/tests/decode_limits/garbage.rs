//! Garbage, truncations, bit flips and splices: rejected, never a panic.

use super::*;

#[test]
fn an_empty_body_is_malformed_at_offset_0() {
    let err = decode(&[]).unwrap_err();
    assert!(matches!(err, Error::Malformed { offset: 0, .. }), "{err:?}");
    assert_eq!(err.field(), None);
}

#[test]
fn single_bytes_never_panic() {
    for b in 0..=255u8 {
        let err = decode_no_panic(&[b]).unwrap_err();
        assert_well_formed_error(&err, &[b]);
    }
}

#[test]
fn random_garbage_is_rejected_without_panicking() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..iterations(4000) {
        let len = rng.below(96);
        let mut bytes = rng.bytes(len);
        // Half of them start like a map, to get past the first byte.
        if !bytes.is_empty() && rng.below(2) == 0 {
            bytes[0] = 0x80 | (rng.below(16) as u8);
        }
        fuzz_one(&bytes);
    }
}

#[test]
fn every_truncation_of_a_valid_encoding_is_malformed() {
    let bytes = encode(&full_envelope()).unwrap();
    assert!(decode(&bytes).is_ok());
    for cut in 0..bytes.len() {
        let err = decode_no_panic(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::Malformed { .. }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn bit_flips_of_a_valid_encoding_never_panic() {
    let bytes = encode(&full_envelope()).unwrap();
    let mut rng = Rng(0x5eed_0002);
    let mut decoded = 0;
    for _ in 0..iterations(4000) {
        let mut mutated = bytes.clone();
        for _ in 0..=rng.below(3) {
            let i = rng.below(mutated.len());
            mutated[i] ^= 1 << rng.below(8);
        }
        if decode_no_panic(&mutated).is_ok() {
            decoded += 1;
        }
        fuzz_one(&mutated);
    }
    // Flips inside strings keep the envelope valid: the suite exercises both
    // outcomes.
    assert!(decoded > 0);
}

#[test]
fn spliced_and_overwritten_encodings_never_panic() {
    let bytes = encode(&full_envelope()).unwrap();
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..iterations(3000) {
        let mut mutated = bytes.clone();
        match rng.below(4) {
            0 => {
                let i = rng.below(mutated.len());
                mutated.insert(i, rng.next() as u8);
            }
            1 => {
                let i = rng.below(mutated.len());
                mutated.remove(i);
            }
            2 => {
                // A random container or length marker somewhere.
                let markers = [0xdc, 0xdd, 0xde, 0xdf, 0xc6, 0xdb, 0xc9, 0x9f, 0x8f, 0xbf];
                let i = rng.below(mutated.len());
                mutated[i] = markers[rng.below(markers.len())];
            }
            _ => {
                let i = rng.below(mutated.len());
                let n = rng.below(8).min(mutated.len() - i);
                let noise = rng.bytes(n);
                mutated[i..i + n].copy_from_slice(&noise);
            }
        }
        fuzz_one(&mutated);
    }
}
