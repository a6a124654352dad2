//! Zone → RFC 1035 master file text that Knot, NSD and BIND load unchanged.

use std::fmt::Write;

use hickory_proto::rr::{RData, Record};

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
        let _ = writeln!(out, "{}", presentation(&record));
    }
    out
}

/// A `<character-string>` in presentation form (RFC 1035 §5.1): quoted, `"` and `\` escaped,
/// anything unprintable as `\DDD`.
fn character_string(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in bytes {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(char::from(*b));
            }
            0x20..=0x7e => s.push(char::from(*b)),
            _ => {
                let _ = write!(s, "\\{b:03}");
            }
        }
    }
    s.push('"');
    s
}

/// One record as a master-file line. hickory's `Display` is right for the record types here
/// except those holding character-strings, which it prints unquoted.
fn presentation(record: &Record) -> String {
    let rdata = match &record.data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| character_string(s))
            .collect::<Vec<_>>()
            .join(" "),
        RData::HINFO(h) => format!("{} {}", character_string(&h.cpu), character_string(&h.os)),
        other => other.to_string(),
    };
    format!(
        "{} {} {} {} {}",
        record.name,
        record.ttl,
        record.dns_class,
        record.record_type(),
        rdata
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::TXT;
    use std::str::FromStr;

    #[test]
    fn txt_strings_are_quoted_and_escaped() {
        let r = Record::from_rdata(
            Name::from_str("t.example.").expect("name"),
            30,
            RData::TXT(TXT::new(vec![
                "hello world".into(),
                "a;b\"c\\".into(),
                "\u{7}".into(),
            ])),
        );
        assert_eq!(
            presentation(&r),
            r#"t.example. 30 IN TXT "hello world" "a;b\"c\\" "\007""#
        );
    }
}
