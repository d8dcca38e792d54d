//! Columnar decoding: many serialized `tf.train.Example`s -> one column per wanted
//! feature (all values end to end, plus row splits), without building per-record maps.
//!
//! Features that are not wanted are skipped by length, their bytes never parsed.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::parallel::map_parts;
use crate::wire::{Cursor, WT_END_GROUP, WT_LEN, WT_START_GROUP};

/// The value kind of a wanted feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int64,
    Float,
    Bytes,
}

impl Kind {
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
    Error::Mismatch(what)
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
    /// Per wanted feature: where the current record's last entry for it puts its Feature.
    last: Vec<Option<(usize, usize)>>,
}

impl Finder {
    /// The wanted index of `key`, the `ordinal`-th entry of its record; `None` when
    /// not wanted. Keys are matched as bytes (TensorFlow's parser does not ask for UTF-8).
    #[inline]
    fn find(&mut self, wanted: &[Wanted<'_>], ordinal: usize, key: &[u8]) -> Option<usize> {
        if let Some((k, found)) = self.seen.get(ordinal) {
            if k.as_slice() == key {
                return *found;
            }
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
        found
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

/// One record's wanted features, parsed as TensorFlow's `tf.io.parse_example` parses
/// them (`example_proto_fast_parsing.cc`), so that a batch holds what TensorFlow would
/// give for the same feature description, also for records that protobuf's own rules
/// read differently:
///
/// - the Example's fields other than `features` are skipped (groups are an error); a
///   `features` field must be tagged by the single byte 0x0a, and every field of the
///   `Features` message must be a map entry (0x0a);
/// - a map entry holds exactly two fields, each the key (1) or the Feature (2), in either
///   order (a repeated one replaces the first); keys are bytes, matched as they are;
/// - a wanted Feature's first byte says its kind (0x0a bytes, 0x12 float, 0x1a int64;
///   an empty Feature has none and no values; any other byte is an error, in every entry
///   of the key); only that first list is read, whatever follows it in the Feature;
/// - of a key given several times, the last entry counts (for a fixed width, the last
///   one that has a kind), and only its list is read; its kind must be the schema's;
/// - a list's first tag says how it is written: int64 and float values packed (0x0a:
///   that one block is read, whatever follows) or one by one (0x08 varints, 0x0d fixed32:
///   every field must be one); bytes values 0x0a each. Anything else is an error.
///
/// `decode_example` keeps protobuf's rules (a oneof takes its last member, a repeated
/// Feature merges), which are what `tf.train.Example.FromString` gives.
fn decode_one(
    buf: &[u8],
    wanted: &[Wanted<'_>],
    finder: &mut Finder,
    columns: &mut [DecodedColumn],
) -> Result<()> {
    let mut last = std::mem::take(&mut finder.last);
    last.clear();
    last.resize(wanted.len(), None);
    let found = find_features(buf, wanted, finder, &mut last);
    let result = found.and_then(|()| {
        for (i, slot) in last.iter().enumerate() {
            if let Some((at, len)) = *slot {
                append_feature(&buf[at..at + len], at, &wanted[i], &mut columns[i].values)?;
            }
        }
        Ok(())
    });
    finder.last = last;
    result
}

/// Where the last entry of each wanted key puts its Feature: `(position, length)` in
/// `buf`.
fn find_features(
    buf: &[u8],
    wanted: &[Wanted<'_>],
    finder: &mut Finder,
    last: &mut [Option<(usize, usize)>],
) -> Result<()> {
    let mut c = Cursor::new(buf, 0, MSG);
    let mut ordinal = 0;
    while let Some(byte) = c.peek() {
        if byte != ENTRY_TAG {
            let (field, wt) = c.tag()?;
            if matches!(wt, WT_START_GROUP | WT_END_GROUP) {
                return Err(c.error("group in an Example (TensorFlow's parser refuses it)"));
            }
            c.skip(field, wt)?;
            continue;
        }
        c.advance(1);
        let (features, at) = c.len_delimited()?;
        let mut f = Cursor::new(features, at, MSG);
        while let Some(byte) = f.peek() {
            if byte != ENTRY_TAG {
                return Err(f.error("Features holds a field that is not a map entry"));
            }
            f.advance(1);
            let (entry, at) = f.len_delimited()?;
            let (key, value) = map_entry(entry, at)?;
            if let Some(i) = finder.find(wanted, ordinal, key) {
                let (at, len) = value;
                let kinded = len > 0;
                if kinded && kind_of(buf[at]).is_none() {
                    return Err(Error::Decode {
                        message: MSG,
                        what: "Feature does not start with a bytes_list, float_list or int64_list",
                        position: at,
                    });
                }
                // A fixed width takes the last entry with a kind; a variable one the last.
                if kinded || wanted[i].width.is_none() {
                    last[i] = Some(value);
                }
            }
            ordinal += 1;
        }
    }
    Ok(())
}

/// The key and the Feature's `(position, length)` of a map entry (exactly two fields).
fn map_entry(entry: &[u8], base: usize) -> Result<(&[u8], (usize, usize))> {
    let mut c = Cursor::new(entry, base, MSG);
    let mut key: &[u8] = b"";
    let mut value = (base, 0);
    for _ in 0..2 {
        if c.at_end() {
            return Err(c.error("map entry without both a key and a value"));
        }
        match c.tag()? {
            (1, WT_LEN) => key = c.len_delimited()?.0,
            (2, WT_LEN) => {
                let (v, at) = c.len_delimited()?;
                value = (at, v.len());
            }
            _ => return Err(c.error("map entry holds a field other than its key and value")),
        }
    }
    if !c.at_end() {
        return Err(c.error("map entry holds more than a key and a value"));
    }
    Ok((key, value))
}

/// A map entry's tag in `Features`, and `features`' in `Example`: field 1, length-delimited.
const ENTRY_TAG: u8 = (1 << 3) | WT_LEN;

/// The kind a Feature's first byte gives.
fn kind_of(first: u8) -> Option<Kind> {
    match first {
        0x0a => Some(Kind::Bytes),
        0x12 => Some(Kind::Float),
        0x1a => Some(Kind::Int64),
        _ => None,
    }
}

/// Appends the values of a wanted `Feature` (its first byte already checked; see
/// [`decode_one`] for the rules).
fn append_feature(buf: &[u8], base: usize, want: &Wanted<'_>, out: &mut Values) -> Result<()> {
    let Some(found) = buf.first().and_then(|&b| kind_of(b)) else {
        return Ok(()); // a Feature without a kind: no values
    };
    if found != want.kind {
        return Err(mismatch(format!(
            "feature {:?} is a {}, the schema says {}",
            want.name,
            found.name(),
            want.kind.name()
        )));
    }
    let mut c = Cursor::new(&buf[1..], base + 1, MSG);
    let (list, at) = c.len_delimited()?;
    append_list(list, at, out)
}

fn append_list(buf: &[u8], base: usize, out: &mut Values) -> Result<()> {
    let mut c = Cursor::new(buf, base, MSG);
    let Some(first) = c.peek() else {
        return Ok(());
    };
    let stray = |c: &Cursor<'_>| Err(c.error("value list holds a field other than its values"));
    match (&mut *out, first) {
        // Packed: one block, and what follows it is not read.
        (Values::Float(v), 0x0a) => {
            c.advance(1);
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
        (Values::Int64(v), 0x0a) => {
            c.advance(1);
            let (payload, at) = c.len_delimited()?;
            let mut p = Cursor::new(payload, at, MSG);
            while !p.at_end() {
                v.push(p.varint()? as i64);
            }
        }
        // One by one: every field a value.
        (Values::Float(v), 0x0d) => {
            while let Some(byte) = c.peek() {
                if byte != 0x0d {
                    return stray(&c);
                }
                c.advance(1);
                v.push(f32::from_le_bytes(c.fixed32()?));
            }
        }
        (Values::Int64(v), 0x08) => {
            while let Some(byte) = c.peek() {
                if byte != 0x08 {
                    return stray(&c);
                }
                c.advance(1);
                v.push(c.varint()? as i64);
            }
        }
        (Values::Spans(v), _) => {
            while let Some(byte) = c.peek() {
                if byte != 0x0a {
                    return stray(&c);
                }
                c.advance(1);
                let (payload, at) = c.len_delimited()?;
                v.push((at, at + payload.len()));
            }
        }
        (Values::Bytes { data, offsets }, _) => {
            while let Some(byte) = c.peek() {
                if byte != 0x0a {
                    return stray(&c);
                }
                c.advance(1);
                data.extend_from_slice(c.len_delimited()?.0);
                offsets.push(data.len());
            }
        }
        _ => return stray(&c),
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

    /// What `tf.io.parse_example` gives (checked against TensorFlow in
    /// tests/test_example_hostile.py): a key given twice takes its last entry, whatever the
    /// first one's kind; a Feature with two kinds reads as its first.
    #[test]
    fn records_read_as_tensorflows_parser_reads_them() {
        fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
            let mut out = vec![(field << 3) | 2, payload.len() as u8];
            out.extend_from_slice(payload);
            out
        }
        let entry = |key: &[u8], feature: &[u8]| ld(1, &[ld(1, key), ld(2, feature)].concat());
        let int64 = ld(3, &ld(1, &[7]));
        let bytes = ld(1, &ld(1, b"a"));
        let want = |kind, width| {
            [Wanted {
                name: "x",
                kind,
                width,
            }]
        };
        let twice = ld(1, &[entry(b"x", &bytes), entry(b"x", &int64)].concat());
        let cols = decode_batch([&twice[..]], &want(Kind::Int64, None)).unwrap();
        assert_eq!(cols[0].values, Values::Int64(vec![7]));
        assert!(decode_batch([&twice[..]], &want(Kind::Bytes, None)).is_err());
        let both = ld(1, &entry(b"x", &[bytes.clone(), int64.clone()].concat()));
        let cols = decode_batch([&both[..]], &want(Kind::Bytes, Some(1))).unwrap();
        assert_eq!(
            cols[0].values,
            Values::Bytes {
                data: b"a".to_vec(),
                offsets: vec![0, 1]
            }
        );
        assert!(decode_batch([&both[..]], &want(Kind::Int64, None)).is_err());
        // A fixed width skips a later entry without a kind; a variable one takes it.
        let then_empty = ld(1, &[entry(b"x", &int64), entry(b"x", b"")].concat());
        let fixed = decode_batch([&then_empty[..]], &want(Kind::Int64, Some(1))).unwrap();
        assert_eq!(fixed[0].values, Values::Int64(vec![7]));
        let ragged = decode_batch([&then_empty[..]], &want(Kind::Int64, None)).unwrap();
        assert_eq!(ragged[0].values, Values::Int64(vec![]));
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
