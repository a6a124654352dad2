//! TSIG (RFC 8945): shared-secret authentication of zone transfers and NOTIFYs.
//!
//! Works on raw wire bytes rather than through the DNS library because the MAC covers the
//! message exactly as it was sent: a parse/re-encode round trip can change compression or
//! case and silently break verification. Only a small walker is needed here: it finds the
//! last additional RR, and the caller parses the message (with [`strip`]) as usual.
//!
//! Policy choices:
//! - HMAC-SHA256/384/512 only: MD5 and SHA-1 are deprecated (RFC 8945 §6) and the key tools
//!   (`tsig-keygen`, `keymgr -t`) default to SHA-256.
//! - Truncated MACs (RFC 8945 §5.2.2.1) are verified properly (so a forged one is still
//!   BADSIG), but then refused with BADTRUNC: local policy is full-length MACs only.
//! - Every message of a multi-message response is signed (§5.3.1 allows it, and it is the
//!   simplest thing for secondaries to check).
//! - No replay cache of the last Time Signed per key (§5.2.3 SHOULD): the fudge window bounds
//!   replays, and a transfer replayed within it only hands out data the key may read anyway.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

/// Fudge we put in the TSIG RRs we send: the 300 seconds RFC 8945 recommends.
pub const FUDGE: u16 = 300;

const HEADER_LEN: usize = 12;
const TYPE_TSIG: u16 = 250;
const CLASS_ANY: u16 = 255;

/// A TSIG MAC algorithm. Only the SHA-2 HMACs are supported (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    const ALL: [Algorithm; 3] = [
        Algorithm::HmacSha256,
        Algorithm::HmacSha384,
        Algorithm::HmacSha512,
    ];

    /// Parses "hmac-sha256" etc., case-insensitively and with or without the trailing dot
    /// (key files and command lines use both).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        let name = name.strip_suffix('.').unwrap_or(name);
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The conventional name, without the trailing dot, as used in key files.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// The algorithm name in (canonical, lower-case) wire form, as it appears in the TSIG RR.
    pub fn wire_name(self) -> &'static [u8] {
        match self {
            Algorithm::HmacSha256 => b"\x0bhmac-sha256\x00",
            Algorithm::HmacSha384 => b"\x0bhmac-sha384\x00",
            Algorithm::HmacSha512 => b"\x0bhmac-sha512\x00",
        }
    }

    /// Length of an untruncated MAC.
    pub fn mac_len(self) -> usize {
        self.hmac().digest_algorithm().output_len()
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Algorithm::HmacSha256 => hmac::HMAC_SHA256,
            Algorithm::HmacSha384 => hmac::HMAC_SHA384,
            Algorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key (from the command line or a key file) was rejected.
///
/// No variant ever carries the secret, or any text that might be the secret when fields are
/// misplaced: these messages end up in logs and on terminals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("TSIG key must be given as NAME:ALGORITHM:BASE64SECRET")]
    Spec,
    #[error(
        "TSIG key looks like ALGORITHM:NAME:SECRET (dig's -y order); expected NAME:ALGORITHM:BASE64SECRET"
    )]
    DigOrder,
    #[error("invalid TSIG key name: {0}")]
    Name(&'static str),
    #[error("unsupported TSIG algorithm{shown} (supported: hmac-sha256, hmac-sha384, hmac-sha512)")]
    Algorithm {
        /// The given name with a leading space, or empty when it was not safe to echo.
        shown: String,
    },
    #[error("TSIG secret is not valid base64")]
    SecretEncoding,
    #[error("TSIG secret is empty")]
    SecretEmpty,
    #[error("duplicate TSIG key {0:?}")]
    Duplicate(String),
    #[error("no TSIG keys found")]
    NoKeys,
    /// A key-file problem, with the 1-based line it was found on.
    #[error("line {line}: {message}")]
    File { line: usize, message: String },
}

impl KeyError {
    /// Echoes the algorithm only when it plausibly is one (e.g. "hmac-md5"): with fields in the
    /// wrong order the "algorithm" could be the secret.
    fn algorithm(given: &str) -> KeyError {
        let plausible = given.len() <= 32
            && given
                .get(..5)
                .is_some_and(|p| p.eq_ignore_ascii_case("hmac-"))
            && given
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        let shown = if plausible {
            format!(" {given:?}")
        } else {
            String::new()
        };
        KeyError::Algorithm { shown }
    }

    fn at(self, line: usize) -> KeyError {
        match self {
            KeyError::File { .. } => self,
            other => KeyError::File {
                line,
                message: other.to_string(),
            },
        }
    }
}

fn syntax(line: usize, message: impl Into<String>) -> KeyError {
    KeyError::File {
        line,
        message: message.into(),
    }
}

/// A TSIG key: name, algorithm and secret. `Debug` is written by hand so the secret can never
/// reach a log line.
#[derive(Clone)]
pub struct Key {
    name: String,
    name_wire: Vec<u8>,
    algorithm: Algorithm,
    hmac: hmac::Key,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Key {
    /// Builds a key from its parts. The name is stored lower-case because TSIG compares key
    /// names case-insensitively and MACs them in canonical (lower-case) form.
    pub fn new(name: &str, algorithm: Algorithm, secret: &[u8]) -> Result<Key, KeyError> {
        let (name, name_wire) = name_to_wire(name.trim())?;
        if secret.is_empty() {
            return Err(KeyError::SecretEmpty);
        }
        Ok(Key {
            name,
            name_wire,
            algorithm,
            hmac: hmac::Key::new(algorithm.hmac(), secret),
        })
    }

    /// "NAME:ALGORITHM:BASE64SECRET" as given on the command line (`--tsig-key`).
    pub fn parse(spec: &str) -> Result<Key, KeyError> {
        let mut parts = spec.splitn(3, ':');
        let (Some(name), Some(alg), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::Spec);
        };
        let algorithm = match Algorithm::from_name(alg.trim()) {
            Some(a) => a,
            None if Algorithm::from_name(name.trim()).is_some() => return Err(KeyError::DigOrder),
            None => return Err(KeyError::algorithm(alg.trim())),
        };
        Key::new(name, algorithm, &decode_secret(secret)?)
    }

    /// The key name, lower-case, without the trailing dot.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key name in canonical (lower-case, uncompressed) wire form.
    pub fn name_wire(&self) -> &[u8] {
        &self.name_wire
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn decode_secret(text: &str) -> Result<Vec<u8>, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::SecretEmpty);
    }
    // The decoder's own error names the offending byte, i.e. part of the secret: drop it.
    BASE64.decode(text).map_err(|_| KeyError::SecretEncoding)
}

