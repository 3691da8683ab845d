//! Fingerprints files so that a receiver can prove it got the bytes that were sent.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::FormatError;

/// The SHA-256 of a file's bytes as lower-case hex.
///
/// The file is streamed in fixed-size chunks, so slides of any size can be hashed in constant
/// memory.
pub fn sha256_file(path: &Path) -> Result<String, FormatError> {
    let mut file = File::open(path).map_err(|e| FormatError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FormatError::io(path, e)),
        };
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
