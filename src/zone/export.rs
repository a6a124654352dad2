//! Zone → RFC 1035 master file text that Knot, NSD and BIND load unchanged.

use std::fmt::Write;

use super::snapshot::ZoneSnapshot;

/// The zone as a master file: `$ORIGIN`, then one fully qualified record per line, SOA first.
pub fn master_file(zone: &ZoneSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "; marathon-dns export of {} serial {}",
        zone.origin(),
        zone.serial()
    );
    let _ = writeln!(out, "$ORIGIN {}", zone.origin());
    for record in zone.records() {
        let _ = writeln!(out, "{record}");
    }
    out
}
