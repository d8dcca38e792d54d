//! `tf.train.Example` codec.
//!
//! ```text
//! Example  { Features features = 1; }
//! Features { map<string, Feature> feature = 1; }
//! Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
//!                         Int64List int64_list = 3; } }
//! BytesList { repeated bytes value = 1; }
//! FloatList { repeated float value = 1 [packed]; }
//! Int64List { repeated int64 value = 1 [packed]; }
//! ```
//!
//! Decoding follows protobuf's merge semantics: packed and unpacked values are both
//! accepted, unknown fields are skipped, a repeated sub-message merges into the earlier
//! one, a oneof switches to the last kind seen, and a duplicated map key keeps the last
//! entry. A field with a known number but an unexpected wire type is skipped as unknown,
//! as protobuf does.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::wire::{
    for_each_len_field, len_field_size, put_len_header, put_varint, varint_len, Cursor, Out,
    WT_FIXED32, WT_LEN, WT_VARINT,
};

/// One feature's values. Bytes borrow from the decoded record where they can.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Feature<'a> {
    /// `bytes_list`.
    Bytes(Vec<Cow<'a, [u8]>>),
    /// `float_list`.
    Float(Cow<'a, [f32]>),
    /// `int64_list`.
    Int64(Cow<'a, [i64]>),
    /// A Feature message with no kind set.
    #[default]
    Empty,
}

impl Feature<'_> {
    /// Number of values in the feature (0 for `Empty`).
    pub fn len(&self) -> usize {
        match self {
            Feature::Bytes(v) => v.len(),
            Feature::Float(v) => v.len(),
            Feature::Int64(v) => v.len(),
            Feature::Empty => 0,
        }
    }

    /// True when the feature has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the serialized list message (e.g. `Int64List`), without tag or length.
    fn list_size(&self) -> usize {
        match self {
            Feature::Bytes(v) => v.iter().map(|b| len_field_size(b.len())).sum(),
            Feature::Float(v) if v.is_empty() => 0,
            Feature::Float(v) => len_field_size(4 * v.len()),
            Feature::Int64(v) if v.is_empty() => 0,
            Feature::Int64(v) => len_field_size(packed_int64_size(v)),
            Feature::Empty => 0,
        }
    }

    /// Size of the serialized `Feature` message, without tag or length.
    pub(crate) fn message_size(&self) -> usize {
        match self {
            Feature::Empty => 0,
            _ => len_field_size(self.list_size()),
        }
    }

    /// Appends the serialized `Feature` message (without its own tag or length).
    pub(crate) fn write_message(&self, out: &mut impl Out) {
        self.write_message_sized(out, self.list_size());
    }

    /// [`write_message`](Feature::write_message) with the list size already known.
    fn write_message_sized(&self, out: &mut impl Out, list_size: usize) {
        match self {
            Feature::Empty => {}
            Feature::Bytes(values) => {
                put_len_header(out, 1, list_size);
                for v in values {
                    put_len_header(out, 1, v.len());
                    out.put(v);
                }
            }
            Feature::Float(values) => {
                put_len_header(out, 2, list_size);
                if !values.is_empty() {
                    put_len_header(out, 1, 4 * values.len());
                    for v in values.iter() {
                        out.put(&v.to_le_bytes());
                    }
                }
            }
            Feature::Int64(values) => {
                put_len_header(out, 3, list_size);
                if !values.is_empty() {
                    put_len_header(out, 1, packed_int64_size(values));
                    for &v in values.iter() {
                        put_varint(out, v as u64);
                    }
                }
            }
        }
    }
}

/// Protobuf merge of two `Feature` messages: a kind-less `from` changes nothing, the same
/// kind appends its values, another kind (even an empty list of it) replaces.
pub(crate) fn merge<'a>(into: &mut Feature<'a>, from: Feature<'a>) {
    match (into, from) {
        (_, Feature::Empty) => {}
        (Feature::Bytes(a), Feature::Bytes(b)) => a.extend(b),
        (Feature::Float(a), Feature::Float(b)) => a.to_mut().extend_from_slice(&b),
        (Feature::Int64(a), Feature::Int64(b)) => a.to_mut().extend_from_slice(&b),
        (slot, other) => *slot = other,
    }
}

fn packed_int64_size(values: &[i64]) -> usize {
    values.iter().map(|&v| varint_len(v as u64)).sum()
}

