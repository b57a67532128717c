//! Signatures of replayed copies.
//!
//! Workers that require signatures run only messages whose signature
//! verifies. A replayed copy keeps its dead letter's signature when it
//! carries the same body and the same signed fields (a malformed body sent
//! unchanged, or a body whose re-encoding changed nothing); when the
//! replay changed them (the attempt reset to 0, a re-encoded body), the
//! copy is signed again with the signing key of `--signing-keys`.
//!
//! A dead letter whose own signature does not verify with the keyring
//! (unsigned, forged, or signed with a key since removed: the dead letters
//! of reason `bad-signature`) is not signed and replayed, unless the
//! operator says so with `--sign-unverified` after looking at it: signing
//! it would vouch for a message nobody with a key sent.

use celeriac_producer::signing::{properties_fields, sign_properties, verify_properties};
use celeriac_schema::signing::{Keyring, SIGNATURE_HEADER};

use crate::dead_letter::DeadLetter;
use crate::replay::{Copy, Skip};

/// How replay treats signatures.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySigning<'a> {
    /// The keyring of `--signing-keys`.
    pub keyring: &'a Keyring,
    /// Sign dead letters whose own signature does not verify.
    pub sign_unverified: bool,
}

/// What was done to a copy's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureAction {
    /// Sent as it came: no keyring, nothing changed.
    AsItCame,
    /// The dead letter's own signature, still valid for the copy.
    Kept,
    /// Signed with the signing key (whose id this is).
    Signed(String),
    /// No keyring and the copy differs: the stale signature was removed.
    Removed,
}

/// Whether `copy` carries the same body and signed fields as `dl`.
fn unchanged(copy: &Copy, dl: &DeadLetter) -> bool {
    if copy.body != dl.body {
        return false;
    }
    match (
        properties_fields(&copy.properties),
        properties_fields(&dl.properties),
    ) {
        (Ok(a), Ok(b)) => a.signs_like(&b),
        _ => false,
    }
}

