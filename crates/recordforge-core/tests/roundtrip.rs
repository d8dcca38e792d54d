//! Property-based round trips of the core: framing (all compressions), Example and
//! SequenceExample codecs, and "never panic" on arbitrary bytes.

use std::borrow::Cow;

use proptest::prelude::*;
use recordforge_core::framing::{stream_records, SliceRecords};
use recordforge_core::{
    decode_example, decode_sequence_example, encode_example, encode_sequence_example, Compression,
    Feature, RecordWriter,
};

fn feature() -> impl Strategy<Value = Feature<'static>> {
    prop_oneof![
        Just(Feature::Empty),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..5)
            .prop_map(|v| Feature::Bytes(v.into_iter().map(Cow::Owned).collect())),
        prop::collection::vec(any::<f32>(), 0..10).prop_map(|v| Feature::Float(Cow::Owned(v))),
        prop::collection::vec(any::<i64>(), 0..10).prop_map(|v| Feature::Int64(Cow::Owned(v))),
    ]
}

fn features() -> impl Strategy<Value = Vec<(String, Feature<'static>)>> {
    // Unique names: a map cannot hold a name twice.
    prop::collection::btree_map(".{0,8}", feature(), 0..8).prop_map(|m| m.into_iter().collect())
}

/// Equality that treats NaN floats as equal when their bits are equal.
fn same(a: &Feature<'_>, b: &Feature<'_>) -> bool {
    match (a, b) {
        (Feature::Float(x), Feature::Float(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        }
        _ => a == b,
    }
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Zlib)
    ]
}

proptest! {
    #[test]
    fn example_roundtrip(f in features()) {
        let mut out = Vec::new();
        encode_example(&f, &mut out);
        let back = decode_example(&out).unwrap();
        prop_assert_eq!(back.len(), f.len());
        for ((k, v), (bk, bv)) in f.iter().zip(back.iter()) {
            prop_assert_eq!(k.as_bytes(), bk.as_ref());
            prop_assert!(same(v, bv), "{:?} != {:?}", v, bv);
        }
    }

    #[test]
    fn sequence_example_roundtrip(
        context in features(),
        lists in prop::collection::btree_map(".{0,6}", prop::collection::vec(feature(), 0..4), 0..4),
    ) {
        let lists: Vec<(String, Vec<Feature<'static>>)> = lists.into_iter().collect();
        let mut out = Vec::new();
        encode_sequence_example(&context, &lists, &mut out);
        let back = decode_sequence_example(&out).unwrap();
        prop_assert_eq!(back.context.len(), context.len());
        prop_assert_eq!(back.feature_lists.len(), lists.len());
        for ((k, steps), (bk, bsteps)) in lists.iter().zip(back.feature_lists.iter()) {
            prop_assert_eq!(k.as_bytes(), bk.as_ref());
            prop_assert_eq!(steps.len(), bsteps.len());
            for (s, b) in steps.iter().zip(bsteps.iter()) {
                prop_assert!(same(s, b));
            }
        }
    }

    #[test]
    fn framing_roundtrip(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        c in compression(),
    ) {
        let mut w = RecordWriter::new(Vec::new(), c).unwrap();
        for r in &records {
            w.write_record(r).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut reader = stream_records(std::io::Cursor::new(bytes.clone()), None, true, 1 << 30).unwrap();
        let mut buf = Vec::new();
        let mut back = Vec::new();
        while reader.read_into(&mut buf).unwrap().is_some() {
            back.push(buf.clone());
        }
        prop_assert_eq!(&back, &records);
        if c == Compression::None {
            let sliced: Vec<Vec<u8>> = SliceRecords::new(&bytes, true).map(|r| r.unwrap().1.to_vec()).collect();
            prop_assert_eq!(&sliced, &records);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_example(&data);
        let _ = decode_sequence_example(&data);
        let _: Vec<_> = SliceRecords::new(&data, true).collect();
        for c in [None, Some(Compression::Gzip), Some(Compression::Zlib)] {
            let mut r = stream_records(std::io::Cursor::new(data.clone()), c, true, 1 << 30).unwrap();
            let mut buf = Vec::new();
            while let Ok(Some(_)) = r.read_into(&mut buf) {}
        }
    }
}
