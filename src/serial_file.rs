//! The last published SOA serial, kept on disk so that it never goes backwards across
//! restarts, even after bursts that pushed it ahead of the clock.

use std::path::{Path, PathBuf};

/// Why the serial file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SerialFileError {
    #[error("serial file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serial file {}: not a serial number", path.display())]
    NotASerial { path: PathBuf },
}

/// Read the last serial; a missing file is "none".
pub fn read(path: &Path) -> Result<Option<u32>, SerialFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| SerialFileError::NotASerial {
                path: path.to_path_buf(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SerialFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write atomically (temporary file, then rename), so a crash never leaves half a number.
pub fn write(path: &Path, serial: u32) -> std::io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("tmp");
    std::fs::write(&tmp, format!("{serial}\n"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("serial");
        assert!(matches!(read(&p), Ok(None)));
        write(&p, 1_795_000_123).expect("write");
        assert!(matches!(read(&p), Ok(Some(1_795_000_123))));
        std::fs::write(&p, "garbage").expect("write");
        assert!(matches!(read(&p), Err(SerialFileError::NotASerial { .. })));
    }
}
