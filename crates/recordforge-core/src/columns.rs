//! Columnar batch encoding: a batch of rows, given column by column, becomes one
//! serialized `tf.train.Example` per row without any per-row work in the caller.

use std::borrow::Cow;

use crate::crc::masked_crc32c;
use crate::error::{Error, Result};
use crate::framing::FRAME_OVERHEAD;
use crate::wire::{len_field_size, put_varint, varint_len};

/// The values of one column, all rows concatenated.
#[derive(Debug, Clone)]
pub enum ColumnValues<'a> {
    Int64(Cow<'a, [i64]>),
    Float(Cow<'a, [f32]>),
    /// Byte strings packed end to end; value `k` is `data[offsets[k]..offsets[k + 1]]`.
    Bytes {
        data: Cow<'a, [u8]>,
        offsets: Cow<'a, [i64]>,
    },
    /// Byte strings where they are (e.g. Python `bytes` objects): nothing is copied
    /// before they are written into the records.
    Slices(Vec<&'a [u8]>),
}

impl ColumnValues<'_> {
    fn len(&self) -> usize {
        match self {
            ColumnValues::Int64(v) => v.len(),
            ColumnValues::Float(v) => v.len(),
            ColumnValues::Bytes { offsets, .. } => offsets.len().saturating_sub(1),
            ColumnValues::Slices(v) => v.len(),
        }
    }
}

/// How a column's values divide into rows.
#[derive(Debug, Clone)]
pub enum Rows<'a> {
    /// Every row has exactly this many values.
    Fixed(usize),
    /// Row `i` holds values `splits[i]..splits[i + 1]` (`rows + 1` entries).
    Ragged(Cow<'a, [i64]>),
}

/// One named column.
#[derive(Debug, Clone)]
pub struct Column<'a> {
    pub name: &'a str,
    pub values: ColumnValues<'a>,
    pub rows: Rows<'a>,
}

fn invalid(name: &str, what: String) -> Error {
    Error::InvalidArgument(format!("column {name:?}: {what}"))
}

impl Column<'_> {
    /// Checks that the column describes exactly `rows` rows; every index used later is
    /// then in bounds.
    pub fn validate(&self, rows: usize) -> Result<()> {
        let n = self.values.len();
        if let ColumnValues::Bytes { data, offsets } = &self.values {
            check_splits(self.name, offsets, data.len(), "byte offsets")?;
        }
        match &self.rows {
            Rows::Fixed(width) => {
                if width.checked_mul(rows) != Some(n) {
                    return Err(invalid(
                        self.name,
                        format!("{n} values are not {rows} rows of {width}"),
                    ));
                }
            }
            Rows::Ragged(splits) => {
                if splits.len() != rows + 1 {
                    return Err(invalid(
                        self.name,
                        format!(
                            "{} row splits for {rows} rows (expected {})",
                            splits.len(),
                            rows + 1
                        ),
                    ));
                }
                check_splits(self.name, splits, n, "row splits")?;
            }
        }
        Ok(())
    }
}

fn check_splits(name: &str, splits: &[i64], len: usize, what: &str) -> Result<()> {
    if splits.first().copied().unwrap_or(0) != 0 {
        return Err(invalid(name, format!("{what} must start at 0")));
    }
    if splits.windows(2).any(|w| w[1] < w[0]) {
        return Err(invalid(name, format!("{what} must not decrease")));
    }
    if !splits.is_empty() && splits[splits.len() - 1] as u64 != len as u64 {
        return Err(invalid(
            name,
            format!(
                "{what} end at {}, but there are {len}",
                splits[splits.len() - 1]
            ),
        ));
    }
    Ok(())
}

/// Per-column constants of a batch encode.
struct Plan<'c, 'a> {
    column: &'c Column<'a>,
    /// The map entry's key field: tag, length, key bytes.
    key_field: Vec<u8>,
    /// The same, for one fixed-size copy, when it is short.
    key_header: Option<Header>,
    /// For fixed-width float columns every entry has the same size and header, so both
    /// are computed once: (header before the float bytes, size of the whole entry field).
    fixed: Option<(Header, usize)>,
    /// For one-int64-per-row columns: per varint length `p` (1..=10), the header before
    /// the varint and the size of the whole entry field.
    scalar_ints: Option<Vec<(Header, usize)>>,
}

