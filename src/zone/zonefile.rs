//! Static zones from `zones/*.zone` (RFC 1035 master files).

use std::path::{Path, PathBuf};

use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::{ParseError, Parser};

use super::build::SoaTemplate;

/// A zone file that could not be used; names file and line.
#[derive(Debug, thiserror::Error)]
pub enum ZoneFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {error}")]
    Parse {
        path: PathBuf,
        line: usize,
        error: ParseError,
    },
    #[error("{path}: the zone {origin} has no SOA record")]
    NoSoa { path: PathBuf, origin: String },
}

/// One parsed zone file.
#[derive(Debug, Clone)]
pub struct StaticZone {
    pub path: PathBuf,
    pub origin: Name,
    pub soa: Record,
    /// Everything but the SOA.
    pub records: Vec<Record>,
}

impl StaticZone {
    /// The SOA fields as a template for a generated zone.
    pub fn soa_template(&self) -> SoaTemplate {
        match &self.soa.data {
            RData::SOA(s) => SoaTemplate {
                ttl: self.soa.ttl,
                mname: s.mname.clone(),
                rname: s.rname.clone(),
                refresh: s.refresh,
                retry: s.retry,
                expire: s.expire,
            },
            _ => SoaTemplate::default_for(&self.origin),
        }
    }
}

fn parse(text: &str, path: &Path, origin: Option<Name>) -> Result<Vec<Record>, ParseError> {
    let (_, sets) = Parser::new(text, Some(path.to_path_buf()), origin).parse()?;
    Ok(sets
        .into_values()
        .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>())
        .collect())
}

/// The origin implied by the file name (`marathon.local.zone` → `marathon.local.`), used when
/// the file has no `$ORIGIN`.
fn origin_from_path(path: &Path) -> Option<Name> {
    let stem = path.file_stem()?.to_str()?;
    let mut n: Name = stem.parse().ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// Parse one zone file. On error, find the line: the parser reports no positions, so the
/// failing record is the one after the longest prefix of the file that still parses.
pub fn load(path: &Path) -> Result<StaticZone, ZoneFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ZoneFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = origin_from_path(path);
    let records = match parse(&text, path, origin.clone()) {
        Ok(r) => r,
        Err(error) => {
            let lines: Vec<&str> = text.lines().collect();
            let good = (0..lines.len())
                .rev()
                .find(|k| parse(&lines[..*k].join("\n"), path, origin.clone()).is_ok())
                .unwrap_or(0);
            // Skip blank and comment lines after the good prefix.
            let line = (good..lines.len())
                .find(|i| {
                    let t = lines[*i].trim();
                    !t.is_empty() && !t.starts_with(';')
                })
                .unwrap_or(good)
                + 1;
            return Err(ZoneFileError::Parse {
                path: path.to_path_buf(),
                line,
                error,
            });
        }
    };
    let Some(soa) = records
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .cloned()
    else {
        return Err(ZoneFileError::NoSoa {
            path: path.to_path_buf(),
            origin: origin.map(|o| o.to_string()).unwrap_or_default(),
        });
    };
    let origin = soa.name.to_lowercase();
    Ok(StaticZone {
        path: path.to_path_buf(),
        origin,
        soa,
        records: records
            .into_iter()
            .filter(|r| r.record_type() != RecordType::SOA)
            .collect(),
    })
}

/// Every `*.zone` in `dir`, sorted by file name. A missing directory is no zones.
pub fn load_dir(dir: &Path) -> Result<Vec<StaticZone>, ZoneFileError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ZoneFileError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "zone"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn shipped_zone_file_loads() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones");
        let zones = load_dir(&dir).expect("shipped zones load");
        let z = zones
            .iter()
            .find(|z| z.origin.to_ascii() == "marathon.local.")
            .expect("marathon.local");
        assert!(z.records.iter().any(|r| r.record_type() == RecordType::NS));
        assert!(z.records.iter().any(|r| r.record_type() == RecordType::A));
    }

    #[test]
    fn bad_line_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "example.test.zone",
            "$ORIGIN example.test.\n$TTL 5\n@ IN SOA ns1 hostmaster ( 1 60 30 3600 5 )\n@ IN NS ns1\n\nns1 IN A 10.0.0.1\nbad IN A 999.1.1.1\n",
        );
        let err = load(&p).expect_err("bad address");
        let text = err.to_string();
        assert!(text.contains("example.test.zone:7:"), "{text}");
    }

    #[test]
    fn missing_soa_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "x.test.zone",
            "$ORIGIN x.test.\n$TTL 5\nns1 IN A 10.0.0.1\n",
        );
        assert!(matches!(load(&p), Err(ZoneFileError::NoSoa { .. })));
    }
}
