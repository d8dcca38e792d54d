//! Schema inference from a bounded sample of records: each context feature's kind and
//! number of values, summarised in Rust as the records are read, so that no value of a
//! sampled record becomes a Python object. The rest of the records is checked against
//! the schema inferred from the sample as batches are read (a fixed width or a kind that
//! a record disagrees with is an [`Error::Mismatch`] naming it).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::example::Feature;
use crate::framing::FileRecords;
use crate::sequence::decode_sequence_example;

/// A value kind of a feature, as the schema names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Bytes,
    Float,
    Int64,
}

impl SampleKind {
    pub fn name(self) -> &'static str {
        match self {
            SampleKind::Bytes => "bytes",
            SampleKind::Float => "float32",
            SampleKind::Int64 => "int64",
        }
    }
}

/// What the sample says of one feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSample {
    pub name: String,
    /// `None` while only kind-less features or empty float lists were seen (which is
    /// what `decode_example` gives for a kind-less feature: it says nothing of a kind).
    pub kind: Option<SampleKind>,
    /// The number of values, while every record holding the feature had the same.
    pub length: Option<u64>,
    /// Whether records held different numbers of values.
    pub varies: bool,
    /// Records of the sample holding the feature.
    pub present: u64,
    /// Its values in all of them, and the sum of each record's count times the record's
    /// number in the sample (from 1): what a reader that decodes the same records must
    /// find too (a check of one decoder against another, per record).
    pub values: u64,
    pub weighted: u64,
}

/// The features of the first records of a stream, up to `max_records` records or
/// `max_bytes` payload bytes (whichever comes first; at least one record).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub features: Vec<FeatureSample>,
    index: HashMap<String, usize>,
    /// Records summarised.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Whether any record had feature lists (a `tf.train.SequenceExample`).
    pub lists: bool,
    max_records: u64,
    max_bytes: u64,
}

impl Sample {
    pub fn new(max_records: u64, max_bytes: u64) -> Self {
        Sample {
            max_records,
            max_bytes,
            ..Sample::default()
        }
    }

    /// Whether the sample holds all it was asked for.
    pub fn full(&self) -> bool {
        self.records >= self.max_records || (self.records > 0 && self.bytes >= self.max_bytes)
    }

    /// Adds one serialized Example or SequenceExample (its context features). A record
    /// that does not parse is an `Error::Decode`; a feature whose kind differs from its
    /// kind in earlier records an `Error::Mismatch`. Nothing is added on error.
    pub fn add(&mut self, record: &[u8]) -> Result<()> {
        let parsed = decode_sequence_example(record)?;
        // (feature index, kind, values); names new to the sample are added after the
        // whole record checked out (a map's keys are unique: `decode_*` keeps the last).
        let mut seen = Vec::with_capacity(parsed.context.len());
        let mut new_names = Vec::new();
        for (key, feature) in &parsed.context {
            let name = String::from_utf8_lossy(key);
            let kind = match feature {
                Feature::Bytes(_) => Some(SampleKind::Bytes),
                Feature::Int64(_) => Some(SampleKind::Int64),
                Feature::Float(v) if !v.is_empty() => Some(SampleKind::Float),
                Feature::Float(_) | Feature::Empty => None,
            };
            let at = match self.index.get(name.as_ref()) {
                Some(&at) => {
                    if let (Some(have), Some(kind)) = (self.features[at].kind, kind) {
                        if have != kind {
                            return Err(Error::Mismatch(format!(
                                "feature {name:?} is {} in one record, {} in another",
                                have.name(),
                                kind.name()
                            )));
                        }
                    }
                    at
                }
                None => {
                    new_names.push(name.into_owned());
                    self.features.len() + new_names.len() - 1
                }
            };
            seen.push((at, kind, feature.len() as u64));
        }
        for name in new_names {
            self.index.insert(name.clone(), self.features.len());
            self.features.push(FeatureSample {
                name,
                kind: None,
                length: None,
                varies: false,
                present: 0,
                values: 0,
                weighted: 0,
            });
        }
        for (at, kind, n) in seen {
            let f = &mut self.features[at];
            f.kind = f.kind.or(kind);
            if f.present == 0 {
                f.length = Some(n);
            } else if f.length != Some(n) {
                f.varies = true;
            }
            f.present += 1;
            f.values += n;
            f.weighted = f.weighted.wrapping_add(n.wrapping_mul(self.records + 1));
        }
        self.lists |= !parsed.feature_lists.is_empty();
        self.records += 1;
        self.bytes += record.len() as u64;
        Ok(())
    }
}

