//! The packed-weights cache file, version 1.
//!
//! ```text
//! 0            header (64 bytes), then the identity; padded to a page
//! page-aligned entry data, one region per entry, each page-aligned
//! index_offset index: one record per entry (40 bytes + name, 8-aligned)
//! ```
//!
//! The header carries a CRC of itself and the identity, the index's CRC,
//! the file's length (so truncation is seen at once) and the number of
//! entries; each index record carries its entry's CRC. Every field is
//! checked before anything in the file is used: a file that fails any
//! check is a reason to rebuild, never something to trust.

use std::collections::HashMap;

/// `OMWCACH` + format version 1.
pub const MAGIC: [u8; 8] = *b"OMWCACH1";
/// The on-disk format version this library writes and reads.
pub const FORMAT: u32 = 1;
/// Fixed part of the header.
pub const HEADER_LEN: usize = 64;
/// Longest identity accepted (pass a hash for anything longer).
pub const MAX_IDENTITY: usize = 2048;
/// Fixed part of an index record.
const RECORD_LEN: usize = 40;

/// CRC-32 (IEEE) of `bytes`.
pub fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Where the entries start: the header and identity, padded to `page`.
pub fn data_start(identity_len: usize, page: usize) -> usize {
    (HEADER_LEN + identity_len).div_ceil(page) * page
}

/// One entry as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The entry's name.
    pub name: String,
    /// Its byte offset in the file (page-aligned).
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
    /// CRC-32 of its bytes.
    pub crc: u32,
}

/// The index's bytes for `records`.
pub fn encode_index(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let name = r.name.as_bytes();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&r.offset.to_le_bytes());
        out.extend_from_slice(&r.size.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&r.crc.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(name);
        out.resize(out.len().div_ceil(8) * 8, 0);
    }
    out
}

