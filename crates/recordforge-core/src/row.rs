//! One record at a time (random access): which file holds record `i`
//! ([`RowIndex`]), and the columnar decoder of [`crate::batch`] with its buffers and key
//! lookup kept from one record to the next ([`RecordDecoder`]), so that decoding a
//! record allocates nothing once the first one is done.

use crate::batch::{decode_row, empty_columns, wanted_of, DecodedColumn, Finder, Kind, Wanted};
use crate::error::{Error, Result};

/// The records of a list of files numbered end to end; with `every = (index, count)`
/// only every `count`-th of them, from the `index`-th (a shard of the records).
#[derive(Debug, Clone)]
pub struct RowIndex {
    /// Number of the first record of each file, then the total.
    starts: Vec<u64>,
    every: Option<(u64, u64)>,
    len: u64,
}

impl RowIndex {
    /// Files holding `counts` records.
    pub fn new(counts: &[u64], every: Option<(u64, u64)>) -> Result<Self> {
        let mut starts = Vec::with_capacity(counts.len() + 1);
        let mut total = 0u64;
        starts.push(0);
        for &c in counts {
            total += c;
            starts.push(total);
        }
        let len = match every {
            None => total,
            Some((index, count)) if index < count => total.saturating_sub(index).div_ceil(count),
            Some((index, count)) => {
                return Err(Error::InvalidArgument(format!(
                    "every: index {index} is not below count {count}"
                )))
            }
        };
        Ok(RowIndex { starts, every, len })
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Record `i` (negative: from the end) as `(file, record of that file)`; `None` when
    /// out of range.
    pub fn locate(&self, i: i64) -> Option<(usize, u64)> {
        let n = i64::try_from(self.len).ok()?;
        if !(-n..n).contains(&i) {
            return None;
        }
        let at = i.rem_euclid(n) as u64;
        let at = match self.every {
            Some((index, count)) => index + at * count,
            None => at,
        };
        // The last file that starts at or before `at` (files may be empty).
        let k = self.starts.partition_point(|&s| s <= at) - 1;
        Some((k, at - self.starts[k]))
    }
}

/// Decodes records one at a time into the same columns, each holding the last record's
/// row: bytes values as [`crate::batch::Values::Spans`] into that record.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    wanted: Vec<(Box<str>, Kind, Option<usize>)>,
    finder: Finder,
    columns: Vec<DecodedColumn>,
}

impl RecordDecoder {
    pub fn new(wanted: &[Wanted<'_>]) -> Self {
        RecordDecoder {
            wanted: wanted
                .iter()
                .map(|w| (Box::from(w.name), w.kind, w.width))
                .collect(),
            finder: Finder::default(),
            columns: empty_columns(wanted, true),
        }
    }

    /// The wanted features of `record`, one column each (the same checks and errors as
    /// [`crate::batch::decode_batch_spans`]).
    pub fn decode(&mut self, record: &[u8]) -> Result<&[DecodedColumn]> {
        let wanted = wanted_of(&self.wanted);
        for column in &mut self.columns {
            column.values.truncate(0);
            column.splits.truncate(1);
        }
        decode_row(record, &wanted, &mut self.finder, &mut self.columns)?;
        Ok(&self.columns)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::batch::{decode_batch_spans, Values};
    use crate::example::{example_bytes as record, Feature};

    #[test]
    fn rows_are_found_across_empty_files_shards_and_from_the_end() {
        let index = RowIndex::new(&[2, 0, 3, 0], None).unwrap();
        assert_eq!(index.len(), 5);
        let all: Vec<_> = (0..5).map(|i| index.locate(i).unwrap()).collect();
        assert_eq!(all, [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2)]);
        assert_eq!(index.locate(-1), Some((2, 2)));
        assert_eq!(index.locate(-5), Some((0, 0)));
        assert_eq!(index.locate(5), None);
        assert_eq!(index.locate(-6), None);
        // Every 3rd record from the 2nd: records 1 and 4 of 5.
        let shard = RowIndex::new(&[2, 0, 3, 0], Some((1, 3))).unwrap();
        assert_eq!(shard.len(), 2);
        assert_eq!(shard.locate(0), Some((0, 1)));
        assert_eq!(shard.locate(1), Some((2, 2)));
        assert_eq!(shard.locate(2), None);
        assert_eq!(RowIndex::new(&[1], Some((2, 3))).unwrap().len(), 0);
        assert!(RowIndex::new(&[], None).unwrap().locate(0).is_none());
        assert!(RowIndex::new(&[1], Some((3, 3))).is_err());
    }

    #[test]
    fn each_record_equals_a_batch_of_one_in_any_key_order() {
        // More than 16 wanted features: the lookup goes through the map.
        let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        let mut wanted: Vec<Wanted<'_>> = names
            .iter()
            .map(|name| Wanted {
                name,
                kind: Kind::Int64,
                width: Some(1),
            })
            .collect();
        wanted[3].kind = Kind::Bytes;
        wanted[3].width = None;
        let mut decoder = RecordDecoder::new(&wanted);
        let mut records = Vec::new();
        for r in 0..6i64 {
            let mut features: Vec<(&str, Feature<'_>)> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        n.as_str(),
                        Feature::Int64(Cow::Owned(vec![r * 100 + i as i64])),
                    )
                })
                .collect();
            let tags = (0..r).map(|_| Cow::Borrowed(&b"xy"[..])).collect();
            features[3].1 = Feature::Bytes(tags);
            features.push(("other", Feature::Float(Cow::Owned(vec![1.0]))));
            // Records 2 and 5 hold their keys in another order.
            if r % 3 == 2 {
                features.reverse();
            }
            records.push(record(&features));
        }
        for (r, buf) in records.iter().enumerate() {
            let one = decode_batch_spans([&buf[..]], &wanted).unwrap();
            assert_eq!(decoder.decode(buf).unwrap(), &one[..], "record {r}");
        }
        assert_eq!(
            decoder.decode(&records[4]).unwrap()[19].values,
            Values::Int64(vec![419])
        );
        let missing = record(&[("f0", Feature::Int64(Cow::Owned(vec![1])))]);
        let err = decoder.decode(&missing).unwrap_err();
        assert!(err.to_string().contains("\"f1\" has 0 values"), "{err}");
        // A failed record leaves nothing behind for the next.
        let one = decode_batch_spans([&records[1][..]], &wanted).unwrap();
        assert_eq!(decoder.decode(&records[1]).unwrap(), &one[..]);
    }
}