/// Text name → (lower-case text without trailing dot, canonical wire form). Escapes are not
/// supported: key names are plain host-like names in practice.
fn name_to_wire(name: &str) -> Result<(String, Vec<u8>), KeyError> {
    let lower = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if lower.is_empty() {
        return Err(KeyError::Name("empty"));
    }
    let mut wire = Vec::with_capacity(lower.len() + 2);
    for label in lower.split('.') {
        if label.is_empty() {
            return Err(KeyError::Name("empty label"));
        }
        if label.len() > 63 {
            return Err(KeyError::Name("label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(KeyError::Name(
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    if wire.len() > 255 {
        return Err(KeyError::Name("longer than 255 bytes"));
    }
    Ok((lower, wire))
}

/// Keys from a key file. Two formats are accepted, because both tools that operators use to
/// make keys write different ones:
/// - BIND style, as written by `tsig-keygen`:
///   `key "name" { algorithm hmac-sha256; secret "base64"; };` (one or more; `#`, `//` and
///   `/* */` comments allowed);
/// - Knot style, as written by `keymgr -t`: a `key:` section of `- id:` / `algorithm:` /
///   `secret:` items.
///
/// Errors carry the 1-based line number.
pub fn parse_key_file(text: &str) -> Result<Vec<Key>, KeyError> {
    let knot_style = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("key:"));
    let keys = if knot_style {
        parse_knot_keys(text)?
    } else {
        parse_bind_keys(text)?
    };
    if keys.is_empty() {
        return Err(KeyError::NoKeys);
    }
    Ok(keys)
}

/// A key being assembled from a file, with the line of each part for error messages.
#[derive(Default)]
struct PendingKey {
    line: usize,
    name: Option<(String, usize)>,
    algorithm: Option<Algorithm>,
    secret: Option<Vec<u8>>,
}

impl PendingKey {
    fn set_algorithm(&mut self, value: &str, line: usize) -> Result<(), KeyError> {
        if self.algorithm.is_some() {
            return Err(syntax(line, "algorithm given twice"));
        }
        let alg = Algorithm::from_name(value).ok_or_else(|| KeyError::algorithm(value).at(line))?;
        self.algorithm = Some(alg);
        Ok(())
    }

    fn set_secret(&mut self, value: &str, line: usize) -> Result<(), KeyError> {
        if self.secret.is_some() {
            return Err(syntax(line, "secret given twice"));
        }
        self.secret = Some(decode_secret(value).map_err(|e| e.at(line))?);
        Ok(())
    }

    fn finish(self, keys: &mut Vec<Key>) -> Result<(), KeyError> {
        let Some((name, name_line)) = self.name else {
            return Err(syntax(self.line, "key has no name"));
        };
        let Some(algorithm) = self.algorithm else {
            return Err(syntax(self.line, "key has no algorithm"));
        };
        let Some(secret) = self.secret else {
            return Err(syntax(self.line, "key has no secret"));
        };
        let key = Key::new(&name, algorithm, &secret).map_err(|e| e.at(name_line))?;
        if keys.iter().any(|k| k.name == key.name) {
            return Err(KeyError::Duplicate(key.name).at(name_line));
        }
        keys.push(key);
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Open,
    Close,
    Semi,
}

/// Splits BIND configuration syntax into tokens tagged with their line.
fn tokenize(text: &str) -> Result<Vec<(Tok<'_>, usize)>, KeyError> {
    let bytes = text.as_bytes();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        match b {
            b'\n' => {
                line += 1;
                i += 1;
            }
            _ if b.is_ascii_whitespace() => i += 1,
            b'#' => i = find_from(bytes, i, b"\n"),
            b'/' if next == Some(b'/') => i = find_from(bytes, i, b"\n"),
            b'/' if next == Some(b'*') => {
                let end = find_from(bytes, i + 2, b"*/");
                if end >= bytes.len() {
                    return Err(syntax(line, "unterminated /* comment"));
                }
                line += count_newlines(bytes.get(i..end).unwrap_or_default());
                i = end + 2;
            }
            b'"' => {
                let end = find_from(bytes, i + 1, b"\"");
                let body = text.get(i + 1..end).unwrap_or_default();
                if end >= bytes.len() || body.contains('\n') {
                    return Err(syntax(line, "unterminated quoted string"));
                }
                toks.push((Tok::Quoted(body), line));
                i = end + 1;
            }
            b'{' | b'}' | b';' => {
                let tok = match b {
                    b'{' => Tok::Open,
                    b'}' => Tok::Close,
                    _ => Tok::Semi,
                };
                toks.push((tok, line));
                i += 1;
            }
            _ => {
                let start = i;
                while bytes
                    .get(i)
                    .is_some_and(|c| !c.is_ascii_whitespace() && !b"{};\"#".contains(c))
                {
                    i += 1;
                }
                toks.push((Tok::Word(text.get(start..i).unwrap_or_default()), line));
            }
        }
    }
    Ok(toks)
}

/// Index of the first occurrence of `needle` at or after `from`, or `bytes.len()`.
fn find_from(bytes: &[u8], from: usize, needle: &[u8]) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.windows(needle.len()).position(|w| w == needle))
        .map_or(bytes.len(), |p| from + p)
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Shows a word in an error message only if it looks like a keyword, never like a secret.
fn shown_word(tok: &Tok<'_>) -> String {
    match tok {
        Tok::Word(w)
            if w.len() <= 20 && w.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') =>
        {
            format!(" {w:?}")
        }
        _ => String::new(),
    }
}

fn parse_bind_keys(text: &str) -> Result<Vec<Key>, KeyError> {
    let toks = tokenize(text)?;
    let last_line = toks.last().map_or(1, |t| t.1);
    let mut it = toks.into_iter();
    let mut keys = Vec::new();
    let need = |it: &mut std::vec::IntoIter<(Tok<'_>, usize)>,
                want: Tok<'static>,
                what: &str|
     -> Result<usize, KeyError> {
        match it.next() {
            Some((tok, line)) if tok == want => Ok(line),
            Some((_, line)) => Err(syntax(line, format!("expected {what}"))),
            None => Err(syntax(
                last_line,
                format!("expected {what} before end of file"),
            )),
        }
    };
    while let Some((tok, line)) = it.next() {
        if !matches!(tok, Tok::Word(w) if w.eq_ignore_ascii_case("key")) {
            return Err(syntax(
                line,
                format!("expected a 'key' statement, found{}", shown_word(&tok)),
            ));
        }
        let mut pending = PendingKey {
            line,
            ..PendingKey::default()
        };
        match it.next() {
            Some((Tok::Quoted(n) | Tok::Word(n), l)) => pending.name = Some((n.to_owned(), l)),
            Some((_, l)) => return Err(syntax(l, "expected a key name after 'key'")),
            None => return Err(syntax(line, "expected a key name after 'key'")),
        }
        need(&mut it, Tok::Open, "'{' after the key name")?;
        loop {
            let Some((tok, line)) = it.next() else {
                return Err(syntax(last_line, "missing '};' at end of key"));
            };
            let field = match tok {
                Tok::Close => break,
                Tok::Word(w) if w.eq_ignore_ascii_case("algorithm") => "algorithm",
                Tok::Word(w) if w.eq_ignore_ascii_case("secret") => "secret",
                other => {
                    return Err(syntax(
                        line,
                        format!(
                            "unknown key clause{} (expected 'algorithm' or 'secret')",
                            shown_word(&other)
                        ),
                    ));
                }
            };
            let value = match it.next() {
                Some((Tok::Quoted(v) | Tok::Word(v), _)) => v,
                _ => return Err(syntax(line, format!("expected a value after '{field}'"))),
            };
            if field == "algorithm" {
                pending.set_algorithm(value, line)?;
            } else {
                pending.set_secret(value, line)?;
            }
            need(&mut it, Tok::Semi, &format!("';' after the {field}"))?;
        }
        need(&mut it, Tok::Semi, "';' after '}'")?;
        pending.finish(&mut keys)?;
    }
    Ok(keys)
}

fn parse_knot_keys(text: &str) -> Result<Vec<Key>, KeyError> {
    let mut keys = Vec::new();
    let mut pending: Option<PendingKey> = None;
    let mut in_keys = false;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        // base64 has no '#', so a '#' always starts a comment.
        let content = raw.split('#').next().unwrap_or_default();
        let trimmed = content.trim();
        if trimmed.is_empty() {
            continue;
        }
        if !content.starts_with([' ', '\t', '-']) {
            if trimmed != "key:" {
                return Err(syntax(
                    line,
                    "only 'key:' sections are supported in a Knot key file",
                ));
            }
            in_keys = true;
            continue;
        }
        if !in_keys {
            return Err(syntax(line, "expected 'key:'"));
        }
        let rest = match trimmed.strip_prefix('-') {
            Some(rest) => {
                if let Some(done) = pending.take() {
                    done.finish(&mut keys)?;
                }
                pending = Some(PendingKey {
                    line,
                    ..PendingKey::default()
                });
                rest.trim_start()
            }
            None => trimmed,
        };
        let Some(current) = pending.as_mut() else {
            return Err(syntax(line, "expected '- id: NAME' to start a key"));
        };
        let Some((field, value)) = rest.split_once(':') else {
            return Err(syntax(line, "expected 'option: value'"));
        };
        let value = unquote(value.trim());
        match field.trim() {
            "id" if current.name.is_none() => current.name = Some((value.to_owned(), line)),
            "id" => return Err(syntax(line, "id given twice")),
            "algorithm" => current.set_algorithm(value, line)?,
            "secret" => current.set_secret(value, line)?,
            _ => {
                return Err(syntax(
                    line,
                    "unsupported key option (expected id, algorithm or secret)",
                ));
            }
        }
    }
    if let Some(done) = pending {
        done.finish(&mut keys)?;
    }
    Ok(keys)
}

fn unquote(v: &str) -> &str {
    ['"', '\'']
        .into_iter()
        .find_map(|q| v.strip_prefix(q).and_then(|v| v.strip_suffix(q)))
        .unwrap_or(v)
}

/// A TSIG failure, named after its RFC 8945 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TsigError {
    #[error("TSIG MAC did not verify (BADSIG)")]
    BadSig,
    #[error("TSIG key or algorithm not recognised (BADKEY)")]
    BadKey,
    #[error("TSIG time signed outside the fudge window (BADTIME)")]
    BadTime,
    #[error("TSIG MAC truncated below local policy (BADTRUNC)")]
    BadTrunc,
    /// Malformed message or TSIG RR, or a TSIG RR that is not the last additional record:
    /// the caller answers FORMERR without a TSIG (RFC 8945 §5.2).
    #[error("malformed or misplaced TSIG record (FORMERR)")]
    FormErr,
}

impl TsigError {
    /// The value for the TSIG RR's Error field (16, 17, 18, 22); for `FormErr`, which is not a
    /// TSIG error, the DNS RCODE FORMERR (1).
    pub fn code(self) -> u16 {
        match self {
            TsigError::BadSig => 16,
            TsigError::BadKey => 17,
            TsigError::BadTime => 18,
            TsigError::BadTrunc => 22,
            TsigError::FormErr => 1,
        }
    }

    /// Maps an Error field value from a received TSIG RR; unknown values count as BADSIG, the
    /// conservative reading.
    fn from_code(code: u16) -> TsigError {
        match code {
            17 => TsigError::BadKey,
            18 => TsigError::BadTime,
            22 => TsigError::BadTrunc,
            _ => TsigError::BadSig,
        }
    }
}

/// Outcome of checking a request.
#[derive(Debug, Clone)]
#[must_use]
pub enum Verified<'k> {
    /// No TSIG RR: the request is well-formed and unsigned.
    Unsigned,
    /// The MAC verified with `key` and the time is within the fudge. `mac` is what
    /// [`ResponseSigner::new`] needs.
    Signed {
        key: &'k Key,
        mac: Vec<u8>,
        time: u64,
    },
    /// Pass to [`append_error`] to build the TSIG part of the error response.
    Failed {
        error: TsigError,
        /// Canonical wire forms from the request's TSIG RR (empty for `FormErr`).
        key_name_wire: Vec<u8>,
        algorithm_wire: Vec<u8>,
        /// The matching key, once the MAC verified (BADTIME, BADTRUNC).
        key: Option<&'k Key>,
        /// The request MAC, once it verified: signed error responses chain from it.
        mac: Vec<u8>,
        /// The request's Time Signed (0 for `FormErr`), echoed in error responses.
        time: u64,
    },
}

