//! A ZIP archive of stored (uncompressed) files: how the page hands over a folder, such as a
//! training recipe, as one download. The files are small text and a little safetensors, so a
//! deflate encoder would not pay for itself; timestamps are fixed (1980-01-01) so the same files
//! give the same archive. No ZIP64: an archive over 4 GiB or 65,535 files is refused.

use crate::error::{Code, Error, Result};

/// The archive of `files` (`(path, bytes)`, `/`-separated paths), in the order given.
pub fn stored(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let too_big = || {
        Error::new(
            Code::Internal,
            "the archive would be over 4 GiB or 65,535 files, which a plain ZIP cannot hold",
        )
    };
    let count = u16::try_from(files.len()).map_err(|_| too_big())?;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = u32::try_from(out.len()).map_err(|_| too_big())?;
        let size = u32::try_from(data.len()).map_err(|_| too_big())?;
        let name_len = u16::try_from(name.len()).map_err(|_| too_big())?;
        let crc = crc32(data);
        // Fields shared by the local header and the central directory entry: version needed
        // 2.0, flags (bit 11: the name is UTF-8), method 0 (stored), time, date, CRC, sizes.
        let mut common = Vec::with_capacity(26);
        for v in [20u16, 0x0800, 0, 0, DOS_DATE] {
            common.extend(v.to_le_bytes());
        }
        for v in [crc, size, size] {
            common.extend(v.to_le_bytes());
        }
        common.extend(name_len.to_le_bytes());
        common.extend(0u16.to_le_bytes()); // extra field length

        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend(&common);
        out.extend(name.as_bytes());
        out.extend(data);

        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // made by: 2.0
        central.extend(&common);
        for v in [0u16, 0, 0] {
            central.extend(v.to_le_bytes()); // comment length, disk, internal attributes
        }
        central.extend(0u32.to_le_bytes()); // external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let directory_at = u32::try_from(out.len()).map_err(|_| too_big())?;
    let directory_len = u32::try_from(central.len()).map_err(|_| too_big())?;
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, count, count] {
        out.extend(v.to_le_bytes());
    }
    out.extend(directory_len.to_le_bytes());
    out.extend(directory_at.to_le_bytes());
    out.extend(0u16.to_le_bytes()); // comment length
    Ok(out)
}

/// 1980-01-01 in MS-DOS date format (the earliest a ZIP can say).
const DOS_DATE: u16 = (1 << 5) | 1;

/// CRC-32 (IEEE 802.3, reflected), as ZIP checks it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> usize {
        u16::from_le_bytes([b[at], b[at + 1]]) as usize
    }

    fn u32_at(b: &[u8], at: usize) -> usize {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
    }

    #[test]
    fn crc_is_the_standard_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// Read back through the central directory, as an unzip tool does.
    #[test]
    fn the_directory_finds_every_file_with_its_bytes() {
        let files = vec![
            ("a/job.json".to_string(), b"{\"x\": 1}\n".to_vec()),
            ("b.bin".to_string(), (0..=255u8).collect()),
            ("empty".to_string(), Vec::new()),
        ];
        let zip = stored(&files).unwrap();
        let end = zip.len() - 22;
        assert_eq!(u32_at(&zip, end), 0x0605_4b50);
        assert_eq!(u16_at(&zip, end + 10), 3);
        let mut at = u32_at(&zip, end + 16);
        for (name, data) in &files {
            assert_eq!(u32_at(&zip, at), 0x0201_4b50);
            assert_eq!(u16_at(&zip, at + 10), 0, "stored");
            assert_eq!(u32_at(&zip, at + 16), crc32(data) as usize);
            assert_eq!(u32_at(&zip, at + 24), data.len());
            let name_len = u16_at(&zip, at + 28);
            assert_eq!(&zip[at + 46..at + 46 + name_len], name.as_bytes());
            let local = u32_at(&zip, at + 42);
            assert_eq!(u32_at(&zip, local), 0x0403_4b50);
            let start = local + 30 + u16_at(&zip, local + 26) + u16_at(&zip, local + 28);
            assert_eq!(&zip[start..start + data.len()], data.as_slice());
            at += 46 + name_len;
        }
        assert_eq!(at, end, "the directory ends where the end record starts");
        assert_eq!(
            stored(&files).unwrap(),
            zip,
            "the same files, the same archive"
        );
    }
}
