//! Columnar decoding: many serialized `tf.train.Example`s -> one column per wanted
//! feature (all values end to end, plus row splits), without building per-record maps.
//!
//! Features that are not wanted are skipped by length, their bytes never parsed.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::parallel::map_parts;
use crate::wire::{for_each_len_field, Cursor, WT_FIXED32, WT_LEN, WT_VARINT};

/// The value kind of a wanted feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int64,
    Float,
    Bytes,
}

impl Kind {
    fn field(self) -> u32 {
        match self {
            Kind::Bytes => 1,
            Kind::Float => 2,
            Kind::Int64 => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Bytes => "bytes_list",
            Kind::Float => "float_list",
            Kind::Int64 => "int64_list",
        }
    }
}

/// A feature to decode: its name, kind, and `Some(n)` when every record must hold
/// exactly `n` values (a fixed shape).
#[derive(Debug, Clone)]
pub struct Wanted<'s> {
    pub name: &'s str,
    pub kind: Kind,
    pub width: Option<usize>,
}

/// Borrowed [`Wanted`]s of owned `(name, kind, width)` triples.
pub fn wanted_of<S: AsRef<str>>(owned: &[(S, Kind, Option<usize>)]) -> Vec<Wanted<'_>> {
    owned
        .iter()
        .map(|(name, kind, width)| Wanted {
            name: name.as_ref(),
            kind: *kind,
            width: *width,
        })
        .collect()
}

/// The decoded values of one feature, all records end to end.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Int64(Vec<i64>),
    Float(Vec<f32>),
    /// Value `k` is `data[offsets[k]..offsets[k + 1]]`.
    Bytes {
        data: Vec<u8>,
        offsets: Vec<usize>,
    },
    /// Bytes values left in their records (from [`decode_batch_spans`]): `(start, end)`
    /// within the record, which is the one whose row splits hold the value's index.
    Spans(Vec<(usize, usize)>),
}

