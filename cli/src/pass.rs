//! The first full pass over the weights that every method of the bench is
//! timed with, and that `load` makes: a sum of the bytes as u64 words.

/// Sums `len` bytes at `p` as little-endian u64 words (the "first full
/// pass" every method is timed with), plus the tail bytes.
///
/// # Safety
/// `p` must be readable for `len` bytes and 8-byte aligned.
pub(crate) unsafe fn sum(p: *const u8, len: usize) -> u64 {
    // SAFETY: the caller guarantees `len` readable, aligned bytes.
    let words = unsafe { std::slice::from_raw_parts(p.cast::<u64>(), len / 8) };
    let mut acc = [0u64; 4];
    let mut chunks = words.chunks_exact(4);
    for c in &mut chunks {
        for i in 0..4 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    let mut s = acc.iter().fold(0u64, |a, b| a.wrapping_add(*b));
    for w in chunks.remainder() {
        s = s.wrapping_add(*w);
    }
    for i in (len / 8 * 8)..len {
        // SAFETY: i < len.
        s = s.wrapping_add(u64::from(unsafe { *p.add(i) }));
    }
    s
}
