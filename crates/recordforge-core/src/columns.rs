//! Columnar batch encoding: a batch of rows, given column by column, becomes one
//! serialized `tf.train.Example` per row without any per-row work in the caller.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::example::{encode_example, Feature};

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
}

impl ColumnValues<'_> {
    fn len(&self) -> usize {
        match self {
            ColumnValues::Int64(v) => v.len(),
            ColumnValues::Float(v) => v.len(),
            ColumnValues::Bytes { offsets, .. } => offsets.len().saturating_sub(1),
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

    fn row(&self, i: usize) -> Feature<'_> {
        let (start, end) = match &self.rows {
            Rows::Fixed(width) => (i * width, (i + 1) * width),
            Rows::Ragged(splits) => (splits[i] as usize, splits[i + 1] as usize),
        };
        match &self.values {
            ColumnValues::Int64(v) => Feature::Int64(Cow::Borrowed(&v[start..end])),
            ColumnValues::Float(v) => Feature::Float(Cow::Borrowed(&v[start..end])),
            ColumnValues::Bytes { data, offsets } => Feature::Bytes(
                (start..end)
                    .map(|k| Cow::Borrowed(&data[offsets[k] as usize..offsets[k + 1] as usize]))
                    .collect(),
            ),
        }
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

/// Encodes `rows` rows: appends each Example to `out` and its end offset to `ends`.
pub fn encode_columns(
    columns: &[Column<'_>],
    rows: usize,
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Result<()> {
    for c in columns {
        c.validate(rows)?;
    }
    let mut features: Vec<(&str, Feature<'_>)> = Vec::with_capacity(columns.len());
    for i in 0..rows {
        features.clear();
        features.extend(columns.iter().map(|c| (c.name, c.row(i))));
        encode_example(&features, out);
        ends.push(out.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::decode_example;

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
        let (mut out, mut ends) = (Vec::new(), Vec::new());
        encode_columns(&cols, 3, &mut out, &mut ends).unwrap();
        assert_eq!(ends.len(), 3);
        let row1 = decode_example(&out[ends[0]..ends[1]]).unwrap();
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
}
