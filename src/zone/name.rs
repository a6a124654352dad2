//! Domain names in uncompressed wire form (length-prefixed labels, root label included), the
//! zone's compact representation: one shared allocation per name, hashed and compared as
//! bytes. Owner names are lower-cased so that lookups are byte comparisons.

use std::sync::Arc;

use hickory_proto::rr::Name;

/// A name in wire form, shared between the node that owns it and the records that point at it.
pub type WireName = Arc<[u8]>;

/// Longest name in wire form (RFC 1035 §2.3.4).
pub const MAX_WIRE: usize = 255;

/// `name` in wire form, lower-cased.
pub fn lower(name: &Name) -> WireName {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        // hickory keeps labels ≤ 63 octets, so the length fits a byte.
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into()
}

/// `name` in wire form, case kept (data inside records, e.g. a CNAME target from a zone file).
pub fn exact(name: &Name) -> WireName {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.into()
}

/// A presentation-form ASCII name (`web.prod.marathon.local`, no escapes, trailing dot
/// optional) in lower-cased wire form; `None` if a label is empty or too long.
pub fn parse_ascii(s: &str) -> Option<WireName> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() + 2);
    if !s.is_empty() {
        for label in s.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= MAX_WIRE).then(|| out.into())
}

/// The hickory name of a wire-form name (for the slow path, export and logs).
pub fn to_name(wire: &[u8]) -> Name {
    let labels = label_starts(wire).map(|s| &wire[s + 1..s + 1 + usize::from(wire[s])]);
    let mut name = Name::from_labels(labels).unwrap_or_else(|_| Name::root());
    name.set_fqdn(true);
    name
}

/// Byte offsets at which each label of `wire` starts (the root label excluded).
pub fn label_starts(wire: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = usize::from(*wire.get(at)?);
        if len == 0 {
            return None;
        }
        let start = at;
        at += 1 + len;
        Some(start)
    })
}

/// The name one label up, or `None` at the root.
pub fn parent(wire: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*wire.first()?);
    if len == 0 {
        return None;
    }
    wire.get(1 + len..)
}

/// Whether `name` is `origin` or below it (label-aligned suffix, both lower-cased).
pub fn is_within(name: &[u8], origin: &[u8]) -> bool {
    if name.len() < origin.len() || !name.ends_with(origin) {
        return false;
    }
    let cut = name.len() - origin.len();
    label_starts(name).any(|s| s == cut) || cut == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn round_trips_and_relations() {
        let n = Name::from_str("Web.Prod.marathon.local.").expect("name");
        let w = lower(&n);
        assert_eq!(&w[..5], b"\x03web\x04");
        assert_eq!(to_name(&w).to_ascii(), "web.prod.marathon.local.");
        assert_eq!(
            parse_ascii("web.prod.marathon.local").as_deref(),
            Some(&w[..])
        );
        let origin = parse_ascii("marathon.local.").expect("origin");
        assert!(is_within(&w, &origin));
        assert!(is_within(&origin, &origin));
        assert!(!is_within(
            &parse_ascii("xmarathon.local").expect("n"),
            &origin
        ));
        assert_eq!(
            parent(&w).map(|p| to_name(p).to_ascii()).as_deref(),
            Some("prod.marathon.local.")
        );
        assert_eq!(label_starts(&w).count(), 4);
        assert_eq!(parse_ascii("").as_deref(), Some(&[0u8][..]));
        assert_eq!(parse_ascii("a..b"), None);
    }
}
