//! Row ends of a CSV file, found in one pass over its bytes as pyarrow's parser sees them:
//! a line ends at `\n`, `\r\n` or a lone `\r`; a quote opens a quoted value only at the
//! start of a field (after the delimiter, a line end, or the file's start), inside one
//! `""` is a quote and any other quote closes it, and a line end inside one ends no row.
//! Fed a chunk at a time (the state carries across chunks), so that a file of any size is
//! scanned in bounded memory. [`PartCutter`] cuts the rows into parts (byte ranges of
//! whole rows, `sources/_table_parts.py`) as the lines are found, so that a scan hands
//! back a few numbers a part rather than one a line.

/// One line found: the offset just past its end, and whether it holds anything (an empty
/// line is no row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineEnd {
    pub end: u64,
    pub nonempty: bool,
}

/// The scanner's state between chunks.
#[derive(Debug, Clone)]
pub struct CsvScanner {
    delimiter: u8,
    offset: u64,     // file offset of the next byte fed
    line_start: u64, // where the open line starts
    in_quote: bool,
    quote_pending: bool, // in a quoted value, the last byte was a quote: `""` or a close
    last: Option<u8>,    // the byte before the next one fed (None: the file's start)
    cr_at: Option<u64>,  // a `\r` whose next byte decides: `\r\n` or a lone `\r`
}

impl CsvScanner {
    /// A scanner for a file whose first byte is at `offset` (past a byte-order mark).
    pub fn new(delimiter: u8, offset: u64) -> Self {
        CsvScanner {
            delimiter,
            offset,
            line_start: offset,
            in_quote: false,
            quote_pending: false,
            last: None,
            cr_at: None,
        }
    }

    fn end_line(&mut self, term: u64, end: u64, out: &mut Vec<LineEnd>) {
        out.push(LineEnd {
            end,
            nonempty: term > self.line_start,
        });
        self.line_start = end;
    }

    /// Scans `chunk`, the file's next bytes, appending the lines that end in it. Outside
    /// a quoted value only `"`, `\n` and `\r` stop the search (a quote opens a value when
    /// the byte before it ends a field); inside one, only `"`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<LineEnd>) {
        let n = chunk.len();
        let mut i = 0;
        while i < n {
            let at = self.offset + i as u64;
            if let Some(cr) = self.cr_at.take() {
                if chunk[i] == b'\n' {
                    self.end_line(cr, at + 1, out); // `\r\n`: the `\r` is not content
                    i += 1;
                    continue;
                }
                self.end_line(cr, cr + 1, out); // a lone `\r`
            }
            if self.in_quote {
                if self.quote_pending {
                    self.quote_pending = false;
                    if chunk[i] == b'"' {
                        i += 1; // `""`: a quote inside the value
                        continue;
                    }
                    self.in_quote = false; // the quote before closed it: this byte is outside
                } else {
                    match memchr::memchr(b'"', &chunk[i..]) {
                        Some(k) => {
                            i += k + 1;
                            self.quote_pending = true;
                        }
                        None => i = n,
                    }
                    continue;
                }
            }
            let Some(k) = memchr::memchr3(b'"', b'\n', b'\r', &chunk[i..]) else {
                break;
            };
            let p = i + k;
            let at = self.offset + p as u64;
            match chunk[p] {
                b'\n' => self.end_line(at, at + 1, out),
                b'\r' => self.cr_at = Some(at),
                _ => {
                    let before = if p > 0 { Some(chunk[p - 1]) } else { self.last };
                    let field_start = match before {
                        None => true,
                        Some(b) => b == self.delimiter || b == b'\n' || b == b'\r',
                    };
                    self.in_quote = field_start;
                }
            }
            i = p + 1;
        }
        if n > 0 {
            self.last = Some(chunk[n - 1]);
        }
        self.offset += n as u64;
    }

    /// The end of the file: a `\r` left open ends its line; a last line without a line
    /// end (or a quoted value never closed) ends at the file's end.
    pub fn finish(&mut self, out: &mut Vec<LineEnd>) {
        if let Some(cr) = self.cr_at.take() {
            self.end_line(cr, cr + 1, out);
        }
        if self.line_start < self.offset {
            out.push(LineEnd {
                end: self.offset,
                nonempty: true,
            });
            self.line_start = self.offset;
        }
    }
}

/// A part of a file: bytes `start..stop`, holding rows `first_row..first_row + rows`
/// (1-based, the header not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub start: u64,
    pub stop: u64,
    pub first_row: u64,
    pub rows: u64,
}

/// Cuts lines into parts: skips `skip` lines, then the header (the first line with
/// content, when `header`), then closes a part after the first line that ends at or past
/// `part_bytes` from the part's start. A part with no row (empty lines only) is left out,
/// its bytes in no part.
#[derive(Debug, Clone)]
pub struct PartCutter {
    skip: u64,
    header: bool,
    part_bytes: u64,
    part_start: Option<u64>, // None: still in the skipped lines or before the header
    rows: u64,               // rows of the open part
    first_row: u64,
    last_end: u64, // the end of the last line seen: the file's end at `finish`
}