impl Verified<'_> {
    fn form_err() -> Self {
        Verified::Failed {
            error: TsigError::FormErr,
            key_name_wire: Vec::new(),
            algorithm_wire: Vec::new(),
            key: None,
            mac: Vec::new(),
            time: 0,
        }
    }
}

/// The message is not a well-formed DNS message, or its TSIG RR is malformed or misplaced.
struct Malformed;

/// A parsed TSIG RR; names are in canonical (lower-case, uncompressed) wire form.
struct TsigRecord<'a> {
    /// Offset of the RR in the message: everything before it is what the MAC covers.
    start: usize,
    key_name: Vec<u8>,
    algorithm: Vec<u8>,
    time_signed: u64,
    fudge: u16,
    mac: &'a [u8],
    original_id: u16,
    error: u16,
    other: &'a [u8],
}

fn get_u16(msg: &[u8], pos: usize) -> Option<u16> {
    let bytes = msg.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

fn get_u48(msg: &[u8], pos: usize) -> Option<u64> {
    let bytes = msg.get(pos..pos.checked_add(6)?)?;
    Some(bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Offset just past the name at `pos`, without following compression pointers.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xC0 => return pos.checked_add(2).filter(|&end| end <= msg.len()),
            _ => return None,
        }
    }
}

/// Reads the possibly compressed name at `pos` in canonical form (lower-case, uncompressed);
/// returns it with the offset just past the name's bytes at `pos`.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut end = None;
    // Only backward pointers are followed, so loops are impossible.
    let mut limit = pos;
    loop {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 => {
                out.push(len);
                if len == 0 {
                    return (out.len() <= 255).then(|| (out, end.unwrap_or(pos + 1)));
                }
                let label = msg.get(pos + 1..pos + 1 + usize::from(len))?;
                out.extend(label.iter().map(u8::to_ascii_lowercase));
                if out.len() > 255 {
                    return None;
                }
                pos += 1 + usize::from(len);
            }
            0xC0 => {
                let target = usize::from(get_u16(msg, pos)? & 0x3FFF);
                if target >= limit {
                    return None;
                }
                end.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// Walks the whole message and returns its TSIG RR, if any. A TSIG RR anywhere but last in
/// the additional section, a second one, or any malformation is `Malformed` (→ FORMERR).
fn find_tsig(msg: &[u8]) -> Result<Option<TsigRecord<'_>>, Malformed> {
    walk(msg).ok_or(Malformed)
}

/// `find_tsig` with `None` for `Malformed`, so `?` works throughout.
fn walk(msg: &[u8]) -> Option<Option<TsigRecord<'_>>> {
    let count = |at| get_u16(msg, at).map(usize::from);
    let (qdcount, arcount) = (count(4)?, count(10)?);
    let rr_count = count(6)? + count(8)? + arcount;
    let mut pos = HEADER_LEN;
    for _ in 0..qdcount {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut tsig = None;
    for index in 0..rr_count {
        let start = pos;
        pos = skip_name(msg, pos)?;
        let rtype = get_u16(msg, pos)?;
        let rdata = pos + 10;
        let end = rdata + usize::from(get_u16(msg, pos + 8)?);
        if end > msg.len() {
            return None;
        }
        if rtype == TYPE_TSIG {
            // Must be the last RR, and in the additional section.
            if index + 1 != rr_count || arcount == 0 {
                return None;
            }
            tsig = Some((start, pos, rdata, end));
        }
        pos = end;
    }
    if pos != msg.len() {
        return None;
    }
    match tsig {
        None => Some(None),
        Some((start, fixed, rdata, end)) => parse_tsig_rr(msg, start, fixed, rdata, end).map(Some),
    }
}

/// Parses the TSIG RR whose owner is at `start`, type at `fixed`, RDATA in `rdata..end`.
fn parse_tsig_rr(
    msg: &[u8],
    start: usize,
    fixed: usize,
    rdata: usize,
    end: usize,
) -> Option<TsigRecord<'_>> {
    let (key_name, _) = read_name(msg, start)?;
    // RFC 8945 §4.2: CLASS ANY, TTL 0.
    if get_u16(msg, fixed + 2)? != CLASS_ANY || msg.get(fixed + 4..fixed + 8)? != [0; 4] {
        return None;
    }
    let (algorithm, mut p) = read_name(msg, rdata)?;
    let time_signed = get_u48(msg, p)?;
    let fudge = get_u16(msg, p + 6)?;
    let mac_len = usize::from(get_u16(msg, p + 8)?);
    p += 10;
    let mac = msg.get(p..p + mac_len)?;
    p += mac_len;
    let original_id = get_u16(msg, p)?;
    let error = get_u16(msg, p + 2)?;
    let other_len = usize::from(get_u16(msg, p + 4)?);
    p += 6;
    let other = msg.get(p..p + other_len)?;
    (p + other_len == end).then_some(TsigRecord {
        start,
        key_name,
        algorithm,
        time_signed,
        fudge,
        mac,
        original_id,
        error,
        other,
    })
}

/// Appends the message as the MAC saw it: TSIG removed, ARCOUNT decremented and the ID put
/// back to the Original ID (RFC 8945 §4.3.3, so forwarders may change the ID).
fn push_unsigned(out: &mut Vec<u8>, msg: &[u8], tsig: &TsigRecord<'_>) -> Option<()> {
    let body = msg.get(..tsig.start)?;
    out.extend_from_slice(&tsig.original_id.to_be_bytes());
    out.extend_from_slice(body.get(2..10)?);
    out.extend_from_slice(&get_u16(body, 10)?.checked_sub(1)?.to_be_bytes());
    out.extend_from_slice(body.get(HEADER_LEN..)?);
    Some(())
}

fn len16(bytes: &[u8]) -> [u8; 2] {
    u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes()
}

fn push_u48(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes()[2..]);
}

/// Appends a MAC with its 2-byte length, as request and prior MACs enter digests (§4.3.1).
fn push_mac(out: &mut Vec<u8>, mac: &[u8]) {
    out.extend_from_slice(&len16(mac));
    out.extend_from_slice(mac);
}

/// The TSIG fields of one RR, for building the variables digested (§4.3.3) and the RR itself.
struct Fields<'a> {
    key_name: &'a [u8],
    algorithm: &'a [u8],
    time: u64,
    fudge: u16,
    error: u16,
    other: &'a [u8],
}

impl Fields<'_> {
    fn push_variables(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.key_name);
        out.extend_from_slice(&CLASS_ANY.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(self.algorithm);
        self.push_timers(out);
        out.extend_from_slice(&self.error.to_be_bytes());
        out.extend_from_slice(&len16(self.other));
        out.extend_from_slice(self.other);
    }

    fn push_timers(&self, out: &mut Vec<u8>) {
        push_u48(out, self.time);
        out.extend_from_slice(&self.fudge.to_be_bytes());
    }

    /// Appends the TSIG RR to `msg` and counts it in ARCOUNT. The owner is written uncompressed:
    /// TSIG RRs must not depend on the rest of the message.
    fn append(&self, msg: &mut Vec<u8>, mac: &[u8]) {
        let original_id = get_u16(msg, 0).unwrap_or(0);
        let mut rdata =
            Vec::with_capacity(self.algorithm.len() + 16 + mac.len() + self.other.len());
        rdata.extend_from_slice(self.algorithm);
        self.push_timers(&mut rdata);
        push_mac(&mut rdata, mac);
        rdata.extend_from_slice(&original_id.to_be_bytes());
        rdata.extend_from_slice(&self.error.to_be_bytes());
        push_mac(&mut rdata, self.other);
        msg.extend_from_slice(self.key_name);
        msg.extend_from_slice(&TYPE_TSIG.to_be_bytes());
        msg.extend_from_slice(&CLASS_ANY.to_be_bytes());
        msg.extend_from_slice(&0u32.to_be_bytes());
        msg.extend_from_slice(&len16(&rdata));
        msg.extend_from_slice(&rdata);
        if let Some(count) = msg.get_mut(10..12) {
            let arcount = u16::from_be_bytes([count[0], count[1]]).wrapping_add(1);
            count.copy_from_slice(&arcount.to_be_bytes());
        }
    }
}

