#![allow(clippy::unwrap_used, missing_docs)]
use rmpv::Value as V;
fn enc(v: &V) -> Vec<u8> { let mut b = Vec::new(); rmpv::encode::write_value(&mut b, v).unwrap(); b }
fn m(pairs: Vec<(&str, V)>) -> V { V::Map(pairs.into_iter().map(|(k, v)| (V::from(k), v)).collect()) }
fn base() -> Vec<(&'static str, V)> { vec![("v", V::from(1)), ("id", V::from("0192f0c4-1a2b-7c3d-8e4f-0123456789ab")), ("task", V::from("ping")), ("input", V::Nil), ("created_at", V::from(1u64))] }
fn show(name: &str, v: V) { let r = celeriac_schema::decode(&enc(&v)); match r { Ok(e) => println!("{name}: OK {e:?}"), Err(e) => println!("{name}: ERR {e:?} field={:?}", e.field()) } }
#[test]
fn probe() {
    let mut b = base(); b.push(("eta", V::Nil)); b.push(("workflow", V::Nil)); show("nil_opts", m(b));
    let mut b = base(); b.push(("attempt", V::Nil)); show("nil_attempt", m(b));
    let mut b = base(); b.push(("retry", V::Nil)); show("nil_retry", m(b));
    let mut b = base(); b.push(("continuation", V::Nil)); show("nil_cont", m(b));
    let mut b = base(); b.push(("meta", V::Nil)); show("nil_meta", m(b));
    let mut b = base(); b.push(("retry", m(vec![("backoff", m(vec![("multiplier", V::from(3))]))]))); show("int_mult", m(b));
    let mut b = base(); b.push(("task", V::from("dup"))); show("dup", m(b));
    let mut b = base(); b.push(("v", V::from(1))); show("dup_v", m(b));
    let mut b = base(); b[2] = ("task", V::Binary(b"bin".to_vec())); show("bin_task", m(b));
    let mut b = base(); b[1] = ("id", V::from("0192F0C41A2B7C3D8E4F0123456789AB")); show("upper_id", m(b));
    let mut b = base(); b[1] = ("id", V::from("nope")); show("bad_id", m(b));
    let mut b = base(); b.push(("attempt", V::from(-1))); show("neg_attempt", m(b));
    let mut b = base(); b.push(("attempt", V::from(1.0))); show("float_attempt", m(b));
    let mut b = base(); b.push(("priority", V::from(200))); show("prio200", m(b));
    let mut b = base(); b.push(("priority", V::from(300))); show("prio300", m(b));
    let mut b = base(); b.push(("continuation", m(vec![("chain", V::Array(vec![m(vec![("task", V::from("a"))]), m(vec![("task", V::from(5))])]))]))); show("chain_idx", m(b));
    let mut b = base(); b.push(("continuation", m(vec![("chord", m(vec![("chord_id", V::from("0192f0c4-1a2b-7c3d-8e4f-0123456789ab")), ("callback", m(vec![]))]))]))); show("chord_cb", m(b));
    let mut b = base(); b.push(("meta", m(vec![("k", V::from(1))]))); show("meta_int", m(b));
    let mut b = base(); b.remove(3); show("no_input", m(b));
    let mut b = base(); b.remove(4); show("no_created", m(b));
    let mut b = base(); b.remove(0); show("no_v", m(b));
    let mut b = base(); b[0] = ("v", V::from(2)); b.remove(2); show("v2_notask", m(b));
    let mut b = base(); b[0] = ("v", V::from("1")); show("v_str", m(b));
    show("str_top", V::from("hello"));
    show("array_top", V::Array(vec![V::from(1), V::from("0192f0c4-1a2b-7c3d-8e4f-0123456789ab"), V::from("ping"), V::Nil, V::from(0), ]));
    let mut b = base(); b[3] = ("input", V::Ext(5, vec![1,2,3])); show("ext_input", m(b));
    let mut b = base(); b.push(("created_at", V::from(2))); show("dup_created", m(b));
    let mut mp: Vec<(V,V)> = base().into_iter().map(|(k,v)|(V::from(k),v)).collect(); mp.push((V::from(5), V::from(1))); show("int_key", V::Map(mp));
    let mut b = base(); b.push(("workflow", m(vec![("workflow_id", V::from("0192f0c4-1a2b-7c3d-8e4f-0123456789ab"))]))); show("wf_missing_node", m(b));
    println!("{:?}", celeriac_schema::decode(&[]));
    println!("{:?}", celeriac_schema::decode(&[0xdd, 0xff,0xff,0xff,0xff, 0,0,0,0,0]));
}