/// Where [`sample_file`] stopped on a record that is not right: its number in the file,
/// its offset, and why (a framing error has its own offset and no number).
#[derive(Debug)]
pub struct SampleError {
    pub index: Option<u64>,
    pub offset: Option<u64>,
    pub error: Error,
}

/// Adds the first records of the file at `path` to `sample` until it is full or the file
/// ends: memory-mapped when uncompressed (only the sampled records' pages are read, no
/// populate), streamed through the decoder otherwise. Both CRCs of every sampled record
/// are checked; a record over `max_record` bytes is damage.
pub fn sample_file(
    path: &Path,
    sample: &mut Sample,
    max_record: u64,
) -> std::result::Result<(), SampleError> {
    let framing = |error| SampleError {
        index: None,
        offset: None,
        error,
    };
    let mut records = FileRecords::open(path, None, true, max_record).map_err(framing)?;
    let mut scratch = Vec::new();
    let mut index = 0u64;
    while !sample.full() {
        let Some((offset, range)) = records.next_record(&mut scratch).map_err(framing)? else {
            break;
        };
        let payload = records.payload(&scratch, range);
        sample.add(payload).map_err(|error| SampleError {
            index: Some(index),
            offset: Some(offset),
            error,
        })?;
        index += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::encode_example;
    use std::borrow::Cow;

    fn record(features: &[(&str, Feature<'_>)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_example(features, &mut out);
        out
    }

    fn ints(v: &[i64]) -> Feature<'static> {
        Feature::Int64(Cow::Owned(v.to_vec()))
    }

    #[test]
    fn kinds_lengths_and_presence() {
        let mut s = Sample::new(10, 1 << 20);
        s.add(&record(&[("a", ints(&[1, 2])), ("e", Feature::Empty)]))
            .unwrap();
        s.add(&record(&[
            ("a", ints(&[3, 4])),
            ("b", Feature::Bytes(vec![Cow::Borrowed(b"x")])),
            ("e", Feature::Float(Cow::Owned(vec![]))),
        ]))
        .unwrap();
        s.add(&record(&[
            ("b", Feature::Bytes(vec![])),
            ("a", ints(&[5, 6])),
        ]))
        .unwrap();
        let names: Vec<&str> = s.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "e", "b"]);
        let a = &s.features[0];
        assert_eq!(
            (a.kind, a.length, a.varies, a.present),
            (Some(SampleKind::Int64), Some(2), false, 3)
        );
        let e = &s.features[1];
        assert_eq!(
            (e.kind, e.length, e.varies, e.present),
            (None, Some(0), false, 2)
        );
        let b = &s.features[2];
        assert_eq!(
            (b.kind, b.varies, b.present),
            (Some(SampleKind::Bytes), true, 2)
        );
        assert_eq!((s.records, s.lists), (3, false));
    }

    #[test]
    fn a_kind_that_changes_is_a_mismatch_and_adds_nothing() {
        let mut s = Sample::new(10, 1 << 20);
        s.add(&record(&[("a", ints(&[1]))])).unwrap();
        let bad = record(&[
            ("new", ints(&[1])),
            ("a", Feature::Float(Cow::Owned(vec![1.0]))),
        ]);
        let err = s.add(&bad).unwrap_err();
        assert!(matches!(&err, Error::Mismatch(m) if m.contains("int64 in one record, float32")));
        assert_eq!((s.records, s.features.len()), (1, 1));
        // The name the failed record brought is gone: a later record adds it afresh.
        s.add(&record(&[("new", ints(&[7, 8]))])).unwrap();
        assert_eq!(s.features[1].name, "new");
        assert_eq!(s.features[1].length, Some(2));
    }

    #[test]
    fn full_by_records_or_bytes() {
        let r = record(&[("a", ints(&[1]))]);
        let mut s = Sample::new(2, 1 << 20);
        s.add(&r).unwrap();
        assert!(!s.full());
        s.add(&r).unwrap();
        assert!(s.full());
        let mut s = Sample::new(100, 1);
        assert!(!s.full(), "at least one record");
        s.add(&r).unwrap();
        assert!(s.full());
    }

    #[test]
    fn not_an_example_is_a_decode_error() {
        let mut s = Sample::new(10, 1 << 20);
        assert!(matches!(s.add(&[0x0a, 0x05, 1]), Err(Error::Decode { .. })));
        assert_eq!(s.records, 0);
    }
}
