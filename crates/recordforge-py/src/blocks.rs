//! `BlockPool`: the reused buffers behind `batches(copy=False)`. A decoder thread copies
//! a batch's bytes values into a block of the pool; the batch's values are read-only
//! memoryviews of it, and the block goes back to the pool when the last of them is gone.

use std::sync::Arc;

use numpy::ndarray::ArrayView1;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;
use recordforge_core::blocks::BlockPool as CorePool;

/// Buffers reused across the batches of ``BatchReader(..., blocks=)``, and across
/// readers (a dataset keeps one for its epochs). A block is reused only once nothing
/// refers to it (every view of it holds a reference), so a view stays valid, and
/// unchanged, for as long as it is kept.
#[pyclass(module = "recordforge._core", frozen)]
pub struct BlockPool {
    pub(crate) pool: Arc<CorePool>,
}

#[pymethods]
impl BlockPool {
    #[new]
    fn new() -> Self {
        BlockPool {
            pool: Arc::new(CorePool::new()),
        }
    }

    /// Bytes of the blocks kept for the next batches.
    #[getter]
    fn kept_bytes(&self) -> usize {
        self.pool.kept_bytes()
    }
}

/// The owner of one block while views of it live: gives it back to its pool when freed.
#[pyclass(module = "recordforge._core", frozen)]
struct Block {
    data: Vec<u8>,
    pool: Arc<CorePool>,
}

impl Drop for Block {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

/// A read-only memoryview of all of `data`, which goes back to `pool` once no view of
/// it is left.
pub(crate) fn block_view<'py>(
    py: Python<'py>,
    data: Vec<u8>,
    pool: &Arc<CorePool>,
) -> PyResult<Bound<'py, PyMemoryView>> {
    let owner = Bound::new(
        py,
        Block {
            data,
            pool: Arc::clone(pool),
        },
    )?;
    let bytes = ArrayView1::from(&owner.get().data[..]);
    // SAFETY: the array's base is `owner`, which owns `data` and never changes it while
    // alive (it is frozen; the Vec is only taken in `Drop`), so the memory stays valid
    // and unmoved for the array's life.
    let array = unsafe { PyArray1::borrow_from_array(&bytes, owner.clone().into_any()) };
    array.getattr("flags")?.setattr("writeable", false)?;
    PyMemoryView::from(array.as_any())
}