/// Parses one `Feature` message.
pub(crate) fn parse_feature<'a>(
    buf: &'a [u8],
    base: usize,
    message: &'static str,
) -> Result<Feature<'a>> {
    let mut c = Cursor::new(buf, base, message);
    let mut feature = Feature::Empty;
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        if wt != WT_LEN || !(1..=3).contains(&field) {
            c.skip(field, wt)?;
            continue;
        }
        let (payload, at) = c.len_delimited()?;
        let parsed = match field {
            1 => Feature::Bytes(parse_bytes_list(payload, at, message)?),
            2 => Feature::Float(Cow::Owned(parse_float_list(payload, at, message)?)),
            _ => Feature::Int64(Cow::Owned(parse_int64_list(payload, at, message)?)),
        };
        merge(&mut feature, parsed);
    }
    Ok(feature)
}

fn parse_bytes_list<'a>(
    buf: &'a [u8],
    base: usize,
    message: &'static str,
) -> Result<Vec<Cow<'a, [u8]>>> {
    let mut c = Cursor::new(buf, base, message);
    let mut out = Vec::new();
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        if field == 1 && wt == WT_LEN {
            out.push(Cow::Borrowed(c.len_delimited()?.0));
        } else {
            c.skip(field, wt)?;
        }
    }
    Ok(out)
}

fn parse_float_list(buf: &[u8], base: usize, message: &'static str) -> Result<Vec<f32>> {
    let mut c = Cursor::new(buf, base, message);
    let mut out = Vec::new();
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        match (field, wt) {
            (1, WT_LEN) => {
                let (payload, _) = c.len_delimited()?;
                if payload.len() % 4 != 0 {
                    return Err(c.error("packed float list length is not a multiple of 4"));
                }
                out.reserve(payload.len() / 4);
                out.extend(
                    payload
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            (1, WT_FIXED32) => out.push(f32::from_le_bytes(c.fixed32()?)),
            _ => c.skip(field, wt)?,
        }
    }
    Ok(out)
}

fn parse_int64_list(buf: &[u8], base: usize, message: &'static str) -> Result<Vec<i64>> {
    let mut c = Cursor::new(buf, base, message);
    let mut out = Vec::new();
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        match (field, wt) {
            (1, WT_LEN) => {
                let (payload, at) = c.len_delimited()?;
                let mut p = Cursor::new(payload, at, message);
                // Each varint takes at least one byte, so this bound is safe.
                out.reserve(payload.len().min(1 << 16));
                while !p.at_end() {
                    out.push(p.varint()? as i64);
                }
            }
            (1, WT_VARINT) => out.push(c.varint()? as i64),
            _ => c.skip(field, wt)?,
        }
    }
    Ok(out)
}

/// How many map entries a serialized Example or SequenceExample holds (those of its
/// `features` / `context`, plus those of its `feature_lists`), counted without decoding
/// a value: a bound a caller checks before turning a record into one object per feature.
/// Counting stops at the first malformed field (decoding reports it).
pub fn count_features(buf: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut c = Cursor::new(buf, 0, "tf.train.Example");
    while !c.at_end() {
        let Ok((field, wt)) = c.tag() else { break };
        if wt != WT_LEN || !(1..=2).contains(&field) {
            if c.skip(field, wt).is_err() {
                break;
            }
            continue;
        }
        let Ok((map, at)) = c.len_delimited() else {
            break;
        };
        let mut m = Cursor::new(map, at, "tf.train.Example");
        while !m.at_end() {
            let Ok((field, wt)) = m.tag() else { break };
            if field == 1 && wt == WT_LEN {
                n += 1;
            }
            if m.skip(field, wt).is_err() {
                break;
            }
        }
    }
    n
}

/// Features keyed by name, in first-seen order, with protobuf's last-wins on duplicates.
pub type Features<'a> = Vec<(Cow<'a, [u8]>, Feature<'a>)>;

/// Collects map entries and keeps the last value of a duplicated key. Small maps (the
/// common case) are searched linearly; a hash index is built only past `LINEAR_MAX`.
pub(crate) struct MapBuilder<'a, V> {
    entries: Vec<(Cow<'a, [u8]>, V)>,
    index: Option<HashMap<Cow<'a, [u8]>, usize>>,
}

const LINEAR_MAX: usize = 32;

impl<'a, V> MapBuilder<'a, V> {
    pub(crate) fn new() -> Self {
        MapBuilder {
            entries: Vec::new(),
            index: None,
        }
    }

