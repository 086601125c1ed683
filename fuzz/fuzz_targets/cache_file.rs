//! The packed-weights cache file parser (`cache::format::validate`): a
//! cache file on disk is untrusted input. Any bytes must give entries that
//! lie inside the file and match their checksums, or a reason; never a
//! panic, never a read outside the file.
//!
//! Most random files fail the checksums at once, so half the inputs (first
//! byte odd) have their checksums and lengths made right before parsing:
//! the fuzzer then reaches the index and the entries. The page size is
//! small (64) so that small inputs have room for entries.

#![no_main]

use libfuzzer_sys::fuzz_target;
use om_constants::cache::format::{crc, validate, HEADER_LEN};

const PAGE: usize = 64;
const IDENTITY: &[u8] = b"fuzz";

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Sets the file length, every index record's entry checksum, the index
/// checksum and the header checksum from the bytes as they are, wherever
/// the fields they depend on point inside the file.
fn fix(file: &mut [u8]) -> Option<()> {
    if file.len() < HEADER_LEN {
        return None;
    }
    let len = file.len() as u64;
    file.get_mut(48..56)?.copy_from_slice(&len.to_le_bytes());
    let id_len = le32(file, 16)? as usize;
    let (offset, index_len) = (le64(file, 24)? as usize, le64(file, 32)? as usize);
    let index_end = offset.checked_add(index_len).filter(|e| *e <= file.len());
    if let Some(end) = index_end {
        let mut at = offset;
        while at + 40 <= end {
            let name_len = le32(file, at)? as usize;
            let (o, s) = (le64(file, at + 8)? as usize, le64(file, at + 16)? as usize);
            if let Some(data) = o.checked_add(s).and_then(|e| file.get(o..e)) {
                let c = crc(data);
                put32(file, at + 32, c);
            }
            at = (at + 40 + name_len).div_ceil(8) * 8;
        }
        let c = crc(&file[offset..end]);
        put32(file, 56, c);
    }
    let mut covered = file.get(..60)?.to_vec();
    covered.extend_from_slice(file.get(HEADER_LEN..HEADER_LEN.checked_add(id_len)?)?);
    let c = crc(&covered);
    put32(file, 60, c);
    Some(())
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut file = rest.to_vec();
    if mode & 1 == 1 {
        let _ = fix(&mut file);
    }
    if let Ok(entries) = validate(&file, IDENTITY, PAGE) {
        for (name, r) in &entries {
            assert_eq!(&r.name, name);
            let end = r.offset.checked_add(r.size).expect("checked by validate");
            assert!(end <= file.len() as u64, "entry '{name}' past the end");
            assert_eq!(r.offset % PAGE as u64, 0, "entry '{name}' not page-aligned");
            let data = &file[r.offset as usize..end as usize];
            assert_eq!(
                crc(data),
                r.crc,
                "entry '{name}' served with a wrong checksum"
            );
        }
    }
});
