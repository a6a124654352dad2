//! The last published SOA serial, kept on disk so that it never goes backwards across
//! restarts, even after bursts that pushed it ahead of the clock.

use std::path::{Path, PathBuf};

/// Read the last serial; a missing or unreadable file is "none" (logged by the caller).
pub fn read(path: &Path) -> Result<Option<u32>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("{}: not a serial number", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
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
        assert_eq!(read(&p), Ok(None));
        write(&p, 1_795_000_123).expect("write");
        assert_eq!(read(&p), Ok(Some(1_795_000_123)));
        std::fs::write(&p, "garbage").expect("write");
        assert!(read(&p).is_err());
    }
}
