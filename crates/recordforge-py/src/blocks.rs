//! `BlockPool`: the reused buffers behind `batches(copy=False)`. A decoder thread copies
//! a batch's bytes values into a block of the pool; the batch's values are read-only
//! memoryviews of it, and the block goes back to the pool when the last of them is gone.

use std::sync::Arc;

use numpy::ndarray::ArrayView1;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;
use recordforge_core::blocks::{BlockPool as CorePool, Pooled};

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

/// The owner of one block while views of it live: it goes back to its pool when this
/// is freed.
#[pyclass(module = "recordforge._core", frozen)]
struct Block {
    block: Pooled,
}

/// A read-only memoryview of all of `block`, which goes back to its pool once no view
/// of it is left.
pub(crate) fn block_view<'py>(
    py: Python<'py>,
    block: Pooled,
) -> PyResult<Bound<'py, PyMemoryView>> {
    let owner = Bound::new(py, Block { block })?;
    let bytes = ArrayView1::from(owner.get().block.data());
    // SAFETY: the array's base is `owner`, which owns the block and never changes it
    // while alive (it is frozen; the memory is only given back in `Drop`), so the memory
    // stays valid and unmoved for the array's life.
    let array = unsafe { PyArray1::borrow_from_array(&bytes, owner.clone().into_any()) };
    array.getattr("flags")?.setattr("writeable", false)?;
    PyMemoryView::from(array.as_any())
}