/// A short byte string copied with one fixed-size copy where the output has room.
struct Header {
    bytes: [u8; HEADER_MAX],
    len: usize,
}

const HEADER_MAX: usize = 48;

impl Header {
    fn new(bytes: &[u8]) -> Option<Header> {
        (bytes.len() <= HEADER_MAX).then(|| {
            let mut h = [0u8; HEADER_MAX];
            h[..bytes.len()].copy_from_slice(bytes);
            Header {
                bytes: h,
                len: bytes.len(),
            }
        })
    }
}

/// Appends a varint to a small header being assembled.
fn push_varint(out: &mut Vec<u8>, v: usize) {
    put_varint(out, v as u64);
}

impl<'c, 'a> Plan<'c, 'a> {
    fn new(column: &'c Column<'a>) -> Self {
        let key = column.name.as_bytes();
        let mut key_field = vec![0x0a];
        push_varint(&mut key_field, key.len());
        key_field.extend_from_slice(key);
        let fixed = match (&column.values, &column.rows) {
            (ColumnValues::Float(_), Rows::Fixed(width)) => {
                let list = if *width == 0 {
                    0
                } else {
                    len_field_size(4 * width)
                };
                let message = len_field_size(list);
                let entry = key_field.len() + len_field_size(message);
                let mut header = vec![0x0a];
                push_varint(&mut header, entry);
                header.extend_from_slice(&key_field);
                header.push(0x12);
                push_varint(&mut header, message);
                header.push(0x12);
                push_varint(&mut header, list);
                if *width > 0 {
                    header.push(0x0a);
                    push_varint(&mut header, 4 * width);
                }
                Header::new(&header).map(|h| (h, len_field_size(entry)))
            }
            _ => None,
        };
        let key_header = Header::new(&key_field);
        let scalar_ints = match (&column.values, &column.rows) {
            (ColumnValues::Int64(_), Rows::Fixed(1)) => (1..=10)
                .map(|p| {
                    let list = len_field_size(p);
                    let message = len_field_size(list);
                    let entry = key_field.len() + len_field_size(message);
                    let mut header = vec![0x0a];
                    push_varint(&mut header, entry);
                    header.extend_from_slice(&key_field);
                    header.push(0x12);
                    push_varint(&mut header, message);
                    header.push(0x1a);
                    push_varint(&mut header, list);
                    header.push(0x0a);
                    push_varint(&mut header, p);
                    Header::new(&header).map(|h| (h, len_field_size(entry)))
                })
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        Plan {
            scalar_ints,
            column,
            key_field,
            key_header,
            fixed,
        }
    }

    #[inline]
    fn range(&self, i: usize) -> (usize, usize) {
        match &self.column.rows {
            Rows::Fixed(width) => (i * width, (i + 1) * width),
            Rows::Ragged(splits) => (splits[i] as usize, splits[i + 1] as usize),
        }
    }

    /// Size of the serialized list message of row `i` (e.g. `Int64List`), without tag
    /// or length.
    #[inline]
    fn list_size(&self, i: usize) -> usize {
        let (start, end) = self.range(i);
        match &self.column.values {
            ColumnValues::Float(_) if start == end => 0,
            ColumnValues::Float(_) => len_field_size(4 * (end - start)),
            ColumnValues::Int64(_) if start == end => 0,
            ColumnValues::Int64(v) => len_field_size(packed_size(&v[start..end])),
            ColumnValues::Bytes { offsets, .. } => (start..end)
                .map(|k| len_field_size((offsets[k + 1] - offsets[k]) as usize))
                .sum(),
            ColumnValues::Slices(v) => v[start..end].iter().map(|b| len_field_size(b.len())).sum(),
        }
    }

    /// Size of the whole map entry field of row `i`, given its list size.
    #[inline]
    fn entry_field_size(&self, list_size: usize) -> usize {
        len_field_size(self.key_field.len() + len_field_size(len_field_size(list_size)))
    }

    /// Adds each row's entry field size to `sizes`.
    fn add_sizes(&self, sizes: &mut [usize]) {
        if let Some((_, entry)) = &self.fixed {
            sizes.iter_mut().for_each(|s| *s += entry);
            return;
        }
        if let (Some(headers), ColumnValues::Int64(v)) = (&self.scalar_ints, &self.column.values) {
            for (s, &x) in sizes.iter_mut().zip(v.iter()) {
                *s += headers[varint_len(x as u64) - 1].1;
            }
            return;
        }
        for (i, s) in sizes.iter_mut().enumerate() {
            *s += self.entry_field_size(self.list_size(i));
        }
    }

    /// Writes the map entry field of row `i`.
    #[inline]
    fn write(&self, i: usize, out: &mut Cursor<'_>) {
        let (start, end) = self.range(i);
        if let (Some((header, _)), ColumnValues::Float(v)) = (&self.fixed, &self.column.values) {
            out.header(header);
            out.floats(&v[start..end]);
            return;
        }
        if let (Some(headers), ColumnValues::Int64(v)) = (&self.scalar_ints, &self.column.values) {
            let x = v[i] as u64;
            out.header(&headers[varint_len(x) - 1].0);
            out.varint(x);
            return;
        }
        let list = self.list_size(i);
        let message = len_field_size(list);
        out.len_header(1, self.key_field.len() + len_field_size(message));
        match &self.key_header {
            Some(h) => out.header(h),
            None => out.put(&self.key_field),
        }
        out.len_header(2, message);
        match &self.column.values {
            ColumnValues::Float(v) => {
                out.len_header(2, list);
                if start < end {
                    out.len_header(1, 4 * (end - start));
                    out.floats(&v[start..end]);
                }
            }
            ColumnValues::Int64(v) => {
                out.len_header(3, list);
                if start < end {
                    let values = &v[start..end];
                    out.len_header(1, packed_size(values));
                    for &x in values {
                        out.varint(x as u64);
                    }
                }
            }
            ColumnValues::Bytes { data, offsets } => {
                out.len_header(1, list);
                for k in start..end {
                    let value = &data[offsets[k] as usize..offsets[k + 1] as usize];
                    out.len_header(1, value.len());
                    out.put(value);
                }
            }
            ColumnValues::Slices(v) => {
                out.len_header(1, list);
                for value in &v[start..end] {
                    out.len_header(1, value.len());
                    out.put(value);
                }
            }
        }
    }
}

#[inline]
fn packed_size(values: &[i64]) -> usize {
    values.iter().map(|&v| varint_len(v as u64)).sum()
}

/// Writes into a slice whose size was computed beforehand.
struct Cursor<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    #[inline]
    fn header(&mut self, h: &Header) {
        let room = self
            .buf
            .get_mut(self.pos..self.pos + HEADER_MAX)
            .and_then(|d| <&mut [u8; HEADER_MAX]>::try_from(d).ok());
        if let Some(dst) = room {
            // One fixed-size copy (no call); the bytes past `len` are overwritten next.
            *dst = h.bytes;
        } else {
            self.buf[self.pos..self.pos + h.len].copy_from_slice(&h.bytes[..h.len]);
        }
        self.pos += h.len;
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf[self.pos] = (v as u8) | 0x80;
            self.pos += 1;
            v >>= 7;
        }
        self.buf[self.pos] = v as u8;
        self.pos += 1;
    }

    #[inline]
    fn len_header(&mut self, field: u8, len: usize) {
        self.buf[self.pos] = (field << 3) | 2;
        self.pos += 1;
        self.varint(len as u64);
    }

    #[inline]
    fn floats(&mut self, values: &[f32]) {
        if let [one] = values {
            // The common scalar column: a 4-byte store rather than a memcpy call.
            let dst: &mut [u8; 4] = (&mut self.buf[self.pos..self.pos + 4])
                .try_into()
                .expect("4 bytes");
            *dst = one.to_le_bytes();
            self.pos += 4;
            return;
        }
        let dst = &mut self.buf[self.pos..self.pos + 4 * values.len()];
        for (d, v) in dst.chunks_exact_mut(4).zip(values) {
            d.copy_from_slice(&v.to_le_bytes());
        }
        self.pos += 4 * values.len();
    }
}