    pub(crate) fn insert(&mut self, key: Cow<'a, [u8]>, value: V) {
        let found = match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.entries.iter().position(|(k, _)| *k == key),
        };
        if let Some(i) = found {
            self.entries[i].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.entries.len());
        } else if self.entries.len() >= LINEAR_MAX {
            let mut index: HashMap<Cow<'a, [u8]>, usize> = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
            index.insert(key.clone(), self.entries.len());
            self.index = Some(index);
        }
        self.entries.push((key, value));
    }

    pub(crate) fn finish(self) -> Vec<(Cow<'a, [u8]>, V)> {
        self.entries
    }
}

/// Parses a `Features` message (a map of Feature) into `map`.
pub(crate) fn parse_features<'a>(
    buf: &'a [u8],
    base: usize,
    message: &'static str,
    map: &mut MapBuilder<'a, Feature<'a>>,
) -> Result<()> {
    for_each_len_field(buf, base, message, 1, |entry, at| {
        let (key, value) =
            parse_map_entry(entry, at, message, |buf, base, value: &mut Feature<'a>| {
                let parsed = parse_feature(buf, base, message)?;
                merge(value, parsed);
                Ok(())
            })?;
        map.insert(key, value.unwrap_or(Feature::Empty));
        Ok(())
    })
}

/// Parses a map entry `{ string key = 1; V value = 2; }`; a repeated value field merges
/// into the earlier one through `merge_value`.
pub(crate) fn parse_map_entry<'a, V: Default>(
    buf: &'a [u8],
    base: usize,
    message: &'static str,
    mut merge_value: impl FnMut(&'a [u8], usize, &mut V) -> Result<()>,
) -> Result<(Cow<'a, [u8]>, Option<V>)> {
    let mut c = Cursor::new(buf, base, message);
    let mut key: &[u8] = b"";
    let mut value: Option<V> = None;
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        match (field, wt) {
            (1, WT_LEN) => {
                let at = c.position();
                key = c.len_delimited()?.0;
                // protobuf checks every occurrence of a string field, not only the last.
                if std::str::from_utf8(key).is_err() {
                    return Err(Error::Decode {
                        message,
                        what: "map key is not valid UTF-8",
                        position: at,
                    });
                }
            }
            (2, WT_LEN) => {
                let (payload, at) = c.len_delimited()?;
                merge_value(payload, at, value.get_or_insert_with(V::default))?;
            }
            _ => c.skip(field, wt)?,
        }
    }
    Ok((Cow::Borrowed(key), value))
}

/// Decodes a serialized `tf.train.Example`.
pub fn decode_example(buf: &[u8]) -> Result<Features<'_>> {
    const MSG: &str = "tf.train.Example";
    let mut map = MapBuilder::new();
    for_each_len_field(buf, 0, MSG, 1, |payload, at| {
        parse_features(payload, at, MSG, &mut map)
    })?;
    Ok(map.finish())
}