/// The header's bytes (fixed part + identity, unpadded).
pub fn encode_header(
    identity: &[u8],
    index_offset: u64,
    index: &[u8],
    entries: u64,
    file_len: u64,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN + identity.len());
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&FORMAT.to_le_bytes());
    h.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h.extend_from_slice(&(identity.len() as u32).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&index_offset.to_le_bytes());
    h.extend_from_slice(&(index.len() as u64).to_le_bytes());
    h.extend_from_slice(&entries.to_le_bytes());
    h.extend_from_slice(&file_len.to_le_bytes());
    h.extend_from_slice(&crc(index).to_le_bytes());
    // The header CRC covers everything before it and the identity.
    let mut covered = h.clone();
    covered.extend_from_slice(identity);
    h.extend_from_slice(&crc(&covered).to_le_bytes());
    debug_assert_eq!(h.len(), HEADER_LEN);
    h.extend_from_slice(identity);
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks a whole cache file (`file` is its bytes) against `identity` and
/// returns its entries by name, or why it cannot be used.
pub fn validate(
    file: &[u8],
    identity: &[u8],
    page: usize,
) -> Result<HashMap<String, Record>, String> {
    if file.len() < HEADER_LEN {
        return Err(format!("{} bytes is too short for a header", file.len()));
    }
    if file[..7] != MAGIC[..7] {
        return Err("not a cache file (bad magic)".into());
    }
    let format = u32_at(file, 8);
    if file[..8] != MAGIC || format != FORMAT {
        return Err(format!(
            "written by another cache format (version {format}, this library reads {FORMAT})"
        ));
    }
    let id_len = u32_at(file, 16) as usize;
    if u32_at(file, 12) as usize != HEADER_LEN || id_len > MAX_IDENTITY {
        return Err("corrupt header (lengths)".into());
    }
    let index_offset = u64_at(file, 24);
    let index_len = u64_at(file, 32);
    let entries = u64_at(file, 40);
    let file_len = u64_at(file, 48);
    let index_crc = u32_at(file, 56);
    let header_crc = u32_at(file, 60);
    if file.len() < HEADER_LEN + id_len {
        return Err("truncated in the header".into());
    }
    let mut covered = file[..60].to_vec();
    covered.extend_from_slice(&file[HEADER_LEN..HEADER_LEN + id_len]);
    if crc(&covered) != header_crc {
        return Err("corrupt header (checksum)".into());
    }
    if &file[HEADER_LEN..HEADER_LEN + id_len] != identity {
        return Err("built for another identity".into());
    }
    if file_len != file.len() as u64 {
        return Err(format!(
            "truncated or extended: {} bytes, the header says {file_len}",
            file.len()
        ));
    }
    let start = data_start(id_len, page) as u64;
    let index_end = index_offset
        .checked_add(index_len)
        .ok_or("corrupt header (index)")?;
    if index_offset < start || index_end > file_len {
        return Err("corrupt header (index outside the file)".into());
    }
    let index = &file[index_offset as usize..index_end as usize];
    if crc(index) != index_crc {
        return Err("corrupt index (checksum)".into());
    }
    let mut out = HashMap::new();
    let mut at = 0usize;
    while at < index.len() {
        if index.len() - at < RECORD_LEN {
            return Err("corrupt index (short record)".into());
        }
        let name_len = u32_at(index, at) as usize;
        let offset = u64_at(index, at + 8);
        let size = u64_at(index, at + 16);
        let entry_crc = u32_at(index, at + 32);
        let name_end = at + RECORD_LEN + name_len;
        if name_end > index.len() {
            return Err("corrupt index (name)".into());
        }
        let name = std::str::from_utf8(&index[at + RECORD_LEN..name_end])
            .map_err(|_| "corrupt index (name is not UTF-8)")?
            .to_string();
        let end = offset.checked_add(size).ok_or("corrupt index (size)")?;
        if offset < start || offset % page as u64 != 0 || end > index_offset {
            return Err(format!("corrupt index (entry '{name}' outside the data)"));
        }
        let data = &file[offset as usize..end as usize];
        if crc(data) != entry_crc {
            return Err(format!("corrupt entry '{name}' (checksum)"));
        }
        let record = Record {
            name: name.clone(),
            offset,
            size,
            crc: entry_crc,
        };
        if out.insert(name.clone(), record).is_some() {
            return Err(format!("corrupt index ('{name}' twice)"));
        }
        at = name_end.div_ceil(8) * 8;
    }
    if out.len() as u64 != entries {
        return Err(format!(
            "corrupt index ({} entries, the header says {entries})",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    /// Appends `data` at the next page boundary; its index record.
    fn push(file: &mut Vec<u8>, name: &str, data: &[u8]) -> Record {
        file.resize(file.len().div_ceil(PAGE) * PAGE, 0);
        let r = Record {
            name: name.into(),
            offset: file.len() as u64,
            size: data.len() as u64,
            crc: crc(data),
        };
        file.extend_from_slice(data);
        r
    }

    /// A valid file with two entries, built by hand from the encoders.
    fn sample(identity: &[u8]) -> Vec<u8> {
        let mut file = vec![0u8; data_start(identity.len(), PAGE)];
        let ra = push(&mut file, "a", &[1u8; 100]);
        let rb = push(&mut file, "bé", &[2u8; 5000]);
        let index_offset = file.len().div_ceil(8) * 8;
        file.resize(index_offset, 0);
        let index = encode_index(&[ra, rb]);
        file.extend_from_slice(&index);
        let len = file.len() as u64;
        let header = encode_header(identity, index_offset as u64, &index, 2, len);
        file[..header.len()].copy_from_slice(&header);
        file
    }

    #[test]
    fn a_valid_file_yields_its_entries() {
        let f = sample(b"model-1:pack-3");
        let e = validate(&f, b"model-1:pack-3", PAGE).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e["a"].size, 100);
        assert_eq!(e["bé"].offset % PAGE as u64, 0);
    }

    #[test]
    fn every_kind_of_damage_is_refused() {
        let id = b"model-1:pack-3";
        let good = sample(id);
        assert!(validate(&good, b"model-2:pack-3", PAGE)
            .unwrap_err()
            .contains("another identity"));
        let idx = u64_at(&good, 24) as usize;
        let b_off = validate(&good, id, PAGE).unwrap()["bé"].offset as usize;
        for (what, at) in [
            ("header", 30),
            ("identity", HEADER_LEN + 2),
            ("index", idx + 3),
            ("entry", b_off + 7),
        ] {
            let mut f = good.clone();
            f[at] ^= 0x40;
            assert!(
                validate(&f, id, PAGE).is_err(),
                "flipped byte in {what} accepted"
            );
        }
        let mut version = good.clone();
        version[8] = 2;
        assert!(validate(&version, id, PAGE)
            .unwrap_err()
            .contains("another cache format"));
        for len in [0, 10, HEADER_LEN, good.len() / 2, good.len() - 1] {
            assert!(
                validate(&good[..len], id, PAGE).is_err(),
                "truncated to {len} accepted"
            );
        }
        assert!(
            validate(&vec![0u8; good.len()], id, PAGE).is_err(),
            "zeros accepted"
        );
    }
}
