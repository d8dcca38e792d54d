//! Work split into contiguous parts on scoped threads.

/// `f(part)` for `parts` contiguous parts of `items` (sizes differing by at most one
/// chunk), each on its own scoped thread; the results in order, with each part's
/// first index. A panic in a part is resumed on the calling thread.
pub(crate) fn map_parts<'a, I: Sync, T: Send>(
    items: &'a [I],
    parts: usize,
    f: impl Fn(&'a [I]) -> T + Sync,
) -> Vec<(usize, T)> {
    let per_part = items.len().div_ceil(parts.max(1)).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per_part)
            .enumerate()
            .map(|(k, part)| (k * per_part, s.spawn(move || f(part))))
            .collect();
        handles
            .into_iter()
            .map(|(start, h)| {
                let out = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                (start, out)
            })
            .collect()
    })
}
