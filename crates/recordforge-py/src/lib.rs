//! PyO3 bindings of recordforge-core: type conversion, error mapping and GIL release only.

use pyo3::prelude::*;

mod access;
mod arena;
mod blocks;
mod coco;
mod columns;
mod convert;
mod csvscan;
mod decode;
mod errors;
mod image;
mod infer;
mod io;
mod json;
mod pyfile;
mod reader;
mod rows;
mod verify;
mod walk;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    recordforge_core::crc::set_up();
    m.add_function(wrap_pyfunction!(convert::crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(convert::masked_crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(convert::crc32c_combine, m)?)?;
    m.add_function(wrap_pyfunction!(convert::frames_crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(convert::encode_example, m)?)?;
    m.add_function(wrap_pyfunction!(convert::decode_example, m)?)?;
    m.add_function(wrap_pyfunction!(convert::encode_sequence_example, m)?)?;
    m.add_function(wrap_pyfunction!(convert::decode_sequence_example, m)?)?;
    m.add_function(wrap_pyfunction!(columns::encode_columns, m)?)?;
    m.add_function(wrap_pyfunction!(columns::encode_record_batch, m)?)?;
    m.add_class::<columns::RecordBatch>()?;
    m.add_function(wrap_pyfunction!(decode::decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(decode::count_features, m)?)?;
    m.add_class::<access::RecordFile>()?;
    m.add_class::<reader::BatchReader>()?;
    m.add_function(wrap_pyfunction!(reader::take_records, m)?)?;
    m.add_class::<arena::Arena>()?;
    m.add_class::<blocks::BlockPool>()?;
    m.add_class::<reader::Shuffler>()?;
    m.add_class::<rows::RowReader>()?;
    m.add_function(wrap_pyfunction!(io::read_records, m)?)?;
    m.add_function(wrap_pyfunction!(io::scan_records, m)?)?;
    m.add_function(wrap_pyfunction!(io::frame_records, m)?)?;
    m.add_class::<io::TFRecordWriter>()?;
    m.add_class::<io::RecordIterator>()?;
    m.add_function(wrap_pyfunction!(verify::verify_file, m)?)?;
    m.add_class::<verify::VerifiedFile>()?;
    m.add_class::<infer::SchemaSample>()?;
    m.add_class::<walk::RecordWalker>()?;
    m.add_class::<csvscan::CsvRowScanner>()?;
    m.add_class::<csvscan::CsvPartScanner>()?;
    m.add_class::<csvscan::PyPartCutter>()?;
    m.add_class::<walk::WalkSpan>()?;
    m.add_function(wrap_pyfunction!(walk::detect_compression, m)?)?;
    m.add(
        "DEFAULT_MAX_RECORD_BYTES",
        recordforge_core::DEFAULT_MAX_RECORD_BYTES,
    )?;
    m.add_function(wrap_pyfunction!(verify::file_crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(json::json_loads, m)?)?;
    m.add_function(wrap_pyfunction!(coco::coco_polygons, m)?)?;
    m.add_function(wrap_pyfunction!(coco::coco_plain_annotation, m)?)?;
    m.add_function(wrap_pyfunction!(image::resize_bilinear, m)?)?;
    Ok(())
}
