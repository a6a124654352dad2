//! Naming rules: Marathon app ids, ports and tasks → DNS labels (the public contract, see the
//! README's "Naming rules"). Pure functions, no I/O.

/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// Longest name in presentation form without the trailing dot.
const MAX_NAME: usize = 253;

/// A stable 5-character base32 hash (FNV-1a 32-bit); stable across versions and platforms.
pub fn short_hash(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut h: u32 = 0x811c_9dc5;
    for b in s.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (0..5)
        .map(|i| char::from(ALPHABET[((h >> (i * 5)) & 31) as usize]))
        .collect()
}

/// One label from arbitrary text: lower-case, `.` and anything outside `[a-z0-9-]` become
/// `-`, and labels over 63 octets are cut to 57 plus `-` and a hash of the whole text.
pub fn label(segment: &str) -> String {
    let mapped: String = segment
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    if mapped.len() <= MAX_LABEL {
        return mapped;
    }
    format!("{}-{}", &mapped[..57], short_hash(segment))
}

/// An SRV service label, `_` + [`label`], shortened to 63 octets like any label:
/// `_` + 56 octets + `-` + hash.
pub fn service_label(name: &str) -> String {
    let l = label(name);
    if l.len() < MAX_LABEL {
        return format!("_{l}");
    }
    format!("_{}-{}", &l[..56], short_hash(name))
}

/// Labels of an app id, leaf first: `/prod/web` → `["web", "prod"]`.
pub fn app_labels(app_id: &str) -> Vec<String> {
    app_id
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(label)
        .collect()
}

/// Join labels and the zone into a name, or `None` if it exceeds 253 octets.
pub fn join(labels: &[String], zone: &str) -> Option<String> {
    let mut name = labels.join(".");
    if !name.is_empty() {
        name.push('.');
    }
    name.push_str(zone.trim_end_matches('.'));
    (name.len() <= MAX_NAME).then_some(name)
}

/// `/prod/web` → `web.prod.<zone>`.
pub fn app_name(app_id: &str, zone: &str) -> Option<String> {
    join(&app_labels(app_id), zone)
}

/// The short SRV name for an app's first port of a protocol:
/// `/prod/web` → `_web._tcp.prod.<zone>` (Mesos-DNS shape).
pub fn app_srv_name(app_id: &str, proto_label: &str, zone: &str) -> Option<String> {
    let mut labels = app_labels(app_id);
    if labels.is_empty() {
        return None;
    }
    labels.remove(0);
    let leaf = app_id.rsplit('/').next().unwrap_or_default();
    let mut all = vec![service_label(leaf), proto_label.to_string()];
    all.extend(labels);
    join(&all, zone)
}

/// Per-port SRV name below the app name: `_http._tcp.web.prod.<zone>`; unnamed ports are
/// `_port<index>`.
pub fn port_srv_name(
    app_name: &str,
    port_name: Option<&str>,
    index: usize,
    proto_label: &str,
) -> Option<String> {
    let service = match port_name {
        Some(n) if !n.is_empty() => service_label(n),
        _ => format!("_port{index}"),
    };
    join(&[service, proto_label.to_string()], app_name)
}

/// The per-task label: the first 8 hex digits of the UUID in the task id (every Marathon
/// task-id format carries one), else a hash of the id.
///
/// Uniqueness among an app's tasks and distinctness from child-app labels are the caller's
/// job ([`task_labels`]), because they depend on the other tasks.
pub fn task_label_base(task_id: &str) -> String {
    match find_uuid(task_id) {
        Some(uuid) => uuid
            .chars()
            .filter(|c| *c != '-')
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase(),
        None => format!("t{}", short_hash(task_id)),
    }
}

/// The last canonical 8-4-4-4-12 hex UUID inside `s`: the instance's, even when the app's
/// path itself contains a UUID (task ids are `<app path>.<…uuid…>[.<container>]`).
pub fn find_uuid(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    if bytes.len() < 36 {
        return None;
    }
    (0..=bytes.len() - 36).rev().find_map(|start| {
        let candidate = &bytes[start..start + 36];
        let ok = candidate.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
        ok.then(|| &s[start..start + 36])
    })
}

