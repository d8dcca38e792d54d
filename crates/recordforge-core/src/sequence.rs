//! `tf.train.SequenceExample` codec.
//!
//! ```text
//! SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }
//! FeatureLists    { map<string, FeatureList> feature_list = 1; }
//! FeatureList     { repeated Feature feature = 1; }
//! ```

use std::borrow::Cow;

use crate::error::Result;
use crate::example::{
    features_size, parse_feature, parse_features, parse_map_entry, write_features, Feature,
    Features, MapBuilder,
};
use crate::wire::{len_field_size, put_len_header, Cursor, WT_LEN};

const MSG: &str = "tf.train.SequenceExample";

/// A decoded SequenceExample: context features and per-step feature lists, each in
/// first-seen order with protobuf's last-wins on duplicated keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SequenceExample<'a> {
    pub context: Features<'a>,
    pub feature_lists: Vec<(Cow<'a, [u8]>, Vec<Feature<'a>>)>,
}

fn parse_feature_list<'a>(buf: &'a [u8], base: usize, steps: &mut Vec<Feature<'a>>) -> Result<()> {
    let mut c = Cursor::new(buf, base, MSG);
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        if field == 1 && wt == WT_LEN {
            let (payload, at) = c.len_delimited()?;
            steps.push(parse_feature(payload, at, MSG)?);
        } else {
            c.skip(field, wt)?;
        }
    }
    Ok(())
}

fn parse_feature_lists<'a>(
    buf: &'a [u8],
    base: usize,
    map: &mut MapBuilder<'a, Vec<Feature<'a>>>,
) -> Result<()> {
    let mut c = Cursor::new(buf, base, MSG);
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        if field != 1 || wt != WT_LEN {
            c.skip(field, wt)?;
            continue;
        }
        let (entry, at) = c.len_delimited()?;
        let (key, steps) =
            parse_map_entry(entry, at, MSG, |buf, base, steps: &mut Vec<Feature<'a>>| {
                parse_feature_list(buf, base, steps)
            })?;
        map.insert(key, steps.unwrap_or_default());
    }
    Ok(())
}

/// Decodes a serialized `tf.train.SequenceExample`.
pub fn decode_sequence_example(buf: &[u8]) -> Result<SequenceExample<'_>> {
    let mut c = Cursor::new(buf, 0, MSG);
    let mut context = MapBuilder::new();
    let mut lists = MapBuilder::new();
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        match (field, wt) {
            (1, WT_LEN) => {
                let (payload, at) = c.len_delimited()?;
                parse_features(payload, at, MSG, &mut context)?;
            }
            (2, WT_LEN) => {
                let (payload, at) = c.len_delimited()?;
                parse_feature_lists(payload, at, &mut lists)?;
            }
            _ => c.skip(field, wt)?,
        }
    }
    Ok(SequenceExample {
        context: context.finish(),
        feature_lists: lists.finish(),
    })
}

fn feature_list_size(steps: &[Feature<'_>]) -> usize {
    steps.iter().map(|f| len_field_size(f.message_size())).sum()
}

fn list_entry_size(key: &[u8], steps: &[Feature<'_>]) -> usize {
    len_field_size(key.len()) + len_field_size(feature_list_size(steps))
}

/// Appends a serialized `tf.train.SequenceExample` to `out`. Empty context or feature
/// lists are left out, as protobuf does for unset message fields.
pub fn encode_sequence_example<K: AsRef<[u8]>, L: AsRef<[u8]>>(
    context: &[(K, Feature<'_>)],
    feature_lists: &[(L, Vec<Feature<'_>>)],
    out: &mut Vec<u8>,
) {
    if !context.is_empty() {
        put_len_header(out, 1, features_size(context));
        write_features(out, context);
    }
    if !feature_lists.is_empty() {
        let size: usize = feature_lists
            .iter()
            .map(|(k, steps)| len_field_size(list_entry_size(k.as_ref(), steps)))
            .sum();
        put_len_header(out, 2, size);
        for (key, steps) in feature_lists {
            let key = key.as_ref();
            put_len_header(out, 1, list_entry_size(key, steps));
            put_len_header(out, 1, key.len());
            out.extend_from_slice(key);
            put_len_header(out, 2, feature_list_size(steps));
            for step in steps {
                put_len_header(out, 1, step.message_size());
                step.write_message(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let context = vec![("id", Feature::Int64(Cow::Owned(vec![7])))];
        let lists = vec![(
            "tokens",
            vec![
                Feature::Bytes(vec![Cow::Borrowed(&b"a"[..])]),
                Feature::Bytes(vec![]),
                Feature::Empty,
            ],
        )];
        let mut out = Vec::new();
        encode_sequence_example(&context, &lists, &mut out);
        let back = decode_sequence_example(&out).unwrap();
        assert_eq!(back.context[0].1, context[0].1);
        assert_eq!(back.feature_lists[0].0.as_ref(), b"tokens");
        assert_eq!(back.feature_lists[0].1, lists[0].1);
    }

    #[test]
    fn empty() {
        let mut out = Vec::new();
        encode_sequence_example::<&str, &str>(&[], &[], &mut out);
        assert!(out.is_empty());
        let back = decode_sequence_example(&out).unwrap();
        assert!(back.context.is_empty() && back.feature_lists.is_empty());
    }
}
