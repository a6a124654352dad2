//! `--serial-file`: a bound on the SOA serials this process has served, kept on disk so that
//! serials never go backwards across restarts, even after bursts that pushed them ahead of
//! the clock. Secondaries and caches compare serials (RFC 1982): one that goes backwards
//! freezes them on the old zone.
//!
//! The file holds a *reservation*: a serial at least as high as any served. A serial above the
//! reservation is served only after a higher one is durably on disk (temporary file, fsync,
//! rename, fsync of the directory), so a crash at any moment leaves a file that bounds
//! everything served. Reserving [`RESERVE`] ahead means a write every few hundred publishes,
//! not one per publish. A restart starts above the reservation.
//!
//! An unreadable or damaged file is not fatal: the server warns and takes the clock.

use std::io::Write;
use std::path::{Path, PathBuf};

/// How far ahead of the serial being published a reservation reaches.
pub const RESERVE: u32 = 600;

/// Why the serial file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SerialFileError {
    #[error("serial file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serial file {}: not a serial number (damaged or truncated)", path.display())]
    NotASerial { path: PathBuf },
}

/// Read the reservation; a missing file is "none".
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

/// Write `serial` durably: a temporary file beside `path`, fsync, rename over `path`, fsync
/// of the directory (the rename itself must survive a power loss).
pub fn write(path: &Path, serial: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "serial".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(format!("{serial}\n").as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// The reservation to write before serving `serial`, if the current one does not cover it.
pub fn reservation_for(serial: u32, reserved: Option<u32>) -> Option<u32> {
    match reserved {
        Some(r) if r >= serial => None,
        _ => Some(serial.saturating_add(RESERVE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("serial");
        assert!(matches!(read(&p), Ok(None)));
        write(&p, 1_795_000_123).expect("write");
        assert!(matches!(read(&p), Ok(Some(1_795_000_123))));
        assert!(
            !dir.path().join(".serial.tmp").exists(),
            "no temporary file left"
        );
        std::fs::write(&p, "17950").expect("write");
        std::fs::write(&p, "").expect("truncate");
        assert!(matches!(read(&p), Err(SerialFileError::NotASerial { .. })));
    }

    #[test]
    fn reservations_run_ahead_and_are_renewed_only_when_passed() {
        assert_eq!(reservation_for(1000, None), Some(1600));
        assert_eq!(reservation_for(1000, Some(1600)), None);
        assert_eq!(reservation_for(1600, Some(1600)), None);
        assert_eq!(reservation_for(1601, Some(1600)), Some(2201));
    }
}