/// Applies the signature rules to a prepared copy of `dl`.
///
/// # Errors
///
/// [`Skip`] for a dead letter whose signature does not verify, without
/// `sign_unverified`.
pub fn sign_copy(
    mut copy: Copy,
    dl: &DeadLetter,
    signing: Option<ReplaySigning<'_>>,
) -> Result<(Copy, SignatureAction), Skip> {
    let same = unchanged(&copy, dl);
    let Some(signing) = signing else {
        if same {
            return Ok((copy, SignatureAction::AsItCame));
        }
        let table = copy.properties.headers().clone().unwrap_or_default();
        if !table.contains_key(SIGNATURE_HEADER) {
            return Ok((copy, SignatureAction::AsItCame));
        }
        let rest: std::collections::BTreeMap<_, _> = table
            .inner()
            .iter()
            .filter(|(k, _)| k.as_str() != SIGNATURE_HEADER)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        copy.properties = copy.properties.with_headers(rest.into());
        return Ok((copy, SignatureAction::Removed));
    };
    let keyring = signing.keyring;
    match verify_properties(keyring, &dl.properties, &dl.body) {
        Ok(_) if same => return Ok((copy, SignatureAction::Kept)),
        Ok(_) => {}
        Err(_) if signing.sign_unverified => {}
        Err(e) => {
            return Err(Skip(format!(
                "its signature does not verify ({e}); pass --sign-unverified to sign it \
                 with key {:?} and replay it",
                keyring.signing_key_id()
            )))
        }
    }
    copy.properties = sign_properties(keyring, copy.properties, &copy.body)
        .map_err(|e| Skip(format!("cannot sign the copy: {e}")))?;
    Ok((
        copy,
        SignatureAction::Signed(keyring.signing_key_id().to_owned()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::prepare;
    use celeriac_producer::publish::task_properties;
    use celeriac_schema::{encode, headers, Envelope, Topology};
    use lapin::types::AMQPValue;

    fn ring(id: &str, byte: u8) -> Keyring {
        Keyring::new(id, &[byte; 32]).expect("a valid key")
    }

    /// A dead letter of `env`, signed by `signer` when given.
    fn letter(env: &Envelope, body: Vec<u8>, signer: Option<&Keyring>) -> DeadLetter {
        let props = task_properties(env, "default", &body, signer).expect("properties");
        let mut table = props.headers().clone().unwrap_or_default();
        table.insert(
            headers::REASON.into(),
            AMQPValue::LongString("retries-exhausted".into()),
        );
        DeadLetter::new("default", "ns", props.with_headers(table), body)
    }

    fn signature(copy: &Copy) -> Option<String> {
        crate::dead_letter::get_str(
            &copy.properties.headers().clone().unwrap_or_default(),
            SIGNATURE_HEADER,
        )
    }

    fn replay(
        dl: &DeadLetter,
        signing: Option<ReplaySigning<'_>>,
    ) -> Result<(Copy, SignatureAction), Skip> {
        let topo = Topology::new("ns").expect("valid");
        let copy = prepare(&topo, dl, true, 5).expect("prepared");
        sign_copy(copy, dl, signing)
    }

    #[test]
    fn an_unchanged_copy_keeps_its_signature() {
        let k = ring("k1", 1);
        let env = Envelope::new("t", rmpv::Value::Nil);
        let body = encode(&env).expect("encodes");
        let dl = letter(&env, body, Some(&k));
        let original = crate::dead_letter::get_str(&dl.headers(), SIGNATURE_HEADER);
        let signing = ReplaySigning {
            keyring: &k,
            sign_unverified: false,
        };
        let (copy, action) = replay(&dl, Some(signing)).expect("replayed");
        assert_eq!(action, SignatureAction::Kept);
        assert_eq!(signature(&copy), original);
        assert_eq!(
            verify_properties(&k, &copy.properties, &copy.body),
            Ok("k1")
        );
    }

    #[test]
    fn a_reset_attempt_is_signed_again_with_the_signing_key() {
        let old = ring("old", 1);
        let ring = Keyring::new("new", &[2; 32])
            .and_then(|r| r.with_verification_key("old", &[1; 32]))
            .expect("ring");
        let mut env = Envelope::new("t", rmpv::Value::Nil);
        env.attempt = 3;
        let body = encode(&env).expect("encodes");
        let dl = letter(&env, body, Some(&old));
        let signing = ReplaySigning {
            keyring: &ring,
            sign_unverified: false,
        };
        let (copy, action) = replay(&dl, Some(signing)).expect("replayed");
        assert_eq!(action, SignatureAction::Signed("new".into()));
        assert_eq!(
            verify_properties(&ring, &copy.properties, &copy.body),
            Ok("new")
        );
    }

    #[test]
    fn unverified_dead_letters_are_signed_only_when_told() {
        let k = ring("k1", 1);
        let env = Envelope::new("t", rmpv::Value::Nil);
        let body = encode(&env).expect("encodes");
        for signer in [None, Some(ring("gone", 3)), Some(ring("k1", 4))] {
            let dl = letter(&env, body.clone(), signer.as_ref());
            let strict = ReplaySigning {
                keyring: &k,
                sign_unverified: false,
            };
            let Err(Skip(why)) = replay(&dl, Some(strict)) else {
                panic!("an unverified dead letter was replayed");
            };
            assert!(why.contains("--sign-unverified"), "{why}");
            let told = ReplaySigning {
                keyring: &k,
                sign_unverified: true,
            };
            let (copy, action) = replay(&dl, Some(told)).expect("replayed");
            assert_eq!(action, SignatureAction::Signed("k1".into()));
            assert_eq!(
                verify_properties(&k, &copy.properties, &copy.body),
                Ok("k1")
            );
        }
    }

    #[test]
    fn without_keys_a_stale_signature_is_removed() {
        let k = ring("k1", 1);
        let mut env = Envelope::new("t", rmpv::Value::Nil);
        env.attempt = 2;
        let body = encode(&env).expect("encodes");
        let changed = letter(&env, body, Some(&k));
        let (copy, action) = replay(&changed, None).expect("replayed");
        assert_eq!(action, SignatureAction::Removed);
        assert_eq!(signature(&copy), None);
        env.attempt = 0;
        let body = encode(&env).expect("encodes");
        let same = letter(&env, body, Some(&k));
        let (copy, action) = replay(&same, None).expect("replayed");
        assert_eq!(action, SignatureAction::AsItCame);
        assert!(signature(&copy).is_some());
    }
}