/// Serialized rows of a batch: record `i` is `data[ends[i - 1]..ends[i]]` (from 0 for
/// the first). With framing, each record is a complete TFRecord frame (length, CRCs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub data: Vec<u8>,
    pub ends: Vec<usize>,
    pub framed: bool,
}

impl EncodedBatch {
    /// The serialized Example of record `i` (without its frame).
    pub fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let end = self.ends[i];
        if self.framed {
            &self.data[start + 12..end - 4]
        } else {
            &self.data[start..end]
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Bytes a batch must reach before its write pass is split across threads.
const PARALLEL_BYTES: usize = 1 << 20;

/// Encodes `rows` rows into one `tf.train.Example` each (features in column order),
/// optionally framed as TFRecords, using up to `threads` threads for the write pass.
pub fn encode_batch(
    columns: &[Column<'_>],
    rows: usize,
    framed: bool,
    threads: usize,
) -> Result<EncodedBatch> {
    encode_batch_with(columns, rows, framed, threads, |total| vec![0u8; total])
}

/// [`encode_batch`] into the buffer `buffer(total)` gives: `total` bytes, all of which
/// the write pass overwrites (so a buffer reused from an earlier batch need not be zeroed,
/// [`crate::blocks::BlockPool::take_filled`]).
pub fn encode_batch_with(
    columns: &[Column<'_>],
    rows: usize,
    framed: bool,
    threads: usize,
    buffer: impl FnOnce(usize) -> Vec<u8>,
) -> Result<EncodedBatch> {
    for c in columns {
        c.validate(rows)?;
    }
    let plans: Vec<Plan<'_, '_>> = columns.iter().map(Plan::new).collect();
    // Size pass, column by column: the body size of every row.
    let mut bodies = vec![0usize; rows];
    for plan in &plans {
        plan.add_sizes(&mut bodies);
    }
    let overhead = if framed { FRAME_OVERHEAD as usize } else { 0 };
    let mut ends = Vec::with_capacity(rows);
    let mut total = 0usize;
    for &body in &bodies {
        total += len_field_size(body) + overhead;
        ends.push(total);
    }
    let mut data = buffer(total);
    assert_eq!(data.len(), total, "a batch's buffer has its size");
    // Write pass, row by row, in up to `threads` contiguous chunks of about equal bytes.
    let chunks = if total < PARALLEL_BYTES {
        1
    } else {
        threads.clamp(1, rows.clamp(1, crate::MAX_THREADS))
    };
    let mut bounds = vec![0usize];
    for k in 1..chunks {
        let target = total / chunks * k;
        let row = ends.partition_point(|&e| e <= target);
        bounds.push(row.max(*bounds.last().expect("non-empty")));
    }
    bounds.push(rows);
    let write_rows = |first: usize, last: usize, buf: &mut [u8]| {
        let mut out = Cursor { buf, pos: 0 };
        for (i, &body) in bodies.iter().enumerate().take(last).skip(first) {
            let start = out.pos;
            if framed {
                let length = (len_field_size(body) as u64).to_le_bytes();
                out.put(&length);
                out.put(&masked_crc32c(&length).to_le_bytes());
            }
            let payload = out.pos;
            out.len_header(1, body);
            for plan in &plans {
                plan.write(i, &mut out);
            }
            if framed {
                let crc = masked_crc32c(&out.buf[payload..out.pos]);
                out.put(&crc.to_le_bytes());
            }
            debug_assert_eq!(
                out.pos - start,
                len_field_size(body) + overhead,
                "size pass and write pass disagree"
            );
        }
    };
    std::thread::scope(|scope| {
        let mut rest: &mut [u8] = &mut data;
        let mut consumed = 0usize;
        for w in bounds.windows(2) {
            let (first, last) = (w[0], w[1]);
            let end = if last == 0 { 0 } else { ends[last - 1] };
            let (mine, tail) = rest.split_at_mut(end - consumed);
            rest = tail;
            consumed = end;
            if last == rows {
                write_rows(first, last, mine);
            } else {
                let write_rows = &write_rows;
                scope.spawn(move || write_rows(first, last, mine));
            }
        }
    });
    Ok(EncodedBatch { data, ends, framed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::{decode_example, encode_example, Feature};
    use crate::framing::RecordWriter;
    use crate::Compression;

    #[test]
    fn rows_match_per_row_encoding() {
        let ids = [1i64, 2, 3];
        let xy = [0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5];
        let text = b"abcdef";
        let cols = [
            Column {
                name: "id",
                values: ColumnValues::Int64(Cow::Borrowed(&ids)),
                rows: Rows::Fixed(1),
            },
            Column {
                name: "xy",
                values: ColumnValues::Float(Cow::Borrowed(&xy)),
                rows: Rows::Fixed(2),
            },
            Column {
                name: "t",
                values: ColumnValues::Bytes {
                    data: Cow::Borrowed(text),
                    offsets: Cow::Owned(vec![0, 1, 3, 6]),
                },
                rows: Rows::Ragged(Cow::Owned(vec![0, 2, 2, 3])),
            },
        ];
        let batch = encode_batch(&cols, 3, false, 1).unwrap();
        assert_eq!(batch.len(), 3);
        let (out, ends) = (&batch.data, &batch.ends);
        let row1 = decode_example(batch.record(1)).unwrap();
        assert_eq!(row1[0].1, Feature::Int64(Cow::Owned(vec![2])));
        assert_eq!(row1[1].1, Feature::Float(Cow::Owned(vec![2.5, 3.5])));
        assert_eq!(row1[2].1, Feature::Bytes(vec![]));
        let mut single = Vec::new();
        encode_example(
            &[
                ("id", Feature::Int64(Cow::Owned(vec![1]))),
                ("xy", Feature::Float(Cow::Owned(vec![0.5, 1.5]))),
                (
                    "t",
                    Feature::Bytes(vec![Cow::Borrowed(&b"a"[..]), Cow::Borrowed(&b"bc"[..])]),
                ),
            ],
            &mut single,
        );
        assert_eq!(&out[..ends[0]], &single[..]);
    }

    /// A large mixed batch: framed, on several threads, equals per-row encoding written
    /// by `RecordWriter`, and unframed equals the per-row Examples.
    #[test]
    fn framed_parallel_batch_equals_record_writer() {
        let rows = 20_000usize;
        let ints: Vec<i64> = (0..rows as i64)
            .map(|i| (i * 7919) % 100_003 - 50_000)
            .collect();
        let floats: Vec<f32> = (0..3 * rows).map(|i| i as f32 * 0.25).collect();
        let mut text = Vec::new();
        let mut offsets = vec![0i64];
        for i in 0..rows {
            text.extend(std::iter::repeat_n(b'x', i % 17));
            offsets.push(text.len() as i64);
        }
        let splits: Vec<i64> = (0..=rows as i64).map(|i| i - i / 3).collect();
        let ragged_ints: Vec<i64> = (0..splits[rows]).collect();
        let cols = [
            Column {
                name: "id",
                values: ColumnValues::Int64(Cow::Borrowed(&ints)),
                rows: Rows::Fixed(1),
            },
            Column {
                name: "xyz",
                values: ColumnValues::Float(Cow::Borrowed(&floats)),
                rows: Rows::Fixed(3),
            },
            Column {
                name: "text",
                values: ColumnValues::Bytes {
                    data: Cow::Borrowed(&text),
                    offsets: Cow::Borrowed(&offsets),
                },
                rows: Rows::Fixed(1),
            },
            Column {
                name: "some",
                values: ColumnValues::Int64(Cow::Borrowed(&ragged_ints)),
                rows: Rows::Ragged(Cow::Borrowed(&splits)),
            },
        ];
        let mut expected = RecordWriter::new(Vec::new(), Compression::None).unwrap();
        let mut examples = Vec::new();
        for i in 0..rows {
            let (a, b) = (splits[i] as usize, splits[i + 1] as usize);
            let mut one = Vec::new();
            encode_example(
                &[
                    ("id", Feature::Int64(Cow::Owned(vec![ints[i]]))),
                    (
                        "xyz",
                        Feature::Float(Cow::Borrowed(&floats[3 * i..3 * i + 3])),
                    ),
                    (
                        "text",
                        Feature::Bytes(vec![Cow::Borrowed(
                            &text[offsets[i] as usize..offsets[i + 1] as usize],
                        )]),
                    ),
                    ("some", Feature::Int64(Cow::Borrowed(&ragged_ints[a..b]))),
                ],
                &mut one,
            );
            expected.write_record(&one).unwrap();
            examples.push(one);
        }
        let expected = expected.finish().unwrap();
        for threads in [1, 2, 3] {
            let framed = encode_batch(&cols, rows, true, threads).unwrap();
            assert!(framed.data.len() > PARALLEL_BYTES);
            assert_eq!(framed.data, expected, "threads={threads}");
            assert_eq!(*framed.ends.last().unwrap(), expected.len());
            assert_eq!(framed.record(5), &examples[5][..]);
            let plain = encode_batch(&cols, rows, false, threads).unwrap();
            assert_eq!(plain.data, examples.concat());
            assert_eq!(plain.record(rows - 1), &examples[rows - 1][..]);
        }
        assert!(encode_batch(&cols, 0, true, 2).is_err());
        let empty = encode_batch(&[], 0, true, 2).unwrap();
        assert!(empty.is_empty() && empty.data.is_empty());
    }

    #[test]
    fn inconsistent_columns_are_refused() {
        let v = [1i64, 2, 3];
        let c = Column {
            name: "v",
            values: ColumnValues::Int64(Cow::Borrowed(&v)),
            rows: Rows::Fixed(2),
        };
        assert!(c.validate(2).is_err());
        let c = Column {
            name: "v",
            values: ColumnValues::Int64(Cow::Borrowed(&v)),
            rows: Rows::Ragged(Cow::Owned(vec![0, 2, 1])),
        };
        assert!(c.validate(2).is_err());
        let c = Column {
            name: "v",
            values: ColumnValues::Int64(Cow::Borrowed(&v)),
            rows: Rows::Ragged(Cow::Owned(vec![0, 2, 4])),
        };
        assert!(c.validate(2).is_err());
        let c = Column {
            name: "b",
            values: ColumnValues::Bytes {
                data: Cow::Borrowed(b"ab"),
                offsets: Cow::Owned(vec![0, 3]),
            },
            rows: Rows::Fixed(1),
        };
        assert!(c.validate(1).is_err());
    }

    #[test]
    fn slices_encode_as_packed_bytes_and_reused_buffers_are_overwritten() {
        let values: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; i * 37 % 500]).collect();
        let mut data = Vec::new();
        let mut offsets = vec![0i64];
        for v in &values {
            data.extend_from_slice(v);
            offsets.push(data.len() as i64);
        }
        let splits: Vec<i64> = (0..=20).map(|i| i * 2).collect();
        let make = |values: ColumnValues<'_>, rows: Rows<'_>| {
            let cols = [Column {
                name: "b",
                values,
                rows,
            }];
            let fresh = encode_batch(&cols, 20, true, 2).unwrap();
            // A dirty buffer (0xAA everywhere) must come out as the fresh one.
            let dirty = encode_batch_with(&cols, 20, true, 2, |n| vec![0xAA; n]).unwrap();
            assert_eq!(fresh, dirty);
            fresh
        };
        let packed = make(
            ColumnValues::Bytes {
                data: Cow::Borrowed(&data),
                offsets: Cow::Borrowed(&offsets),
            },
            Rows::Ragged(Cow::Borrowed(&splits)),
        );
        let slices = make(
            ColumnValues::Slices(values.iter().map(Vec::as_slice).collect()),
            Rows::Ragged(Cow::Borrowed(&splits)),
        );
        assert_eq!(packed, slices);
        let pool = crate::blocks::BlockPool::new();
        pool.give(vec![0x55; packed.data.len() + 100]);
        let cols = [Column {
            name: "b",
            values: ColumnValues::Slices(values.iter().map(Vec::as_slice).collect()),
            rows: Rows::Ragged(Cow::Borrowed(&splits)),
        }];
        let pooled = encode_batch_with(&cols, 20, true, 1, |n| pool.take_filled(n)).unwrap();
        assert_eq!(pooled, packed);
        assert_eq!(pool.kept_bytes(), 0);
    }
}