/// Constant-time equality for truncated MACs, where `hmac::verify` (full length) cannot be used.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// RFC 8945 §5.2 steps after the key check, in the RFC's order: MAC, time, truncation.
/// `prior` is the request MAC when checking a response.
fn check(
    key: &Key,
    prior: Option<&[u8]>,
    msg: &[u8],
    tsig: &TsigRecord<'_>,
    now: u64,
) -> Result<(), TsigError> {
    let full = key.algorithm.mac_len();
    let len = tsig.mac.len();
    // §5.2.2.1: longer than the hash, or shorter than max(10, half), is malformed.
    if len > full || len < (full / 2).max(10) {
        return Err(TsigError::FormErr);
    }
    let mut data = Vec::with_capacity(msg.len() + 2 * full + 64);
    if let Some(prior) = prior.filter(|p| !p.is_empty()) {
        push_mac(&mut data, prior);
    }
    push_unsigned(&mut data, msg, tsig).ok_or(TsigError::FormErr)?;
    Fields {
        key_name: &tsig.key_name,
        algorithm: &tsig.algorithm,
        time: tsig.time_signed,
        fudge: tsig.fudge,
        error: tsig.error,
        other: tsig.other,
    }
    .push_variables(&mut data);
    let verified = if len == full {
        hmac::verify(&key.hmac, &data, tsig.mac).is_ok()
    } else {
        let computed = hmac::sign(&key.hmac, &data);
        computed
            .as_ref()
            .get(..len)
            .is_some_and(|c| ct_eq(c, tsig.mac))
    };
    if !verified {
        return Err(TsigError::BadSig);
    }
    if now.abs_diff(tsig.time_signed) > u64::from(tsig.fudge) {
        return Err(TsigError::BadTime);
    }
    if len < full {
        return Err(TsigError::BadTrunc);
    }
    Ok(())
}

/// Finds and verifies the TSIG RR of a request (RFC 8945 §5.2). `now` is Unix seconds.
///
/// A malformed message, or a TSIG RR that is not the last additional record, gives
/// `Failed { error: FormErr, .. }`. Unknown key name, or a known name with another algorithm,
/// gives BADKEY. The MAC is recomputed over the message with the TSIG RR removed, ARCOUNT
/// decremented and the Original ID restored, and compared in constant time.
pub fn verify_request<'k>(msg: &[u8], keys: &'k [Key], now: u64) -> Verified<'k> {
    let tsig = match find_tsig(msg) {
        Ok(None) => return Verified::Unsigned,
        Ok(Some(tsig)) => tsig,
        Err(Malformed) => return Verified::form_err(),
    };
    let failed = |error, key, mac: &[u8]| Verified::Failed {
        error,
        key_name_wire: tsig.key_name.clone(),
        algorithm_wire: tsig.algorithm.clone(),
        key,
        mac: mac.to_vec(),
        time: tsig.time_signed,
    };
    let Some(key) = keys
        .iter()
        .find(|k| k.name_wire == tsig.key_name && k.algorithm.wire_name() == tsig.algorithm)
    else {
        return failed(TsigError::BadKey, None, &[]);
    };
    match check(key, None, msg, &tsig, now) {
        Ok(()) => Verified::Signed {
            key,
            mac: tsig.mac.to_vec(),
            time: tsig.time_signed,
        },
        Err(TsigError::FormErr) => Verified::form_err(),
        Err(error @ (TsigError::BadTime | TsigError::BadTrunc)) => {
            failed(error, Some(key), tsig.mac)
        }
        Err(error) => failed(error, None, &[]),
    }
}

/// The message without its TSIG RR and with ARCOUNT decremented, for the caller's DNS parser;
/// `None` when there is no well-formed, correctly placed TSIG RR to remove.
pub fn strip(msg: &[u8]) -> Option<Vec<u8>> {
    let tsig = find_tsig(msg).ok()??;
    let mut out = msg.get(..tsig.start)?.to_vec();
    let arcount = get_u16(&out, 10)?.checked_sub(1)?;
    out.get_mut(10..12)?.copy_from_slice(&arcount.to_be_bytes());
    Some(out)
}

/// Signs every message of a (possibly multi-message, e.g. AXFR) response, RFC 8945 §5.3 and
/// §5.3.1: the first digest covers the request MAC, the message and all TSIG variables; each
/// later one covers the prior MAC, the message and the timers only, chaining the messages so
/// that none can be dropped, reordered or replayed into another transfer.
#[derive(Debug, Clone)]
pub struct ResponseSigner {
    key: Key,
    prior_mac: Vec<u8>,
    first: bool,
}

impl ResponseSigner {
    pub fn new(key: &Key, request_mac: &[u8]) -> Self {
        ResponseSigner {
            key: key.clone(),
            prior_mac: request_mac.to_vec(),
            first: true,
        }
    }

    /// Appends the TSIG RR to `msg` (a complete DNS message) and increments ARCOUNT. The
    /// Original ID is the message's ID; the fudge is [`FUDGE`].
    pub fn sign(&mut self, msg: &mut Vec<u8>, now: u64) {
        let fields = Fields {
            key_name: &self.key.name_wire,
            algorithm: self.key.algorithm.wire_name(),
            time: now,
            fudge: FUDGE,
            error: 0,
            other: &[],
        };
        let mut data = Vec::with_capacity(msg.len() + 2 * self.prior_mac.len() + 64);
        if !self.prior_mac.is_empty() {
            push_mac(&mut data, &self.prior_mac);
        }
        data.extend_from_slice(msg);
        if self.first {
            fields.push_variables(&mut data);
        } else {
            fields.push_timers(&mut data);
        }
        let mac = hmac::sign(&self.key.hmac, &data);
        fields.append(msg, mac.as_ref());
        self.prior_mac = mac.as_ref().to_vec();
        self.first = false;
    }
}

/// Appends the TSIG RR of an error response (RFC 8945 §5.3.2) for a `Failed` outcome; does
/// nothing for `FormErr` (answered without TSIG) or non-failures. BADKEY and BADSIG get an
/// unsigned RR (MAC size 0: we cannot, or must not, sign with a key the client may not hold);
/// BADTIME and BADTRUNC are signed, chained to the request MAC, and BADTIME carries our clock
/// in Other Data so the client can see the skew. The caller sets RCODE NOTAUTH itself.
pub fn append_error(msg: &mut Vec<u8>, failed: &Verified<'_>, now: u64) {
    let Verified::Failed {
        error,
        key_name_wire,
        algorithm_wire,
        key,
        mac,
        time,
    } = failed
    else {
        return;
    };
    if *error == TsigError::FormErr {
        return;
    }
    let mut other = Vec::new();
    let mut fields = Fields {
        key_name: key_name_wire,
        algorithm: algorithm_wire,
        time: *time,
        fudge: FUDGE,
        error: error.code(),
        other: &[],
    };
    match (error, key) {
        (TsigError::BadTime | TsigError::BadTrunc, Some(key)) => {
            if *error == TsigError::BadTime {
                // Time Signed echoes the request's time; Other Data is our time (§5.2.3).
                push_u48(&mut other, now);
            } else {
                fields.time = now;
            }
            fields.key_name = &key.name_wire;
            fields.algorithm = key.algorithm.wire_name();
            fields.other = &other;
            let mut data = Vec::with_capacity(msg.len() + mac.len() + 80);
            push_mac(&mut data, mac);
            data.extend_from_slice(msg);
            fields.push_variables(&mut data);
            let signed = hmac::sign(&key.hmac, &data);
            fields.append(msg, signed.as_ref());
        }
        _ => fields.append(msg, &[]),
    }
}

/// Signs a request (e.g. a NOTIFY to a secondary); returns the MAC needed to verify the reply.
pub fn sign_request(key: &Key, msg: &mut Vec<u8>, now: u64) -> Vec<u8> {
    let fields = Fields {
        key_name: &key.name_wire,
        algorithm: key.algorithm.wire_name(),
        time: now,
        fudge: FUDGE,
        error: 0,
        other: &[],
    };
    let mut data = Vec::with_capacity(msg.len() + 64);
    data.extend_from_slice(msg);
    fields.push_variables(&mut data);
    let mac = hmac::sign(&key.hmac, &data);
    fields.append(msg, mac.as_ref());
    mac.as_ref().to_vec()
}

