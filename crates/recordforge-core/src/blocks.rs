//! Reused buffers for the bytes values of batches (`batches(copy=False)`): a decoder
//! copies a batch's bytes values into one block taken from a [`BlockPool`], and the
//! block comes back to the pool once its owner is done with it. A reader that keeps
//! handing out big values then touches no fresh memory per batch (a fresh buffer's pages
//! are zeroed by the kernel on first touch, which costs as much as the copy).

use std::sync::{Arc, Mutex};

use crate::batch::{DecodedColumn, Values};

/// Blocks kept for reuse: enough for every batch in flight in a reader (decoders ×
/// prefetch, the one being used, the one being made) and a few held by the caller.
const KEPT_BLOCKS: usize = 16;

/// Bytes kept for reuse at most; a block that would take the pool past it is freed.
const KEPT_BYTES: usize = 512 << 20;

/// Blocks given back, for the next batches. Shared by the decoder threads (which take)
/// and the owners of the blocks (which give back); the lock is held only to pick or
/// place a block, never while one is allocated, filled or freed.
///
/// A forked child inherits the pool with its lock as it was at the fork: held, if one
/// of the parent's threads (which the child does not have) was picking a block. So the
/// pool is its maker's process's only: in another, nothing is kept or taken (every
/// block is new, every block given back is freed) and the lock is never touched.
#[derive(Debug)]
pub struct BlockPool {
    kept: Mutex<Vec<Vec<u8>>>,
    owner: u32,
}

impl Default for BlockPool {
    fn default() -> Self {
        Self::owned_by(std::process::id())
    }
}

impl BlockPool {
    pub fn new() -> Self {
        Self::default()
    }

    fn owned_by(owner: u32) -> Self {
        BlockPool {
            kept: Mutex::new(Vec::new()),
            owner,
        }
    }