impl Values {
    fn new(kind: Kind, spans: bool) -> Self {
        match kind {
            Kind::Int64 => Values::Int64(Vec::new()),
            Kind::Float => Values::Float(Vec::new()),
            Kind::Bytes if spans => Values::Spans(Vec::new()),
            Kind::Bytes => Values::Bytes {
                data: Vec::new(),
                offsets: vec![0],
            },
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Int64(v) => v.len(),
            Values::Float(v) => v.len(),
            Values::Bytes { offsets, .. } => offsets.len() - 1,
            Values::Spans(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn truncate(&mut self, n: usize) {
        match self {
            Values::Int64(v) => v.truncate(n),
            Values::Float(v) => v.truncate(n),
            Values::Spans(v) => v.truncate(n),
            Values::Bytes { data, offsets } => {
                offsets.truncate(n + 1);
                data.truncate(offsets[n]);
            }
        }
    }
}

/// One decoded feature: values, and row splits (`records + 1` entries; record `i` holds
/// values `splits[i]..splits[i + 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedColumn {
    pub values: Values,
    pub splits: Vec<usize>,
}

/// A record that could not be decoded as the wanted features ask.
#[derive(Debug)]
pub struct BatchError {
    /// Index of the record in the batch.
    pub record: usize,
    pub error: Error,
}

fn mismatch(what: String) -> Error {
    Error::InvalidArgument(what)
}

const MSG: &str = "tf.train.Example";

/// Finds the wanted feature of a map key. Records written by one writer repeat their
/// keys in the same order, so the key seen at the same entry of the previous record is
/// tried first: one comparison instead of a search. Owns what it learned, so it can be
/// kept from one call to the next ([`crate::row::RecordDecoder`]) as long as the wanted
/// features stay the same.
#[derive(Debug, Clone, Default)]
pub(crate) struct Finder {
    /// Name -> wanted index, built at the first search when there are many features.
    map: Option<HashMap<Box<[u8]>, usize>>,
    /// Per entry ordinal: the previous record's key there, and what it was.
    seen: Vec<(Vec<u8>, Option<usize>)>,
}

impl Finder {
    /// The wanted index of `key`, the `ordinal`-th entry of its record; `None` when
    /// not wanted, `Err` when not valid UTF-8 (protobuf's rule for string map keys).
    #[inline]
    fn find(
        &mut self,
        wanted: &[Wanted<'_>],
        ordinal: usize,
        key: &[u8],
        at: usize,
    ) -> Result<Option<usize>> {
        if let Some((k, found)) = self.seen.get(ordinal) {
            if k.as_slice() == key {
                return Ok(*found);
            }
        }
        if std::str::from_utf8(key).is_err() {
            return Err(Error::Decode {
                message: MSG,
                what: "map key is not valid UTF-8",
                position: at,
            });
        }
        let found = if wanted.len() > 16 {
            let map = self.map.get_or_insert_with(|| {
                wanted
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (Box::from(w.name.as_bytes()), i))
                    .collect()
            });
            map.get(key).copied()
        } else {
            wanted.iter().position(|w| w.name.as_bytes() == key)
        };
        if let Some(slot) = self.seen.get_mut(ordinal) {
            slot.0.clear();
            slot.0.extend_from_slice(key);
            slot.1 = found;
        } else if ordinal == self.seen.len() {
            self.seen.push((key.to_vec(), found));
        }
        Ok(found)
    }
}

/// Decodes `records`, keeping only the `wanted` features. A wanted feature missing from a
/// record (or present with no kind) has no values there; one with a fixed width must
/// then hold exactly that many values, or the record is an error.
pub fn decode_batch<'r, I>(
    records: I,
    wanted: &[Wanted<'_>],
) -> std::result::Result<Vec<DecodedColumn>, BatchError>
where
    I: IntoIterator<Item = &'r [u8]>,
{
    decode(records, wanted, false)
}

/// [`decode_batch`], but bytes values are not copied out: they come as
/// [`Values::Spans`] into the records, for a caller that still holds them.
pub fn decode_batch_spans<'r, I>(
    records: I,
    wanted: &[Wanted<'_>],
) -> std::result::Result<Vec<DecodedColumn>, BatchError>
where
    I: IntoIterator<Item = &'r [u8]>,
{
    decode(records, wanted, true)
}

/// [`decode_batch_spans`] on up to `threads` threads, each decoding a contiguous run of
/// at least `min_run` records; the runs' columns are joined in order. The error, if any,
/// is the one of the first failing record, as a sequential decode would report it.
pub fn decode_batch_spans_threaded(
    records: &[&[u8]],
    wanted: &[Wanted<'_>],
    threads: usize,
    min_run: usize,
) -> std::result::Result<Vec<DecodedColumn>, BatchError> {
    let runs = threads.min(records.len() / min_run.max(1)).max(1);
    if runs == 1 {
        return decode(records.iter().copied(), wanted, true);
    }
    let parts = map_parts(records, runs, |run| {
        decode(run.iter().copied(), wanted, true)
    });
    let mut out: Option<Vec<DecodedColumn>> = None;
    for (start, part) in parts {
        let part = part.map_err(|e| BatchError {
            record: e.record + start,
            error: e.error,
        })?;
        match out.as_mut() {
            None => out = Some(part),
            Some(columns) => {
                for (column, more) in columns.iter_mut().zip(part) {
                    column.append(more);
                }
            }
        }
    }
    Ok(out.unwrap_or_default())
}

impl DecodedColumn {
    /// Appends the records of `other` (same kind) after this column's.
    fn append(&mut self, other: DecodedColumn) {
        let base = self.values.len();
        self.splits
            .extend(other.splits[1..].iter().map(|s| s + base));
        match (&mut self.values, other.values) {
            (Values::Int64(a), Values::Int64(b)) => a.extend(b),
            (Values::Float(a), Values::Float(b)) => a.extend(b),
            (Values::Spans(a), Values::Spans(b)) => a.extend(b),
            (
                Values::Bytes { data, offsets },
                Values::Bytes {
                    data: d,
                    offsets: o,
                },
            ) => {
                let shift = data.len();
                data.extend(d);
                offsets.extend(o[1..].iter().map(|x| x + shift));
            }
            _ => unreachable!("columns of one wanted feature have one kind"),
        }
    }
}

fn decode<'r, I>(
    records: I,
    wanted: &[Wanted<'_>],
    spans: bool,
) -> std::result::Result<Vec<DecodedColumn>, BatchError>
where
    I: IntoIterator<Item = &'r [u8]>,
{
    let mut finder = Finder::default();
    let mut columns = empty_columns(wanted, spans);
    for (record, buf) in records.into_iter().enumerate() {
        decode_row(buf, wanted, &mut finder, &mut columns)
            .map_err(|error| BatchError { record, error })?;
    }
    Ok(columns)
}

/// One empty column per wanted feature (bytes as spans with `spans`).
pub(crate) fn empty_columns(wanted: &[Wanted<'_>], spans: bool) -> Vec<DecodedColumn> {
    wanted
        .iter()
        .map(|w| DecodedColumn {
            values: Values::new(w.kind, spans),
            splits: vec![0],
        })
        .collect()
}

/// Appends one record's row to `columns`, checking the fixed widths.
pub(crate) fn decode_row(
    buf: &[u8],
    wanted: &[Wanted<'_>],
    finder: &mut Finder,
    columns: &mut [DecodedColumn],
) -> Result<()> {
    decode_one(buf, wanted, finder, columns)?;
    for (w, c) in wanted.iter().zip(columns.iter_mut()) {
        let start = *c.splits.last().expect("splits start with 0");
        let n = c.values.len() - start;
        if let Some(width) = w.width {
            if n != width {
                return Err(mismatch(format!(
                    "feature {:?} has {n} values, the schema says {width}",
                    w.name
                )));
            }
        }
        c.splits.push(c.values.len());
    }
    Ok(())
}

fn decode_one(
    buf: &[u8],
    wanted: &[Wanted<'_>],
    finder: &mut Finder,
    columns: &mut [DecodedColumn],
) -> Result<()> {
    let mut ordinal = 0;
    for_each_len_field(buf, 0, MSG, 1, |features, at| {
        for_each_len_field(features, at, MSG, 1, |entry, at| {
            decode_entry(entry, at, ordinal, wanted, finder, columns)?;
            ordinal += 1;
            Ok(())
        })
    })
}

/// One map entry `{key, Feature}`: the value of a wanted key is appended to its column
/// (replacing an earlier entry with the same key in this record: last one wins).
fn decode_entry<'r>(
    entry: &'r [u8],
    base: usize,
    ordinal: usize,
    wanted: &[Wanted<'_>],
    finder: &mut Finder,
    columns: &mut [DecodedColumn],
) -> Result<()> {
    let mut c = Cursor::new(entry, base, MSG);
    let mut key: Option<(&'r [u8], usize)> = None;
    // Almost always one value; more only when the Feature is split in parts (merged).
    let mut first: Option<(&'r [u8], usize)> = None;
    let mut more: Vec<(&'r [u8], usize)> = Vec::new();
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        match (field, wt) {
            (1, WT_LEN) => {
                let at = c.position();
                let k = c.len_delimited()?.0;
                // A repeated key field: the last one counts, but each must be UTF-8.
                if let Some((earlier, earlier_at)) = key.replace((k, at)) {
                    if std::str::from_utf8(earlier).is_err() {
                        return Err(Error::Decode {
                            message: MSG,
                            what: "map key is not valid UTF-8",
                            position: earlier_at,
                        });
                    }
                }
            }
            (2, WT_LEN) => {
                let v = c.len_delimited()?;
                if first.is_none() {
                    first = Some(v);
                } else {
                    more.push(v);
                }
            }
            _ => c.skip(field, wt)?,
        }
    }
    let (key, at) = key.unwrap_or((b"", base));
    let Some(i) = finder.find(wanted, ordinal, key, at)? else {
        return Ok(());
    };
    let column = &mut columns[i];
    let record_start = *column.splits.last().expect("splits start with 0");
    // A repeated key: protobuf's map keeps the last entry.
    column.values.truncate(record_start);
    for (feature, at) in first.into_iter().chain(more) {
        append_feature(feature, at, &wanted[i], &mut column.values)?;
    }
    Ok(())
}

/// Appends the values of a `Feature` message of the wanted kind.
fn append_feature(buf: &[u8], base: usize, want: &Wanted<'_>, out: &mut Values) -> Result<()> {
    let mut c = Cursor::new(buf, base, MSG);
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        if wt != WT_LEN || !(1..=3).contains(&field) {
            c.skip(field, wt)?;
            continue;
        }
        let (list, at) = c.len_delimited()?;
        if field != want.kind.field() {
            let found = [Kind::Bytes, Kind::Float, Kind::Int64][field as usize - 1];
            return Err(mismatch(format!(
                "feature {:?} is a {}, the schema says {}",
                want.name,
                found.name(),
                want.kind.name()
            )));
        }
        append_list(list, at, out)?;
    }
    Ok(())
}

fn append_list(buf: &[u8], base: usize, out: &mut Values) -> Result<()> {
    let mut c = Cursor::new(buf, base, MSG);
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        match (&mut *out, field, wt) {
            (Values::Spans(v), 1, WT_LEN) => {
                let (payload, at) = c.len_delimited()?;
                v.push((at, at + payload.len()));
            }
            (Values::Bytes { data, offsets }, 1, WT_LEN) => {
                data.extend_from_slice(c.len_delimited()?.0);
                offsets.push(data.len());
            }
            (Values::Float(v), 1, WT_LEN) => {
                let (payload, _) = c.len_delimited()?;
                if payload.len() % 4 != 0 {
                    return Err(c.error("packed float list length is not a multiple of 4"));
                }
                v.extend(
                    payload
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            (Values::Float(v), 1, WT_FIXED32) => v.push(f32::from_le_bytes(c.fixed32()?)),
            (Values::Int64(v), 1, WT_LEN) => {
                let (payload, at) = c.len_delimited()?;
                let mut p = Cursor::new(payload, at, MSG);
                while !p.at_end() {
                    v.push(p.varint()? as i64);
                }
            }
            (Values::Int64(v), 1, WT_VARINT) => v.push(c.varint()? as i64),
            (_, field, wt) => c.skip(field, wt)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::example::{decode_example, example_bytes as record, Feature};

    #[test]
    fn columns_equal_per_record_decoding() {
        let a = record(&[
            ("id", Feature::Int64(Cow::Owned(vec![7]))),
            ("skip", Feature::Bytes(vec![Cow::Borrowed(b"zzz")])),
            ("xy", Feature::Float(Cow::Owned(vec![1.5, 2.5]))),
            (
                "tags",
                Feature::Bytes(vec![Cow::Borrowed(b"a"), Cow::Borrowed(b"bc")]),
            ),
        ]);
        let b = record(&[
            ("xy", Feature::Float(Cow::Owned(vec![3.0, 4.0]))),
            ("id", Feature::Int64(Cow::Owned(vec![-1]))),
            ("tags", Feature::Empty),
        ]);
        let wanted = [
            Wanted {
                name: "id",
                kind: Kind::Int64,
                width: Some(1),
            },
            Wanted {
                name: "xy",
                kind: Kind::Float,
                width: Some(2),
            },
            Wanted {
                name: "tags",
                kind: Kind::Bytes,
                width: None,
            },
        ];
        let cols = decode_batch([&a[..], &b[..]], &wanted).unwrap();
        assert_eq!(cols[0].values, Values::Int64(vec![7, -1]));
        assert_eq!(cols[1].values, Values::Float(vec![1.5, 2.5, 3.0, 4.0]));
        assert_eq!(cols[1].splits, vec![0, 2, 4]);
        assert_eq!(
            cols[2].values,
            Values::Bytes {
                data: b"abc".to_vec(),
                offsets: vec![0, 1, 3]
            }
        );
        assert_eq!(cols[2].splits, vec![0, 2, 2]);
        // The same as decoding each record whole.
        assert_eq!(
            decode_example(&a).unwrap()[0].1,
            Feature::Int64(Cow::Owned(vec![7]))
        );
    }

    #[test]
    fn last_duplicate_key_wins_and_errors_name_the_record() {
        let mut dup = record(&[("v", Feature::Int64(Cow::Owned(vec![1, 2])))]);
        let second = record(&[("v", Feature::Int64(Cow::Owned(vec![3])))]);
        dup.extend_from_slice(&second); // two Features messages: the map entries merge
        let want = [Wanted {
            name: "v",
            kind: Kind::Int64,
            width: None,
        }];
        let cols = decode_batch([&dup[..]], &want).unwrap();
        assert_eq!(cols[0].values, Values::Int64(vec![3]));
        let ok = record(&[("v", Feature::Int64(Cow::Owned(vec![1])))]);
        let float = record(&[("v", Feature::Float(Cow::Owned(vec![1.0])))]);
        let err = decode_batch([&ok[..], &float[..]], &want).unwrap_err();
        assert_eq!(err.record, 1);
        assert!(
            err.error.to_string().contains("float_list"),
            "{}",
            err.error
        );
        let fixed = [Wanted {
            name: "v",
            kind: Kind::Int64,
            width: Some(1),
        }];
        let missing = record(&[]);
        let err = decode_batch([&ok[..], &ok[..], &missing[..]], &fixed).unwrap_err();
        assert_eq!(err.record, 2);
        let err = decode_batch([&ok[..], &ok[..1]], &fixed).unwrap_err();
        assert_eq!(err.record, 1);
    }

    #[test]
    fn threaded_runs_join_to_the_sequential_columns() {
        let records: Vec<Vec<u8>> = (0..100i64)
            .map(|i| {
                let tags: Vec<Cow<'_, [u8]>> =
                    (0..i % 3).map(|_| Cow::Borrowed(&b"ab"[..])).collect();
                record(&[
                    ("id", Feature::Int64(Cow::Owned(vec![i]))),
                    ("t", Feature::Bytes(tags)),
                    (
                        "x",
                        Feature::Float(Cow::Owned(vec![i as f32; (i % 4) as usize])),
                    ),
                ])
            })
            .collect();
        let slices: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
        let wanted = [
            Wanted {
                name: "id",
                kind: Kind::Int64,
                width: Some(1),
            },
            Wanted {
                name: "t",
                kind: Kind::Bytes,
                width: None,
            },
            Wanted {
                name: "x",
                kind: Kind::Float,
                width: None,
            },
        ];
        let one = decode_batch_spans(slices.iter().copied(), &wanted).unwrap();
        for threads in [1, 2, 3, 7] {
            let many = decode_batch_spans_threaded(&slices, &wanted, threads, 10).unwrap();
            assert_eq!(many, one, "{threads} threads");
        }
        let bad = record(&[("id", Feature::Float(Cow::Owned(vec![1.0])))]);
        let mut with_bad = slices.clone();
        with_bad[77] = &bad;
        let err = decode_batch_spans_threaded(&with_bad, &wanted, 3, 10).unwrap_err();
        assert_eq!(err.record, 77);
    }
}
