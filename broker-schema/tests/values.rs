#![allow(clippy::unwrap_used)]
//! Task inputs and outputs as MessagePack values: structs travel as maps
//! with named fields and enum variants by name, so that other languages
//! read and write them as they read and write the envelope.

use std::collections::BTreeMap;

use celeriac_schema::{decode, encode, from_value, to_value, Envelope, TaskState};
use rmpv::Value as V;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Resize {
    url: String,
    width: u32,
    mode: Mode,
    crop: Option<Crop>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Fit,
    Fill,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Crop {
    Square(u32),
    Box { w: u32, h: u32 },
}

fn map(pairs: Vec<(&str, V)>) -> V {
    V::Map(pairs.into_iter().map(|(k, v)| (V::from(k), v)).collect())
}

fn sample() -> Resize {
    Resize {
        url: "https://example.invalid/cat.png".into(),
        width: 640,
        mode: Mode::Fill,
        crop: Some(Crop::Box { w: 10, h: 20 }),
    }
}

#[test]
fn structs_become_maps_with_named_fields() {
    assert_eq!(
        to_value(&sample()).unwrap(),
        map(vec![
            ("url", V::from("https://example.invalid/cat.png")),
            ("width", V::from(640)),
            ("mode", V::from("fill")),
            (
                "crop",
                map(vec![(
                    "Box",
                    map(vec![("w", V::from(10)), ("h", V::from(20))])
                )])
            ),
        ])
    );
}

#[test]
fn values_round_trip_through_an_envelope() {
    let env = Envelope::new("images.resize", to_value(&sample()).unwrap());
    let back = decode(&encode(&env).unwrap()).unwrap();
    assert_eq!(
        from_value::<Resize>(&back.input, "input").unwrap(),
        sample()
    );
    let other = Resize {
        mode: Mode::Fit,
        crop: Some(Crop::Square(5)),
        ..sample()
    };
    let value = to_value(&other).unwrap();
    assert_eq!(from_value::<Resize>(&value, "input").unwrap(), other);
}

#[test]
fn a_map_written_by_another_language_reads_as_the_struct() {
    // Field order is free and unknown fields are ignored.
    let value = map(vec![
        ("crop", V::Nil),
        ("mode", V::from("fit")),
        ("extra", V::from(true)),
        ("width", V::from(32)),
        ("url", V::from("u")),
    ]);
    let resize: Resize = from_value(&value, "input").unwrap();
    assert_eq!(resize.mode, Mode::Fit);
    assert_eq!(resize.crop, None);
}

#[test]
fn errors_in_values_name_the_field_under_the_root() {
    let value = map(vec![
        ("url", V::from("u")),
        ("width", V::from("wide")),
        ("mode", V::from("fit")),
    ]);
    let err = from_value::<Resize>(&value, "input").unwrap_err();
    assert_eq!(err.field(), Some("input.width"), "{err}");
    let value = map(vec![("url", V::from("u")), ("mode", V::from("fit"))]);
    let err = from_value::<Resize>(&value, "input").unwrap_err();
    assert_eq!(err.field(), Some("input.width"), "{err}");
    let value = map(vec![
        ("url", V::from("u")),
        ("width", V::from(1)),
        ("mode", V::from("stretch")),
    ]);
    let err = from_value::<Resize>(&value, "input").unwrap_err();
    assert_eq!(err.field(), Some("input.mode"), "{err}");
}

#[test]
fn maps_and_plain_values_keep_their_shape() {
    let mut meta = BTreeMap::new();
    meta.insert("a".to_owned(), vec![1u8, 2]);
    assert_eq!(
        to_value(&meta).unwrap(),
        map(vec![("a", V::Array(vec![V::from(1), V::from(2)]))])
    );
    assert_eq!(
        to_value(&(2, "x")).unwrap(),
        V::Array(vec![V::from(2), V::from("x")])
    );
    assert_eq!(to_value(&Option::<u8>::None).unwrap(), V::Nil);
    assert_eq!(to_value(&TaskState::Queued).unwrap(), V::from("queued"));
    // A value carried inside a value passes through untouched.
    let raw = V::Ext(3, vec![9]);
    assert_eq!(to_value(&raw).unwrap(), raw);
    assert_eq!(from_value::<V>(&raw, "input").unwrap(), raw);
}