impl PartCutter {
    pub fn new(skip: u64, header: bool, part_bytes: u64) -> Self {
        PartCutter {
            skip,
            header,
            part_bytes,
            part_start: if skip > 0 || header { None } else { Some(0) },
            rows: 0,
            first_row: 1,
            last_end: 0,
        }
    }

    /// One line, ending at `line.end`; appends a part the line closes to `out`.
    pub fn line(&mut self, line: LineEnd, out: &mut Vec<Part>) {
        self.last_end = line.end;
        let Some(start) = self.part_start else {
            if self.skip > 0 {
                self.skip -= 1;
            } else if line.nonempty {
                self.header = false;
            }
            if self.skip == 0 && !self.header {
                self.part_start = Some(line.end);
            }
            return;
        };
        self.rows += u64::from(line.nonempty);
        if line.end >= start.saturating_add(self.part_bytes) {
            self.close(start, line.end, out);
        }
    }

    fn close(&mut self, start: u64, stop: u64, out: &mut Vec<Part>) {
        if self.rows > 0 {
            out.push(Part {
                start,
                stop,
                first_row: self.first_row,
                rows: self.rows,
            });
            self.first_row += self.rows;
        }
        self.part_start = Some(stop);
        self.rows = 0;
    }

    /// The end of the file: the open part ends at the last line's end.
    pub fn finish(&mut self, out: &mut Vec<Part>) {
        if let Some(start) = self.part_start {
            self.close(start, self.last_end, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(data: &[u8], chunk: usize) -> Vec<(u64, bool)> {
        let mut s = CsvScanner::new(b',', 0);
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            s.feed(piece, &mut out);
        }
        s.finish(&mut out);
        out.iter().map(|l| (l.end, l.nonempty)).collect()
    }

    #[test]
    fn line_ends_of_every_kind() {
        let data = b"a,b\nc\r\nd\re\n\nlast";
        let want = vec![
            (4, true),
            (7, true),
            (9, true),
            (11, true),
            (12, false),
            (16, true),
        ];
        for chunk in 1..=data.len() {
            assert_eq!(scan(data, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn quotes_hold_line_ends_and_escaped_quotes() {
        let data = b"\"x\ny\",\"a\"\"\nb\"\n5\" screen,\"q\"\n";
        // The first row spans two lines; `""` keeps the value open across its line end;
        // a quote inside an unquoted value opens nothing.
        let want = vec![(14, true), (28, true)];
        for chunk in 1..=data.len() {
            assert_eq!(scan(data, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn an_unclosed_quote_runs_to_the_end() {
        assert_eq!(scan(b"a\n\"b\nc\n", 3), vec![(2, true), (7, true)]);
    }

    #[test]
    fn crlf_split_across_chunks_and_a_final_cr() {
        assert_eq!(scan(b"ab\r\ncd\r", 3), vec![(4, true), (7, true)]);
        assert_eq!(scan(b"\r\n\r\n", 1), vec![(2, false), (4, false)]);
    }

    fn cut(data: &[u8], skip: u64, header: bool, part_bytes: u64, chunk: usize) -> Vec<Part> {
        let mut s = CsvScanner::new(b',', 0);
        let mut c = PartCutter::new(skip, header, part_bytes);
        let (mut lines, mut parts) = (Vec::new(), Vec::new());
        for piece in data.chunks(chunk.max(1)) {
            s.feed(piece, &mut lines);
        }
        s.finish(&mut lines);
        for line in lines {
            c.line(line, &mut parts);
        }
        c.finish(&mut parts);
        parts
    }

    fn part(start: u64, stop: u64, first_row: u64, rows: u64) -> Part {
        Part {
            start,
            stop,
            first_row,
            rows,
        }
    }

    #[test]
    fn parts_end_at_the_first_row_end_past_their_size() {
        // (the example of `_table_parts.py`'s docstring)
        let data = b"id,text\n1,\"two\nlines\"\n2,b\n\n3,c";
        let want = vec![part(8, 22, 1, 1), part(22, 30, 2, 2)];
        for chunk in 1..=data.len() {
            assert_eq!(cut(data, 0, true, 8, chunk), want, "chunk {chunk}");
        }
        // no header: the first part starts at the file's start
        assert_eq!(
            cut(b"a\nb\nc\n", 0, false, 3, 2),
            vec![part(0, 4, 1, 2), part(4, 6, 3, 1)]
        );
        // skipped lines, then empty lines before the header
        assert_eq!(cut(b"x\n\nh\n1\n", 1, true, 100, 1), vec![part(5, 7, 1, 1)]);
    }

    #[test]
    fn a_part_of_empty_lines_only_is_left_out() {
        assert_eq!(
            cut(b"h\n1\n\n\n\n2\n", 0, true, 2, 4),
            vec![part(2, 4, 1, 1), part(6, 9, 2, 1)]
        );
        assert_eq!(cut(b"h\n", 0, true, 2, 4), vec![]);
        assert_eq!(cut(b"", 0, false, 2, 4), vec![]);
    }
}