/// Verifies a single-message reply to a request signed with [`sign_request`] (the NOTIFY
/// acknowledgement). An unsigned reply counts as BADSIG. An unsigned error reply (BADKEY,
/// BADSIG from the peer) is reported as that error; it is unauthenticated, so only log it.
pub fn verify_response(
    key: &Key,
    request_mac: &[u8],
    msg: &[u8],
    now: u64,
) -> Result<(), TsigError> {
    let tsig = match find_tsig(msg) {
        Ok(Some(tsig)) => tsig,
        Ok(None) => return Err(TsigError::BadSig),
        Err(Malformed) => return Err(TsigError::FormErr),
    };
    if tsig.key_name != key.name_wire || tsig.algorithm != key.algorithm.wire_name() {
        return Err(TsigError::BadKey);
    }
    if tsig.error != 0 && tsig.mac.is_empty() {
        return Err(TsigError::from_code(tsig.error));
    }
    check(key, Some(request_mac), msg, &tsig, now)?;
    match tsig.error {
        0 => Ok(()),
        code => Err(TsigError::from_code(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, UdpSocket};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    /// base64 of "0123456789abcdef0123456789abcdef".
    const SECRET_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER_B64: &str = "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlci0=";
    const T0: u64 = 1_700_000_000;

    fn key() -> Key {
        Key::parse(&format!("test.key.:hmac-sha256:{SECRET_B64}")).unwrap()
    }

    fn other_key() -> Key {
        Key::parse(&format!("test.key.:hmac-sha256:{OTHER_B64}")).unwrap()
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    const EXAMPLE: &[u8] = b"\x07example\x00";

    /// A query for example./SOA (or another type) with the given ID and ARCOUNT 0.
    fn query(id: u16, qtype: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(EXAMPLE);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    fn soa_rr(owner: &[u8], serial: u32) -> Vec<u8> {
        let mut rdata = b"\x02ns\x07example\x00\x04host\x07example\x00".to_vec();
        for v in [serial, 3600, 600, 86400, 300] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        let mut rr = owner.to_vec();
        rr.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0x0e, 0x10]);
        rr.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        rr.extend_from_slice(&rdata);
        rr
    }

    fn a_rr(owner: &[u8], addr: [u8; 4]) -> Vec<u8> {
        let mut rr = owner.to_vec();
        rr.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
        rr.extend_from_slice(&addr);
        rr
    }

    /// A response to `query` (QR, AA, RD copied, `rcode`), with the question echoed when
    /// `with_question`, and the given answer RRs.
    fn response(query: &[u8], rcode: u8, with_question: bool, answers: &[Vec<u8>]) -> Vec<u8> {
        let qend = skip_name(query, HEADER_LEN).unwrap() + 4;
        let mut m = query[..2].to_vec();
        m.push(0x84 | (query[2] & 0x79));
        m.push(rcode & 0x0f);
        m.extend_from_slice(&u16::from(with_question).to_be_bytes());
        m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        if with_question {
            m.extend_from_slice(&query[HEADER_LEN..qend]);
        }
        for rr in answers {
            m.extend_from_slice(rr);
        }
        m
    }

    fn tsig_of(msg: &[u8]) -> TsigRecord<'_> {
        find_tsig(msg).ok().flatten().expect("a TSIG RR")
    }

    /// A verifier written straight from RFC 8945 §4.2, §4.3 and §5.3.1, sharing no code with
    /// the implementation: the TSIG RR (all fields, Other Data empty) is the message's tail;
    /// the first digest is request MAC + message + all variables, later ones are prior MAC +
    /// message + timers. Returns the index of the first message that fails.
    fn rfc_chain_verify(
        key_name: &[u8],
        alg_name: &[u8],
        secret: &[u8],
        request_mac: &[u8],
        msgs: &[Vec<u8>],
    ) -> Result<(), usize> {
        let hkey = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mac_len = 32;
        let mut prior = request_mac.to_vec();
        for (i, msg) in msgs.iter().enumerate() {
            let rdlen = alg_name.len() + 6 + 2 + 2 + mac_len + 2 + 2 + 2;
            let rr_len = key_name.len() + 10 + rdlen;
            let Some(split) = msg.len().checked_sub(rr_len) else {
                return Err(i);
            };
            let (body, rr) = msg.split_at(split);
            let mut expect_head = key_name.to_vec();
            expect_head.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
            expect_head.extend_from_slice(&(rdlen as u16).to_be_bytes());
            expect_head.extend_from_slice(alg_name);
            if !rr.starts_with(&expect_head) {
                return Err(i);
            }
            let r = &rr[expect_head.len()..];
            let timers = &r[..8];
            let mac = &r[10..10 + mac_len];
            let tail = &r[10 + mac_len..];
            // Original ID == ID, Error == 0, Other Len == 0.
            if tail[..2] != body[..2] || tail[2..] != [0, 0, 0, 0] {
                return Err(i);
            }
            let mut unsigned = body.to_vec();
            let arcount = u16::from_be_bytes([body[10], body[11]]) - 1;
            unsigned[10..12].copy_from_slice(&arcount.to_be_bytes());
            let mut digest = (prior.len() as u16).to_be_bytes().to_vec();
            digest.extend_from_slice(&prior);
            digest.extend_from_slice(&unsigned);
            if i == 0 {
                digest.extend_from_slice(key_name);
                digest.extend_from_slice(&[0, 255, 0, 0, 0, 0]);
                digest.extend_from_slice(alg_name);
                digest.extend_from_slice(timers);
                digest.extend_from_slice(&[0, 0, 0, 0]);
            } else {
                digest.extend_from_slice(timers);
            }
            if hmac::verify(&hkey, &digest, mac).is_err() {
                return Err(i);
            }
            prior = mac.to_vec();
        }
        Ok(())
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(
            Algorithm::from_name("HMAC-SHA256"),
            Some(Algorithm::HmacSha256)
        );
        assert_eq!(
            Algorithm::from_name("hmac-sha384."),
            Some(Algorithm::HmacSha384)
        );
        assert_eq!(
            Algorithm::from_name("hmac-sha512"),
            Some(Algorithm::HmacSha512)
        );
        assert_eq!(Algorithm::from_name("hmac-md5"), None);
        for alg in Algorithm::ALL {
            let (wire, _) = name_to_wire(alg.name()).unwrap();
            assert_eq!(alg.wire_name(), name_to_wire(&wire).unwrap().1);
        }
        assert_eq!(Algorithm::HmacSha384.mac_len(), 48);
    }

    #[test]
    fn key_parse_and_debug() {
        let k = Key::parse(&format!("Test.KEY.:HMAC-SHA512:{SECRET_B64}")).unwrap();
        assert_eq!(k.name(), "test.key");
        assert_eq!(k.name_wire(), b"\x04test\x03key\x00");
        assert_eq!(k.algorithm(), Algorithm::HmacSha512);
        let debug = format!("{k:?}");
        assert!(
            debug.contains("test.key") && debug.contains("redacted"),
            "{debug}"
        );
        assert!(
            !debug.contains(SECRET_B64) && !debug.contains("0123456789"),
            "{debug}"
        );
    }

    #[test]
    fn key_parse_errors_never_show_the_secret() {
        let cases = [
            ("test.key", KeyError::Spec),
            (&format!("test.key:{SECRET_B64}") as &str, KeyError::Spec),
            (
                &format!("hmac-sha256:test.key:{SECRET_B64}"),
                KeyError::DigOrder,
            ),
            (
                &format!("test.key:hmac-md5:{SECRET_B64}"),
                KeyError::Algorithm {
                    shown: " \"hmac-md5\"".into(),
                },
            ),
            (
                &format!("test.key:{SECRET_B64}:hmac-sha256"),
                KeyError::Algorithm {
                    shown: String::new(),
                },
            ),
            (
                &format!("{SECRET_B64}:hmac-sha256:{SECRET_B64}"),
                KeyError::Name("only letters, digits, '-', '_' and '.' are allowed"),
            ),
            ("a..b:hmac-sha256:AAAA", KeyError::Name("empty label")),
            (":hmac-sha256:AAAA", KeyError::Name("empty")),
            (
                &format!("{}:hmac-sha256:AAAA", "a".repeat(64)),
                KeyError::Name("label longer than 63 bytes"),
            ),
            ("k:hmac-sha256:", KeyError::SecretEmpty),
            ("k:hmac-sha256:MDEy*zQ1Njc4", KeyError::SecretEncoding),
        ];
        for (spec, want) in cases {
            let err = Key::parse(spec).unwrap_err();
            assert_eq!(err, want, "{spec}");
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains(SECRET_B64) && !text.contains("MDEy"),
                "{text}"
            );
        }
        assert_eq!(
            Key::parse("k:hmac-md5:AAAA").unwrap_err().to_string(),
            "unsupported TSIG algorithm \"hmac-md5\" (supported: hmac-sha256, hmac-sha384, hmac-sha512)"
        );
    }

    #[test]
    fn bind_key_file() {
        let text = format!(
            "# made by tsig-keygen\nkey \"xfr.example.\" {{\n\talgorithm hmac-sha512;\n\tsecret \"{SECRET_B64}\";\n}};\n\
             // second one\n/* block\n comment */ key second {{ algorithm HMAC-SHA256; secret \"{OTHER_B64}\"; }};\n"
        );
        let keys = parse_key_file(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].name(), "xfr.example");
        assert_eq!(keys[0].algorithm(), Algorithm::HmacSha512);
        assert_eq!(keys[1].name(), "second");
        assert_eq!(keys[1].algorithm(), Algorithm::HmacSha256);
    }

    #[test]
    fn knot_key_file() {
        let text = format!(
            "# hmac-sha256:test.key:{SECRET_B64}\nkey:\n  - id: test.key\n    algorithm: hmac-sha256\n    secret: {SECRET_B64}\n  - id: \"two\"\n    algorithm: hmac-sha384\n    secret: '{OTHER_B64}'\n"
        );
        let keys = parse_key_file(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].name(), "test.key");
        assert_eq!(keys[1].name(), "two");
        assert_eq!(keys[1].algorithm(), Algorithm::HmacSha384);
        // The same key verifies what the command-line form signs.
        let mut q = query(7, 6);
        let mac = sign_request(&key(), &mut q, T0);
        assert!(
            matches!(verify_request(&q, &keys, T0), Verified::Signed { mac: m, .. } if m == mac)
        );
    }

    #[test]
    fn key_file_errors_carry_line_numbers() {
        let s = SECRET_B64;
        let cases: Vec<(String, usize, &str)> = vec![
            (
                format!("key \"a\" {{\n algorithm hmac-sha256\n secret \"{s}\";\n}};"),
                3,
                "expected ';' after the algorithm",
            ),
            (
                format!("key \"a\" {{\n algorithm hmac-md5;\n secret \"{s}\";\n}};"),
                2,
                "unsupported TSIG algorithm \"hmac-md5\"",
            ),
            (
                format!("\nkey \"a\" {{\n algorithm hmac-sha256;\n secret \"{s}*\";\n}};"),
                4,
                "not valid base64",
            ),
            (
                format!("key \"a\" {{ algorithm hmac-sha256;\n secret \"{s};\n}};"),
                2,
                "unterminated quoted string",
            ),
            (
                format!("key \"a\" {{ algorithm hmac-sha256;\n secret \"{s}\";\n}}"),
                3,
                "expected ';' after '}' before end of file",
            ),
            (
                "key \"a\" {\n algorithm hmac-sha256;\n};".to_string(),
                1,
                "key has no secret",
            ),
            (
                format!("options {{ }};\nkey \"a\" {{ algorithm hmac-sha256; secret \"{s}\"; }};"),
                1,
                "expected a 'key' statement, found \"options\"",
            ),
            (
                format!(
                    "key \"a\" {{ algorithm hmac-sha256; secret \"{s}\"; }};\n\nkey \"A.\" {{ algorithm hmac-sha512; secret \"{s}\"; }};"
                ),
                3,
                "duplicate TSIG key \"a\"",
            ),
            (
                format!("key \"a\" {{ algorithm hmac-sha256;\n {s}; }};"),
                2,
                "unknown key clause (expected 'algorithm' or 'secret')",
            ),
            (
                format!("key \"a b\" {{ algorithm hmac-sha256; secret \"{s}\"; }};"),
                1,
                "invalid TSIG key name",
            ),
            (
                format!(
                    "key:\n  - id: a\n    algorithm: hmac-sha256\n    secret: {s}\n    storage: x\n"
                ),
                5,
                "unsupported key option",
            ),
            (
                format!("key:\n  - id: a\n    algorithm: hmac-sha1\n    secret: {s}\n"),
                3,
                "unsupported TSIG algorithm \"hmac-sha1\"",
            ),
            (
                format!("key:\n  - id: a\n    secret: {s}\nserver:\n"),
                4,
                "only 'key:' sections",
            ),
        ];
        for (text, line, needle) in cases {
            let err = parse_key_file(&text).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, KeyError::File { line: l, .. } if l == line) && msg.contains(needle),
                "{text:?} gave {msg:?}, want line {line} {needle:?}"
            );
            let text = format!("{msg} {err:?}");
            assert!(!text.contains(&s[..12]), "{text}");
        }
        assert_eq!(parse_key_file("# nothing\n").unwrap_err(), KeyError::NoKeys);
    }

    #[test]
    fn request_round_trip_and_strip() {
        let keys = [other_key_named("other.key"), key()];
        let original = query(0x1234, 6);
        let mut q = original.clone();
        let mac = sign_request(&keys[1], &mut q, T0);
        assert_eq!(mac.len(), 32);
        assert_eq!(get_u16(&q, 10), Some(1));
        match verify_request(&q, &keys, T0 + 10) {
            Verified::Signed { key, mac: m, time } => {
                assert_eq!(key.name(), "test.key");
                assert_eq!(m, mac);
                assert_eq!(time, T0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(strip(&q), Some(original.clone()));
        assert_eq!(strip(&original), None);
        assert!(matches!(
            verify_request(&original, &keys, T0),
            Verified::Unsigned
        ));

        // The ID may be rewritten in transit (§4.3.3: Original ID is what is MACed).
        let mut forwarded = q.clone();
        forwarded[0] ^= 0xff;
        assert!(matches!(
            verify_request(&forwarded, &keys, T0),
            Verified::Signed { .. }
        ));

        // Key names compare case-insensitively.
        let mut shouting = q.clone();
        let owner = tsig_of(&q).start;
        shouting[owner + 1..owner + 5].copy_from_slice(b"TEST");
        assert!(matches!(
            verify_request(&shouting, &keys, T0),
            Verified::Signed { .. }
        ));

        // Every algorithm round-trips.
        for alg in Algorithm::ALL {
            let k = Key::new("k", alg, SECRET).unwrap();
            let mut q = query(1, 6);
            let mac = sign_request(&k, &mut q, T0);
            assert_eq!(mac.len(), alg.mac_len());
            let keys = [k];
            assert!(matches!(
                verify_request(&q, &keys, T0),
                Verified::Signed { .. }
            ));
        }
    }

    fn other_key_named(name: &str) -> Key {
        Key::new(name, Algorithm::HmacSha256, b"another secret").unwrap()
    }

    #[test]
    fn bit_flips_are_rejected() {
        let keys = [key()];
        let mut q = query(0x4242, 6);
        sign_request(&keys[0], &mut q, T0);
        let mac_at = q.len() - 6 - 32;
        let timers_at = tsig_of(&q).start + keys[0].name_wire().len() + 10 + 13;
        // Bytes whose flip leaves a well-formed message with a known key: flags, the label
        // "example", QTYPE/QCLASS, time signed, fudge and the MAC itself.
        let names = tsig_of(&q).start..timers_at;
        let type_at = names.start + keys[0].name_wire().len()..names.start + 12;
        let content = [
            2..4,
            13..20,
            21..25,
            timers_at..timers_at + 8,
            mac_at..mac_at + 32,
        ];
        // The ID (bytes 0-1) is excluded: §4.3.3 MACs the Original ID instead.
        for byte in 2..q.len() {
            for bit in 0..8 {
                let mut m = q.clone();
                m[byte] ^= 1 << bit;
                let got = verify_request(&m, &keys, T0);
                let must_be_badsig = content.iter().any(|r| r.contains(&byte));
                // Names in TSIG RRs compare case-insensitively: a case flip must still verify.
                if names.contains(&byte) && bit == 5 && q[byte].is_ascii_alphabetic() {
                    assert!(matches!(got, Verified::Signed { .. }), "{byte}: {got:?}");
                    continue;
                }
                match got {
                    Verified::Failed {
                        error: TsigError::BadSig,
                        key: None,
                        ..
                    } => {}
                    Verified::Failed { .. } if !must_be_badsig => {}
                    // TYPE no longer TSIG: an unsigned message, as if the TSIG were stripped.
                    Verified::Unsigned if type_at.contains(&byte) => {}
                    other => panic!("flip of byte {byte} bit {bit}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn unknown_key_and_algorithm_are_badkey() {
        let mut q = query(1, 6);
        sign_request(&key(), &mut q, T0);
        let others = [other_key_named("nope")];
        match verify_request(&q, &others, T0) {
            Verified::Failed {
                error: TsigError::BadKey,
                key_name_wire,
                algorithm_wire,
                key: None,
                time,
                ..
            } => {
                assert_eq!(key_name_wire, b"\x04test\x03key\x00");
                assert_eq!(algorithm_wire, Algorithm::HmacSha256.wire_name());
                assert_eq!(time, T0);
            }
            other => panic!("{other:?}"),
        }
        let same_name_other_alg = [Key::new("test.key", Algorithm::HmacSha512, SECRET).unwrap()];
        assert!(matches!(
            verify_request(&q, &same_name_other_alg, T0),
            Verified::Failed {
                error: TsigError::BadKey,
                ..
            }
        ));
        let wrong_secret = [other_key()];
        assert!(matches!(
            verify_request(&q, &wrong_secret, T0),
            Verified::Failed {
                error: TsigError::BadSig,
                ..
            }
        ));
    }

    #[test]
    fn time_outside_fudge_is_badtime() {
        let keys = [key()];
        let mut q = query(1, 6);
        let mac = sign_request(&keys[0], &mut q, T0);
        for now in [T0 - 300, T0 + 300] {
            assert!(matches!(
                verify_request(&q, &keys, now),
                Verified::Signed { .. }
            ));
        }
        for now in [T0 - 301, T0 + 301, 0] {
            match verify_request(&q, &keys, now) {
                Verified::Failed {
                    error: TsigError::BadTime,
                    key: Some(k),
                    mac: m,
                    ..
                } => {
                    assert_eq!(k.name(), "test.key");
                    assert_eq!(m, mac);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn badtime_response_carries_server_time_and_verifies() {
        let keys = [key()];
        let mut q = query(9, 6);
        let request_mac = sign_request(&keys[0], &mut q, T0);
        let server_now = T0 + 1000;
        let failed = verify_request(&q, &keys, server_now);
        let mut r = response(&q, 9, true, &[]);
        append_error(&mut r, &failed, server_now);
        let tsig = tsig_of(&r);
        assert_eq!(tsig.error, 18);
        assert_eq!(tsig.time_signed, T0);
        assert_eq!(tsig.other, &server_now.to_be_bytes()[2..]);
        assert_eq!(tsig.mac.len(), 32);
        // Signed with the request MAC: the client can trust the reported time.
        assert_eq!(
            verify_response(&keys[0], &request_mac, &r, T0),
            Err(TsigError::BadTime)
        );
        let mut forged = r.clone();
        let at = forged.len() - 3;
        forged[at] ^= 1;
        assert_eq!(
            verify_response(&keys[0], &request_mac, &forged, T0),
            Err(TsigError::BadSig)
        );
    }

    #[test]
    fn badsig_and_badkey_responses_are_unsigned() {
        let mut q = query(9, 6);
        let request_mac = sign_request(&key(), &mut q, T0);
        for (keys, code, err) in [
            ([other_key()], 16, TsigError::BadSig),
            ([other_key_named("x")], 17, TsigError::BadKey),
        ] {
            let failed = verify_request(&q, &keys, T0);
            let mut r = response(&q, 9, true, &[]);
            append_error(&mut r, &failed, T0 + 5);
            let tsig = tsig_of(&r);
            assert_eq!(
                (tsig.error, tsig.mac.len(), tsig.time_signed),
                (code, 0, T0)
            );
            assert_eq!(tsig.key_name, b"\x04test\x03key\x00");
            assert_eq!(verify_response(&key(), &request_mac, &r, T0), Err(err));
        }
        // FORMERR responses carry no TSIG.
        let mut r = response(&q, 1, true, &[]);
        let before = r.clone();
        append_error(&mut r, &Verified::form_err(), T0);
        assert_eq!(r, before);
    }

    #[test]
    fn response_chain_verifies_and_detects_reordering() {
        let k = key();
        let mut q = query(77, 252);
        let request_mac = sign_request(&k, &mut q, T0);
        let Verified::Signed { mac, .. } = verify_request(&q, std::slice::from_ref(&k), T0) else {
            panic!("request did not verify");
        };
        assert_eq!(mac, request_mac);
        let mut signer = ResponseSigner::new(&k, &mac);
        let mut msgs = vec![
            response(&q, 0, true, &[soa_rr(b"\xc0\x0c", 1)]),
            response(
                &q,
                0,
                false,
                &[a_rr(b"\x03www\x07example\x00", [192, 0, 2, 1])],
            ),
            response(&q, 0, false, &[soa_rr(EXAMPLE, 1)]),
        ];
        for (i, m) in msgs.iter_mut().enumerate() {
            signer.sign(m, T0 + i as u64);
        }
        let name = k.name_wire();
        let alg = Algorithm::HmacSha256.wire_name();
        assert_eq!(rfc_chain_verify(name, alg, SECRET, &mac, &msgs), Ok(()));
        // The single-message client check accepts the first message only.
        assert_eq!(verify_response(&k, &mac, &msgs[0], T0), Ok(()));
        assert_eq!(
            verify_response(&k, &mac, &msgs[1], T0),
            Err(TsigError::BadSig)
        );

        let reordered = vec![msgs[0].clone(), msgs[2].clone(), msgs[1].clone()];
        assert_eq!(
            rfc_chain_verify(name, alg, SECRET, &mac, &reordered),
            Err(1)
        );
        let dropped = vec![msgs[0].clone(), msgs[2].clone()];
        assert_eq!(rfc_chain_verify(name, alg, SECRET, &mac, &dropped), Err(1));
        assert_eq!(rfc_chain_verify(name, alg, SECRET, &[1; 32], &msgs), Err(0));
        assert_eq!(rfc_chain_verify(name, alg, b"wrong", &mac, &msgs), Err(0));
    }

    #[test]
    fn misplaced_or_malformed_tsig_is_formerr() {
        let keys = [key()];
        let mut q = query(1, 6);
        sign_request(&keys[0], &mut q, T0);
        let tsig_rr = q[tsig_of(&q).start..].to_vec();
        let is_formerr = |m: &[u8]| {
            matches!(
                verify_request(m, &keys, T0),
                Verified::Failed {
                    error: TsigError::FormErr,
                    ..
                }
            )
        };

        // TSIG followed by another additional RR.
        let mut m = q.clone();
        m.extend_from_slice(&a_rr(EXAMPLE, [192, 0, 2, 1]));
        m[11] = 2;
        assert!(is_formerr(&m));
        // Two TSIG RRs.
        let mut m = q.clone();
        m.extend_from_slice(&tsig_rr);
        m[11] = 2;
        assert!(is_formerr(&m));
        // TSIG in the answer section.
        let mut m = query(1, 6);
        m.extend_from_slice(&tsig_rr);
        m[7] = 1;
        assert!(is_formerr(&m));
        // Truncated, trailing garbage, short header.
        assert!(is_formerr(&q[..q.len() - 1]));
        let mut m = q.clone();
        m.push(0);
        assert!(is_formerr(&m));
        assert!(is_formerr(&q[..5]));
        // Class other than ANY.
        let mut m = q.clone();
        let class_at = tsig_of(&q).start + keys[0].name_wire().len() + 3;
        m[class_at] = 1;
        assert!(is_formerr(&m));
        // MAC longer than the hash (size field bumped, one more byte appended inside RDATA).
        let mut m = q.clone();
        let size_at = q.len() - 6 - 32 - 2;
        m[size_at + 1] = 33;
        m.insert(size_at + 2, 0);
        let rdlen_at = tsig_of(&q).start + keys[0].name_wire().len() + 8;
        m[rdlen_at + 1] += 1;
        assert!(is_formerr(&m));
    }

    /// Rewrites the (full) MAC of the last TSIG RR with its first `len` bytes.
    fn truncate_mac(msg: &[u8], len: usize) -> Vec<u8> {
        let start = tsig_of(msg).start;
        let mac_at = msg.len() - 6 - 32;
        let mut m = msg[..mac_at - 2].to_vec();
        m.extend_from_slice(&(len as u16).to_be_bytes());
        m.extend_from_slice(&msg[mac_at..mac_at + len]);
        m.extend_from_slice(&msg[mac_at + 32..]);
        let rdlen_at = start + b"\x04test\x03key\x00".len() + 8;
        let rdlen = u16::from_be_bytes([m[rdlen_at], m[rdlen_at + 1]]) - (32 - len as u16);
        m[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        m
    }

    #[test]
    fn truncated_macs() {
        let keys = [key()];
        let mut q = query(1, 6);
        sign_request(&keys[0], &mut q, T0);
        let short = truncate_mac(&q, 16);
        let failed = verify_request(&short, &keys, T0);
        assert!(matches!(
            failed,
            Verified::Failed {
                error: TsigError::BadTrunc,
                key: Some(_),
                ..
            }
        ));
        // Time is checked before truncation (§5.2 order).
        assert!(matches!(
            verify_request(&short, &keys, T0 + 1000),
            Verified::Failed {
                error: TsigError::BadTime,
                ..
            }
        ));
        let mut forged = short.clone();
        let last_mac_byte = forged.len() - 7;
        forged[last_mac_byte] ^= 1;
        assert!(matches!(
            verify_request(&forged, &keys, T0),
            Verified::Failed {
                error: TsigError::BadSig,
                ..
            }
        ));
        assert!(matches!(
            verify_request(&truncate_mac(&q, 15), &keys, T0),
            Verified::Failed {
                error: TsigError::FormErr,
                ..
            }
        ));
        // The BADTRUNC answer is signed and chained to the request MAC.
        let Verified::Failed { mac, .. } = &failed else {
            unreachable!()
        };
        let mut r = response(&short, 9, true, &[]);
        append_error(&mut r, &failed, T0);
        assert_eq!(tsig_of(&r).error, 22);
        assert_eq!(
            verify_response(&keys[0], mac, &r, T0),
            Err(TsigError::BadTrunc)
        );
    }

    #[test]
    fn verify_response_single_message() {
        let k = key();
        let mut notify = query(5, 6);
        notify[2] = 0x20; // opcode NOTIFY
        let mac = sign_request(&k, &mut notify, T0);
        let Verified::Signed { mac: seen, .. } =
            verify_request(&notify, std::slice::from_ref(&k), T0)
        else {
            panic!("notify did not verify");
        };
        let mut ack = response(&notify, 0, true, &[]);
        ResponseSigner::new(&k, &seen).sign(&mut ack, T0 + 1);
        assert_eq!(verify_response(&k, &mac, &ack, T0 + 2), Ok(()));
        assert_eq!(
            verify_response(&k, &mac, &ack, T0 + 400),
            Err(TsigError::BadTime)
        );
        assert_eq!(
            verify_response(&other_key(), &mac, &ack, T0),
            Err(TsigError::BadSig)
        );
        assert_eq!(
            verify_response(&other_key_named("x"), &mac, &ack, T0),
            Err(TsigError::BadKey)
        );
        assert_eq!(
            verify_response(&k, &[0; 32], &ack, T0),
            Err(TsigError::BadSig)
        );
        let unsigned = response(&notify, 0, true, &[]);
        assert_eq!(
            verify_response(&k, &mac, &unsigned, T0),
            Err(TsigError::BadSig)
        );
    }

    // ---- Interop with a real implementation: Knot's kdig. ----

    fn kdig_available() -> bool {
        if Command::new("kdig").arg("--version").output().is_ok() {
            return true;
        }
        if std::env::var("MARATHON_DNS_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("kdig not found but MARATHON_DNS_REQUIRE_INTEROP=1");
        }
        println!("skipped: kdig not found (apt-get install knot-dnsutils)");
        false
    }

    fn kdig(port: u16, extra: &[&str]) -> std::process::Child {
        Command::new("kdig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+retry=0",
                "+timeout=2",
            ])
            .args(["-y", &format!("hmac-sha256:test.key.:{SECRET_B64}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kdig")
    }

    fn output(child: std::process::Child) -> String {
        let out = child.wait_with_output().expect("kdig output");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Runs a kdig SOA query over UDP and answers it with `answer(query)`.
    fn kdig_udp(answer: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let child = kdig(port, &["example.", "SOA"]);
        let mut buf = [0u8; 4096];
        let (n, peer) = loop {
            match sock.recv_from(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.expect("query from kdig"),
            }
        };
        let reply = answer(&buf[..n]);
        sock.send_to(&reply, peer).expect("UDP send on loopback");
        output(child)
    }

    /// Runs a kdig AXFR over TCP and answers with the messages `answer(query)` returns.
    fn kdig_axfr(answer: impl FnOnce(&[u8]) -> Vec<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let child = kdig(port, &["+tcp", "-t", "AXFR", "example."]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("kdig did not connect: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut q).unwrap();
        // kdig stops reading at the first message it rejects: later writes may fail, and the
        // test judges kdig's output, not our writes.
        for m in answer(&q) {
            let frame = [&(m.len() as u16).to_be_bytes()[..], &m].concat();
            if stream.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = stream.flush();
        let out = output(child);
        drop(stream);
        out
    }

    fn signed_request_mac(q: &[u8], keys: &[Key]) -> Vec<u8> {
        match verify_request(q, keys, unix_now()) {
            Verified::Signed { mac, .. } => mac,
            other => panic!("kdig's query did not verify: {other:?}"),
        }
    }

    fn axfr_messages(q: &[u8]) -> Vec<Vec<u8>> {
        vec![
            response(q, 0, true, &[soa_rr(b"\xc0\x0c", 1)]),
            response(
                q,
                0,
                false,
                &[a_rr(b"\x03www\x07example\x00", [192, 0, 2, 1])],
            ),
            response(q, 0, false, &[soa_rr(EXAMPLE, 1)]),
        ]
    }

    #[test]
    fn kdig_udp_query_and_signed_answer() {
        if !kdig_available() {
            return;
        }
        let out = kdig_udp(|q| {
            assert!(matches!(
                verify_request(q, &[other_key()], unix_now()),
                Verified::Failed {
                    error: TsigError::BadSig,
                    ..
                }
            ));
            let mac = signed_request_mac(q, &[key()]);
            let mut r = response(q, 0, true, &[]);
            ResponseSigner::new(&key(), &mac).sign(&mut r, unix_now());
            r
        });
        println!("{out}");
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(!out.contains("WARNING") && !out.contains("BAD"), "{out}");
        assert!(out.contains("TSIG PSEUDOSECTION"), "{out}");
    }

    #[test]
    fn kdig_rejects_a_corrupted_answer() {
        if !kdig_available() {
            return;
        }
        let out = kdig_udp(|q| {
            let mac = signed_request_mac(q, &[key()]);
            let mut r = response(q, 0, true, &[]);
            ResponseSigner::new(&key(), &mac).sign(&mut r, unix_now());
            let mac_byte = r.len() - 7;
            r[mac_byte] ^= 1;
            r
        });
        println!("{out}");
        assert!(out.contains("WARNING") && out.contains("TSIG"), "{out}");
    }

    #[test]
    fn kdig_sees_badtime_and_badsig_errors() {
        if !kdig_available() {
            return;
        }
        let out = kdig_udp(|q| {
            let server_now = unix_now() + 1000;
            let keys = [key()];
            let failed = verify_request(q, &keys, server_now);
            assert!(matches!(
                failed,
                Verified::Failed {
                    error: TsigError::BadTime,
                    ..
                }
            ));
            let mut r = response(q, 9, true, &[]);
            append_error(&mut r, &failed, server_now);
            r
        });
        println!("{out}");
        // kdig reports the time only once the MAC verified...
        assert!(out.contains("status: BADTIME"), "{out}");
        assert!(out.contains("(TSIG out of time window)"), "{out}");
        // ...and says so when it does not.
        let out = kdig_udp(|q| {
            let server_now = unix_now() + 1000;
            let keys = [key()];
            let failed = verify_request(q, &keys, server_now);
            let mut r = response(q, 9, true, &[]);
            append_error(&mut r, &failed, server_now);
            let mac_byte = r.len() - 6 - 6 - 1;
            r[mac_byte] ^= 1;
            r
        });
        println!("{out}");
        assert!(out.contains("(failed to verify TSIG)"), "{out}");
        let out = kdig_udp(|q| {
            let keys = [other_key()];
            let failed = verify_request(q, &keys, unix_now());
            let mut r = response(q, 9, true, &[]);
            append_error(&mut r, &failed, unix_now());
            r
        });
        println!("{out}");
        assert!(out.contains("BADSIG"), "{out}");
    }

    /// A transfer whose chain is broken at message 2 (signed as if it were the first).
    fn broken_chain(q: &[u8]) -> Vec<Vec<u8>> {
        let mac = signed_request_mac(q, &[key()]);
        let mut msgs = axfr_messages(q);
        let mut signer = ResponseSigner::new(&key(), &mac);
        signer.sign(&mut msgs[0], unix_now());
        ResponseSigner::new(&key(), &mac).sign(&mut msgs[1], unix_now());
        signer.sign(&mut msgs[2], unix_now());
        msgs
    }

    fn good_chain(q: &[u8]) -> Vec<Vec<u8>> {
        let mac = signed_request_mac(q, &[key()]);
        let mut signer = ResponseSigner::new(&key(), &mac);
        let mut msgs = axfr_messages(q);
        for m in &mut msgs {
            signer.sign(m, unix_now());
        }
        msgs
    }

    /// kdig verifies only the first message of a transfer (see `process_xfr_packet` in Knot's
    /// kdig_exec.c), so this checks the first-message digest; the chain is left to knotd below.
    #[test]
    fn kdig_axfr_over_tcp() {
        if !kdig_available() {
            return;
        }
        let out = kdig_axfr(good_chain);
        println!("{out}");
        assert!(
            out.contains("www.example.") && out.contains("3 messages"),
            "{out}"
        );
        assert!(!out.contains("WARNING") && !out.contains("error"), "{out}");

        let out = kdig_axfr(|q| {
            let mut msgs = good_chain(q);
            let mac_byte = msgs[0].len() - 7;
            msgs[0][mac_byte] ^= 1;
            msgs
        });
        println!("{out}");
        assert!(out.contains("ERROR: reply verification"), "{out}");
        assert!(out.contains("failed to verify TSIG"), "{out}");
    }

    fn knotd_available() -> bool {
        if Command::new("knotd").arg("--version").output().is_ok() {
            return true;
        }
        if std::env::var("MARATHON_DNS_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("knotd not found but MARATHON_DNS_REQUIRE_INTEROP=1");
        }
        println!("skipped: knotd not found (apt-get install knot)");
        false
    }

    /// Starts a knotd secondary for example. pulling from a fake primary on 127.0.0.1, answers
    /// its transfer with `answer(query)`, and returns knotd's log once the transfer ended.
    fn knotd_axfr(tag: &str, answer: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> String {
        use std::io::BufRead;
        let dir = std::env::temp_dir().join(format!("tsig-knotd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let d = dir.display();
        let conf = format!(
            "server:\n  rundir: \"{d}\"\nlog:\n  - target: stderr\n    any: info\n\
             database:\n  storage: \"{d}\"\nkey:\n  - id: test.key.\n    algorithm: hmac-sha256\n\
             \x20   secret: {SECRET_B64}\nremote:\n  - id: primary\n    address: 127.0.0.1@{port}\n\
             \x20   key: test.key.\nzone:\n  - domain: example.\n    master: primary\n\
             \x20   file: \"{d}/example.zone\"\n"
        );
        std::fs::write(dir.join("knot.conf"), conf).unwrap();
        let mut child = Command::new("knotd")
            .arg("-c")
            .arg(dir.join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn knotd");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = String::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let ended = |log: &str| {
            log.lines().any(|l| {
                (l.contains("AXFR, incoming") && l.contains("finished"))
                    || (l.contains("refresh") && l.contains("failed"))
            })
        };
        while !ended(&log) && Instant::now() < deadline {
            while let Ok(line) = rx.try_recv() {
                log.push_str(&line);
                log.push('\n');
            }
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut q).is_err() {
                continue;
            }
            let Some(qtype_at) = skip_name(&q, HEADER_LEN) else {
                continue;
            };
            let msgs = if get_u16(&q, qtype_at) == Some(252) {
                answer(&q)
            } else {
                // A SOA query before the transfer: one signed answer.
                let mac = signed_request_mac(&q, &[key()]);
                let mut r = response(&q, 0, true, &[soa_rr(b"\xc0\x0c", 1)]);
                ResponseSigner::new(&key(), &mac).sign(&mut r, unix_now());
                vec![r]
            };
            // knotd may close a connection it no longer needs (its log line saying why can
            // lag behind): a failed write ends that connection, not the test.
            for m in msgs {
                let frame = [&(m.len() as u16).to_be_bytes()[..], &m].concat();
                if stream.write_all(&frame).is_err() {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(line) = rx.try_recv() {
            log.push_str(&line);
            log.push('\n');
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        log
    }

    /// knotd, unlike kdig, verifies every message of a transfer against the running chain.
    #[test]
    fn knotd_secondary_checks_the_axfr_chain() {
        if !knotd_available() {
            return;
        }
        let log = knotd_axfr("good", good_chain);
        println!("{log}");
        assert!(
            log.lines()
                .any(|l| l.contains("AXFR, incoming") && l.contains("finished")),
            "{log}"
        );

        let log = knotd_axfr("broken", broken_chain);
        println!("{log}");
        assert!(log.contains("failed to verify TSIG"), "{log}");
        assert!(!log.contains("finished"), "{log}");
    }
}