    /// The kept blocks, locked; None in a process other than the pool's maker's.
    fn kept(&self) -> Option<std::sync::MutexGuard<'_, Vec<Vec<u8>>>> {
        (std::process::id() == self.owner)
            .then(|| self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A kept block with room for `len` bytes (the smallest that fits), or None. The
    /// block kept the longest is freed when none fits (it is too small for what is made
    /// now), so the pool follows the size of the batches.
    fn pick(&self, len: usize) -> Option<Vec<u8>> {
        let (fit, stale) = {
            let mut kept = self.kept()?;
            let best = kept
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            match best {
                Some(i) => (Some(kept.swap_remove(i)), None),
                None if !kept.is_empty() => (None, Some(kept.remove(0))),
                None => (None, None),
            }
        };
        drop(stale); // outside the lock
        fit
    }

    /// An empty block with room for at least `len` bytes: a kept one, else a new one
    /// with a quarter more room (the next batch may be a bit bigger).
    pub fn take(&self, len: usize) -> Vec<u8> {
        match self.pick(len) {
            Some(mut block) => {
                block.clear();
                block
            }
            None => Vec::with_capacity(len.saturating_add(len / 4)),
        }
    }

    /// A block of exactly `len` bytes for a caller that overwrites all of them: a kept
    /// block keeps what it held (nothing is zeroed but what it grows by), a new one is
    /// zeroed, with a quarter more room.
    pub fn take_filled(&self, len: usize) -> Vec<u8> {
        let mut block = self
            .pick(len)
            .unwrap_or_else(|| Vec::with_capacity(len.saturating_add(len / 4)));
        if block.len() >= len {
            block.truncate(len);
        } else {
            block.resize(len, 0);
        }
        block
    }

    /// Gives a block back for reuse; freed instead when the pool is full.
    pub fn give(&self, block: Vec<u8>) {
        if block.capacity() == 0 {
            return;
        }
        let refused = {
            let Some(mut kept) = self.kept() else {
                return; // freed here
            };
            let bytes: usize = kept.iter().map(Vec::capacity).sum();
            if kept.len() < KEPT_BLOCKS && bytes.saturating_add(block.capacity()) <= KEPT_BYTES {
                kept.push(block);
                None
            } else {
                Some(block)
            }
        };
        drop(refused); // outside the lock
    }

    /// Bytes of the blocks kept for reuse.
    pub fn kept_bytes(&self) -> usize {
        self.kept()
            .map_or(0, |kept| kept.iter().map(Vec::capacity).sum())
    }
}

/// A block taken from a pool, given back to it when dropped.
#[derive(Debug)]
pub struct Pooled {
    data: Vec<u8>,
    pool: Arc<BlockPool>,
}

impl Pooled {
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

/// Copies the bytes values of `columns` ([`Values::Spans`] into `record(i)`) into one
/// block from `pool`, and turns each span into the value's place in the block (as if
/// every record started at 0 of the block).
pub fn gather_spans<'r>(
    columns: &mut [DecodedColumn],
    record: impl Fn(usize) -> &'r [u8],
    pool: &Arc<BlockPool>,
) -> Pooled {
    let total: usize = columns
        .iter()
        .map(|c| match &c.values {
            Values::Spans(spans) => spans.iter().map(|(a, b)| b - a).sum(),
            _ => 0,
        })
        .sum();
    let mut block = pool.take(total);
    for column in columns.iter_mut() {
        let Values::Spans(spans) = &mut column.values else {
            continue;
        };
        for (i, rows) in column.splits.windows(2).enumerate() {
            let bytes = record(i);
            for span in &mut spans[rows[0]..rows[1]] {
                let start = block.len();
                block.extend_from_slice(&bytes[span.0..span.1]);
                *span = (start, block.len());
            }
        }
    }
    Pooled {
        data: block,
        pool: Arc::clone(pool),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_given_back_is_taken_again_without_a_new_allocation() {
        let pool = BlockPool::new();
        let mut a = pool.take(1000);
        a.extend_from_slice(&[7; 1000]);
        let ptr = a.as_ptr();
        pool.give(a);
        assert!(pool.kept_bytes() >= 1000);
        let b = pool.take(900);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.is_empty());
        assert_eq!(pool.kept_bytes(), 0);
    }

    #[test]
    fn too_small_blocks_make_way_and_the_pool_stays_bounded() {
        let pool = BlockPool::new();
        pool.give(Vec::with_capacity(10));
        let big = pool.take(100);
        assert!(big.capacity() >= 100);
        assert_eq!(pool.kept_bytes(), 0, "the too-small block was freed");
        for _ in 0..KEPT_BLOCKS + 5 {
            pool.give(Vec::with_capacity(8));
        }
        assert_eq!(pool.kept().map(|k| k.len()), Some(KEPT_BLOCKS));
        pool.give(Vec::with_capacity(KEPT_BYTES));
        assert!(pool.kept_bytes() <= KEPT_BYTES);
    }

    #[test]
    fn in_another_process_the_pool_is_left_alone_even_when_its_lock_is_held() {
        // A forked child's view: the pool made by another process, its lock held by a
        // thread that (in a real child) does not exist.
        let pool = Arc::new(BlockPool::owned_by(std::process::id().wrapping_add(1)));
        pool.kept.lock().unwrap().push(vec![1; 64]);
        let held = pool.kept.lock().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let other = Arc::clone(&pool);
        std::thread::spawn(move || {
            let block = other.take(100);
            let filled = other.take_filled(10);
            other.give(block);
            done.send((filled, other.kept_bytes())).unwrap();
        });
        let (filled, kept) = finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the pool waited for a lock that no thread will release");
        assert_eq!(filled, vec![0; 10], "a new block, not the kept one");
        assert_eq!(kept, 0);
        drop(held);
        assert_eq!(
            pool.kept.lock().unwrap().len(),
            1,
            "nothing taken or given back"
        );
    }

    #[test]
    fn spans_are_gathered_in_order_and_rebased() {
        let records: [&[u8]; 2] = [b"xxabcyy", b"hello"];
        let mut columns = vec![
            DecodedColumn {
                values: Values::Spans(vec![(2, 5), (0, 1)]),
                splits: vec![0, 1, 2],
            },
            DecodedColumn {
                values: Values::Int64(vec![1, 2]),
                splits: vec![0, 1, 2],
            },
            DecodedColumn {
                values: Values::Spans(vec![(1, 3)]),
                splits: vec![0, 0, 1],
            },
        ];
        let pool = Arc::new(BlockPool::new());
        let block = gather_spans(&mut columns, |i| records[i], &pool);
        assert_eq!(block.data(), b"abchel");
        drop(block);
        assert!(
            pool.kept_bytes() >= 6,
            "a dropped block goes back to its pool"
        );
        assert_eq!(columns[0].values, Values::Spans(vec![(0, 3), (3, 4)]));
        assert_eq!(columns[2].values, Values::Spans(vec![(4, 6)]));
    }
}