/// Labels for a set of task ids, unique among them and never equal to a name in `reserved`
/// (the child apps' labels). A task whose short label collides gets `<short>-<hash of id>`,
/// which depends only on its own id, so it stays stable for the task's life.
pub fn task_labels<'a>(
    task_ids: impl IntoIterator<Item = &'a str>,
    reserved: &std::collections::BTreeSet<String>,
) -> Vec<(&'a str, String)> {
    let ids: Vec<&str> = task_ids.into_iter().collect();
    let bases: Vec<String> = ids.iter().map(|id| task_label_base(id)).collect();
    ids.iter()
        .zip(&bases)
        .map(|(id, base)| {
            let clashes =
                bases.iter().filter(|b| *b == base).count() > 1 || reserved.contains(base);
            let label = if clashes {
                format!("{base}-{}", short_hash(id))
            } else {
                base.clone()
            };
            (*id, label)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn app_names() {
        assert_eq!(
            app_name("/prod/web", "marathon.local").as_deref(),
            Some("web.prod.marathon.local")
        );
        assert_eq!(
            app_name("/a/b/c", "marathon.local.").as_deref(),
            Some("c.b.a.marathon.local")
        );
        assert_eq!(
            app_name("/web", "marathon.local").as_deref(),
            Some("web.marathon.local")
        );
        assert_eq!(
            app_name("/team/api.v2", "z").as_deref(),
            Some("api-v2.team.z")
        );
        assert_eq!(app_name("/Caps/X_y", "z").as_deref(), Some("x-y.caps.z"));
    }

    #[test]
    fn long_labels_are_shortened_with_hash() {
        let seg = "a".repeat(80);
        let l = label(&seg);
        assert_eq!(l.len(), 63);
        assert!(l.starts_with(&"a".repeat(57)));
        assert_eq!(&l[57..58], "-");
        assert_ne!(
            label(&"a".repeat(81)),
            l,
            "different inputs, different hashes"
        );
        assert_eq!(label(&"a".repeat(63)), "a".repeat(63));
    }

    #[test]
    fn service_labels_stay_within_63_octets() {
        let long = "w".repeat(70);
        let srv = app_srv_name(&format!("/prod/{long}"), "_tcp", "z").expect("fits");
        let first = srv.split('.').next().expect("label");
        assert_eq!(first.len(), 63);
        assert!(first.starts_with("_www"));
        let port = port_srv_name("a.z", Some(&"p".repeat(63)), 0, "_udp").expect("fits");
        assert_eq!(port.split('.').next().map(str::len), Some(63));
        assert_eq!(service_label("http"), "_http");
    }

    #[test]
    fn too_long_names_are_skipped() {
        let id: String = (0..5).map(|_| format!("/{}", "b".repeat(60))).collect();
        assert_eq!(app_name(&id, "marathon.local"), None);
    }

    #[test]
    fn srv_names() {
        assert_eq!(
            app_srv_name("/prod/web", "_tcp", "marathon.local").as_deref(),
            Some("_web._tcp.prod.marathon.local")
        );
        assert_eq!(
            app_srv_name("/web", "_udp", "marathon.local").as_deref(),
            Some("_web._udp.marathon.local")
        );
        assert_eq!(
            port_srv_name("web.prod.marathon.local", Some("http"), 0, "_tcp").as_deref(),
            Some("_http._tcp.web.prod.marathon.local")
        );
        assert_eq!(
            port_srv_name("web.marathon.local", None, 2, "_udp").as_deref(),
            Some("_port2._udp.web.marathon.local")
        );
    }

    #[test]
    fn uuid_in_task_ids() {
        assert_eq!(find_uuid("web.nouuid"), None);
        // A UUID in the app path does not confuse the instance's.
        assert_eq!(
            find_uuid(
                "jobs_3d4e5f60-0000-11e7-8888-0e2beceebfcc_web.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1"
            ),
            Some("c7c311a4-b669-11e6-a48f-0ea4f4b1778c")
        );
    }

    #[test]
    fn task_labels_all_formats() {
        for id in [
            "web.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1",
            "web.c7c311a4-b669-11e6-a48f-0ea4f4b1778c",
            "web.marathon-c7c311a4-b669-11e6-a48f-0ea4f4b1778c",
        ] {
            assert_eq!(task_label_base(id), "c7c311a4", "{id}");
        }
        assert!(task_label_base("no-uuid-here").starts_with('t'));
    }

    #[test]
    fn task_labels_are_unique_and_avoid_children() {
        let ids = [
            "web.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1",
            "web.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.2",
            "web.instance-0000000a-b669-11e6-a48f-0ea4f4b1778c._app.1",
        ];
        let reserved: BTreeSet<String> = ["0000000a".to_string()].into();
        let labels = task_labels(ids, &reserved);
        let set: BTreeSet<&String> = labels.iter().map(|(_, l)| l).collect();
        assert_eq!(set.len(), 3);
        assert!(!set.contains(&"0000000a".to_string()));
        assert!(labels[0].1.starts_with("c7c311a4-"));
        // Stable: the same id gives the same label when the clash is gone.
        let alone = task_labels([ids[2]], &BTreeSet::new());
        assert_eq!(alone[0].1, "0000000a");
    }

    /// The hash is part of the public names (long labels, task-label clashes): these values
    /// must never change. FNV-1a 32-bit (published test vectors: "" → 0x811c9dc5,
    /// "a" → 0xe40c292c, "foobar" → 0xbf9cf968), low 25 bits as 5 base32 digits, low first.
    #[test]
    fn hash_is_stable() {
        assert_eq!(short_hash(""), "fohzr");
        assert_eq!(short_hash("a"), "mjkya");
        assert_eq!(short_hash("x"), "heuyq");
        assert_eq!(short_hash("foobar"), "il6zz");
        assert_eq!(label(&"a".repeat(80)), format!("{}-vwzhu", "a".repeat(57)));
        assert_eq!(task_label_base("no-uuid-here"), "ttkzbf");
    }
}