/// Size of a serialized `Features` message holding `features`.
pub(crate) fn features_size<K: AsRef<[u8]>>(features: &[(K, Feature<'_>)]) -> usize {
    features
        .iter()
        .map(|(k, f)| len_field_size(entry_size(k.as_ref(), f)))
        .sum()
}

fn entry_size(key: &[u8], feature: &Feature<'_>) -> usize {
    len_field_size(key.len()) + len_field_size(feature.message_size())
}

/// Appends a serialized `Features` message body (the map entries).
pub(crate) fn write_features<K: AsRef<[u8]>>(out: &mut impl Out, features: &[(K, Feature<'_>)]) {
    for (key, feature) in features {
        let key = key.as_ref();
        // Sizes computed once per feature here (a list's size walks its values).
        let list_size = feature.list_size();
        let message_size = match feature {
            Feature::Empty => 0,
            _ => len_field_size(list_size),
        };
        put_len_header(
            out,
            1,
            len_field_size(key.len()) + len_field_size(message_size),
        );
        put_len_header(out, 1, key.len());
        out.put(key);
        put_len_header(out, 2, message_size);
        feature.write_message_sized(out, list_size);
    }
}

/// Appends a serialized `tf.train.Example` holding `features` (in the order given) to `out`
/// ([`example_size`] bytes).
pub fn encode_example<K: AsRef<[u8]>>(features: &[(K, Feature<'_>)], out: &mut impl Out) {
    let size = features_size(features);
    out.reserve(len_field_size(size));
    put_len_header(out, 1, size);
    write_features(out, features);
}

/// Bytes of the `tf.train.Example` that [`encode_example`] writes for `features`.
pub fn example_size<K: AsRef<[u8]>>(features: &[(K, Feature<'_>)]) -> usize {
    len_field_size(features_size(features))
}

/// `features` encoded as one `Example`, in a new buffer (for tests across the crate).
#[cfg(test)]
pub(crate) fn example_bytes(features: &[(&str, Feature<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_example(features, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::example_bytes as enc;
    use super::*;

    #[test]
    fn golden_single_bytes_feature() {
        let out = enc(&[("key", Feature::Bytes(vec![Cow::Borrowed(b"value")]))]);
        assert_eq!(out, b"\n\x12\n\x10\n\x03key\x12\t\n\x07\n\x05value");
    }

    #[test]
    fn encoding_into_a_slice_of_the_computed_size_equals_the_vec() {
        let long = vec![7u8; 300];
        let sets: Vec<Vec<(&str, Feature<'_>)>> = vec![
            vec![],
            vec![("e", Feature::Empty)],
            vec![
                (
                    "b",
                    Feature::Bytes(vec![Cow::Borrowed(&long[..]), Cow::Borrowed(b"")]),
                ),
                ("f", Feature::Float(Cow::Owned(vec![1.5, -0.0, f32::NAN]))),
                ("i", Feature::Int64(Cow::Owned(vec![0, -1, i64::MAX, 300]))),
                ("empty", Feature::Int64(Cow::Owned(vec![]))),
            ],
        ];
        for features in sets {
            let want = enc(&features);
            assert_eq!(example_size(&features), want.len());
            let mut buf = vec![0xAAu8; want.len()];
            let mut out = crate::wire::SliceOut::new(&mut buf);
            encode_example(&features, &mut out);
            assert_eq!(out.written(), want.len());
            assert_eq!(buf, want);
        }
    }

    #[test]
    fn empty_example_has_empty_features() {
        assert_eq!(enc(&[]), b"\n\x00");
        assert!(decode_example(b"").unwrap().is_empty());
    }

    #[test]
    fn roundtrip_all_kinds() {
        let f = vec![
            (
                "b",
                Feature::Bytes(vec![Cow::Borrowed(&b"x\0y"[..]), Cow::Borrowed(&b""[..])]),
            ),
            ("f", Feature::Float(Cow::Owned(vec![1.5, f32::NAN, -0.0]))),
            (
                "i",
                Feature::Int64(Cow::Owned(vec![i64::MIN, -1, 0, i64::MAX])),
            ),
            ("e", Feature::Empty),
            ("ei", Feature::Int64(Cow::Owned(vec![]))),
        ];
        let bytes = enc(&f);
        let back = decode_example(&bytes).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back[0].1, f[0].1);
        match &back[1].1 {
            Feature::Float(v) => {
                assert_eq!(v[0], 1.5);
                assert!(v[1].is_nan());
                assert!(v[2] == 0.0 && v[2].is_sign_negative());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(back[2].1, f[2].1);
        assert_eq!(back[3].1, Feature::Empty);
        assert_eq!(back[4].1, Feature::Int64(Cow::Owned(vec![])));
    }

    #[test]
    fn unpacked_and_duplicates() {
        // Feature "a": int64_list with unpacked 5 then packed [6, 7].
        let int_list = [0x08, 0x05, 0x0a, 0x02, 0x06, 0x07];
        let mut feature = vec![0x1a, int_list.len() as u8];
        feature.extend_from_slice(&int_list);
        let mut entry = vec![0x0a, 0x01, b'a', 0x12, feature.len() as u8];
        entry.extend_from_slice(&feature);
        // The same key again with a float value: last wins.
        let float_feature = [0x12, 0x05, 0x0d, 0x00, 0x00, 0x80, 0x3f];
        let mut entry2 = vec![0x0a, 0x01, b'a', 0x12, float_feature.len() as u8];
        entry2.extend_from_slice(&float_feature);
        let mut features = vec![0x0a, entry.len() as u8];
        features.extend_from_slice(&entry);
        let mut first = vec![0x0a, features.len() as u8];
        first.extend_from_slice(&features);
        let decoded = decode_example(&first).unwrap();
        assert_eq!(decoded[0].1, Feature::Int64(Cow::Owned(vec![5, 6, 7])));
        features.extend_from_slice(&[0x0a, entry2.len() as u8]);
        features.extend_from_slice(&entry2);
        // An unknown varint field 7 at the top level is skipped.
        let mut msg = vec![0x38, 0x01, 0x0a, features.len() as u8];
        msg.extend_from_slice(&features);
        let decoded = decode_example(&msg).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].1, Feature::Float(Cow::Owned(vec![1.0])));
    }

    #[test]
    fn length_past_end_is_an_error() {
        assert!(decode_example(&[0x0a, 0x05, 0x0a]).is_err());
        assert!(decode_example(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
