//! The W3C [`baggage`](https://www.w3.org/TR/baggage/) header.
//!
//! # Decisions
//!
//! * **Parsing never fails.** A list-member that does not match the W3C
//!   grammar is dropped alone; the others are kept. OWS (spaces and tabs)
//!   around members, keys, values, `=` and `;` is ignored.
//! * **Keys** must be RFC 7230 `token`s and are taken verbatim (W3C does not
//!   percent-encode keys). *OpenTelemetry deviation:* the OTel Rust SDK
//!   percent-decodes keys, so a key such as `a%41` reads as `aA` there.
//! * **Values** must consist of W3C `baggage-octet`s (plus `\`, accepted
//!   leniently because the OTel Rust SDK writes it unencoded) and are
//!   percent-decoded. A `%` not followed by two hex digits stays as it is
//!   (as in OTel). Decoded bytes that are not valid UTF-8 are replaced with
//!   U+FFFD, as the W3C spec requires; *OpenTelemetry deviation:* OTel drops
//!   such a member instead. A `=` inside a value is part of the value, per
//!   the W3C grammar; *OpenTelemetry deviation:* OTel cuts the value at the
//!   second `=`, which is why we always write `=` as `%3D`.
//! * **Properties** (`;name` or `;name=value` after the value) are kept per
//!   member as raw strings with OWS removed and written back unchanged.
//!   Empty properties (`k=v;`) are ignored; a malformed property makes its
//!   member malformed.
//! * **Duplicate keys:** a later member replaces the earlier one's value and
//!   properties in place (like [`Baggage::insert`]; OTel also keeps the
//!   last).
//! * **Parsing limits** (bounded memory whatever the input): a list-member
//!   longer than [`MAX_BYTES`] is treated as malformed. Valid members are
//!   kept in order while they fit in [`MAX_MEMBERS`] distinct keys and
//!   [`MAX_BYTES`] bytes of accepted member text (OWS-trimmed, one `,`
//!   between members); a valid member that does not fit any more is
//!   skipped, and the rest of the header is still read. Every header within
//!   the W3C limits is thus kept whole.
//! * **Writing** ([`Baggage::to_header_value`], [`Display`](fmt::Display))
//!   percent-encodes every value byte outside `baggage-octet` and also `%`
//!   and `=` (`,`, `;` and space are outside `baggage-octet` already), and
//!   skips members whose key is not a token. Within the limits everything is
//!   written; over them, only as many whole members as needed are dropped,
//!   never part of one: over [`MAX_BYTES`], the largest members go first (the
//!   fewest members dropped), then over [`MAX_MEMBERS`], the last ones. The
//!   others keep their order.

use std::fmt;

use super::{split_ascii, split_once_ascii, trim_ows};

/// Most list-members kept when parsing and written when encoding (W3C limit).
///
/// ```
/// assert_eq!(tasklocal::http::baggage::MAX_MEMBERS, 64);
/// ```
pub const MAX_MEMBERS: usize = 64;

/// Most bytes of a written header value, commas and percent-encoding
/// included (W3C limit); also the parsing budget.
///
/// ```
/// assert_eq!(tasklocal::http::baggage::MAX_BYTES, 8192);
/// ```
pub const MAX_BYTES: usize = 8192;

/// An ordered set of baggage entries: the value of a W3C `baggage` header.
///
/// ```
/// use tasklocal::http::baggage::Baggage;
///
/// let mut bag = Baggage::parse("userId=alice, serverNode=DF%2028;ttl=5");
/// assert_eq!(bag.get("serverNode"), Some("DF 28"));
/// bag.insert("isProduction", "false");
/// assert_eq!(
///     bag.to_string(),
///     "userId=alice,serverNode=DF%2028;ttl=5,isProduction=false"
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    key: String,
    value: String,
    properties: Vec<String>,
}

impl Baggage {
    /// Creates an empty baggage.
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    /// assert!(Baggage::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a `baggage` header value; never fails (see the
    /// [module docs](self) for what is dropped and the limits).
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    ///
    /// let bag = Baggage::parse("key1 = value1, bad member, key2=%E6%97%A5%E6%9C%AC");
    /// let pairs: Vec<_> = bag.iter().collect();
    /// assert_eq!(pairs, [("key1", "value1"), ("key2", "日本")]);
    /// ```
    pub fn parse(header: &str) -> Self {
        Self::parse_all([header])
    }

    /// Parses several `baggage` header lines as one list (HTTP lets a list be split
    /// over several lines), with one budget for all of them.
    pub(crate) fn parse_all<S: AsRef<str>>(headers: impl IntoIterator<Item = S>) -> Self {
        let mut bag = Self {
            members: Vec::with_capacity(4),
        };
        let mut used = 0;
        for header in headers {
            for raw in split_ascii(header.as_ref(), b',').map(trim_ows) {
                if raw.len() > MAX_BYTES {
                    continue;
                }
                let Some(member) = parse_member(raw) else {
                    continue;
                };
                let cost = raw.len() + usize::from(used > 0);
                let index = bag.position(&member.key);
                if used + cost > MAX_BYTES || (index.is_none() && bag.members.len() == MAX_MEMBERS)
                {
                    continue;
                }
                used += cost;
                match index.and_then(|i| bag.members.get_mut(i)) {
                    Some(slot) => *slot = member,
                    None => bag.members.push(member),
                }
            }
        }
        bag
    }

    /// Returns the value of `key`, if present.
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    /// let bag = Baggage::parse("a=1");
    /// assert_eq!(bag.get("a"), Some("1"));
    /// assert_eq!(bag.get("b"), None);
    /// ```
    pub fn get(&self, key: &str) -> Option<&str> {
        self.member(key).map(|m| m.value.as_str())
    }

    /// Returns the properties of `key` as raw strings (`name` or
    /// `name=value`), if the key is present.
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    /// let bag = Baggage::parse("k=v; p1 ; p2 = x");
    /// assert_eq!(bag.properties("k"), Some(&["p1".to_string(), "p2=x".to_string()][..]));
    /// ```
    pub fn properties(&self, key: &str) -> Option<&[String]> {
        self.member(key).map(|m| m.properties.as_slice())
    }

    /// Iterates over `(key, value)` pairs in header order.
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    /// let bag = Baggage::parse("b=2,a=1");
    /// assert_eq!(bag.iter().collect::<Vec<_>>(), [("b", "2"), ("a", "1")]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.members
            .iter()
            .map(|m| (m.key.as_str(), m.value.as_str()))
    }

    /// Number of entries.
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    /// assert_eq!(Baggage::parse("a=1,b=2").len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no entries.
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    /// assert!(Baggage::parse("not a member").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Sets `key` to `value`. An existing key keeps its position (its
    /// properties are cleared and its old value returned); a new key is
    /// appended. Any string is accepted, but a key that is not an RFC 7230
    /// token is never written to a header.
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    /// let mut bag = Baggage::parse("a=1;p,b=2");
    /// assert_eq!(bag.insert("a", "x"), Some("1".to_string()));
    /// assert_eq!(bag.insert("c", "3"), None);
    /// assert_eq!(bag.to_string(), "a=x,b=2,c=3");
    /// ```
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let (key, value) = (key.into(), value.into());
        match self.position(&key).and_then(|i| self.members.get_mut(i)) {
            Some(m) => {
                m.properties.clear();
                Some(std::mem::replace(&mut m.value, value))
            }
            None => {
                self.members.push(Member {
                    key,
                    value,
                    properties: Vec::new(),
                });
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    ///
    /// ```
    /// use tasklocal::http::baggage::Baggage;
    /// let mut bag = Baggage::parse("a=1,b=2");
    /// assert_eq!(bag.remove("a"), Some("1".to_string()));
    /// assert_eq!(bag.to_string(), "b=2");
    /// ```
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let index = self.position(key)?;
        Some(self.members.remove(index).value)
    }

    /// Gives the present `key` these properties (raw `name` or `name=value` strings
    /// as [`properties`](Self::properties) returns them, already validated).
    pub(crate) fn set_properties(&mut self, key: &str, properties: &[String]) {
        if let Some(index) = self.position(key) {
            self.members[index].properties = properties.to_vec();
        }
    }

    /// Encodes the header value and returns it with the number of entries
    /// that were not written: those whose key is not a token plus those
    /// dropped whole to stay within [`MAX_MEMBERS`] members and [`MAX_BYTES`]
    /// bytes (the largest first while the bytes are over, then the last ones
    /// while the members are; see the [module docs](self)).
    /// [`Display`](fmt::Display) writes the same string.
    ///
    /// ```
    /// use tasklocal::http::Baggage;
    /// let mut bag = Baggage::new();
    /// bag.insert("bad key", "x");
    /// bag.insert("k", "a b=c,d;e%");
    /// assert_eq!(bag.to_header_value(), ("k=a%20b%3Dc%2Cd%3Be%25".to_string(), 1));
    ///
    /// // One member too large for the header: only that one is dropped.
    /// let mut bag = Baggage::new();
    /// bag.insert("request_id", "r1");
    /// bag.insert("huge", "x".repeat(9000));
    /// bag.insert("tenant", "acme");
    /// assert_eq!(bag.to_header_value(), ("request_id=r1,tenant=acme".to_string(), 1));
    /// ```
    pub fn to_header_value(&self) -> (String, usize) {
        write_members(
            self.members
                .iter()
                .map(|m| (m.key.as_str(), m.value.as_str(), m.properties.as_slice())),
        )
    }

    /// Whether some entry has properties.
    pub(crate) fn has_properties(&self) -> bool {
        self.members.iter().any(|m| !m.properties.is_empty())
    }

    /// The entries with their properties, by value, in order.
    pub(crate) fn into_members(
        self,
    ) -> impl ExactSizeIterator<Item = (String, String, Vec<String>)> {
        self.members
            .into_iter()
            .map(|m| (m.key, m.value, m.properties))
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.members.iter().position(|m| m.key == key)
    }

    fn member(&self, key: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.key == key)
    }
}

impl fmt::Display for Baggage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header_value().0)
    }
}

/// RFC 7230 `token`: one or more `tchar`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| TCHAR[usize::from(b)])
}

/// `tchar`, as a table (one load per byte).
static TCHAR: [bool; 256] = byte_table!(|b| b.is_ascii_alphanumeric()
    || matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    ));

/// W3C `baggage-octet`: US-ASCII except CTLs, whitespace, DQUOTE, comma,
/// semicolon and backslash.
const fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// A raw value byte as accepted when parsing: a baggage-octet, or `\` which the OTel
/// Rust SDK writes unencoded (deviation from W3C, accepted leniently).
static RAW_VALUE: [bool; 256] = byte_table!(|b| is_baggage_octet(b) || b == b'\\');

/// A value byte written as it is (else percent-encoded): a `baggage-octet` other than
/// `%` and `=`.
static PLAIN_VALUE: [bool; 256] = byte_table!(|b| is_baggage_octet(b) && b != b'%' && b != b'=');

fn is_raw_value(s: &str) -> bool {
    s.bytes().all(|b| RAW_VALUE[usize::from(b)])
}

/// Parses one OWS-trimmed list-member; `None` if malformed.
fn parse_member(raw: &str) -> Option<Member> {
    match split_plain(raw) {
        Some((key, value, escaped)) => Some(Member {
            key: key.to_owned(),
            value: match escaped {
                true => percent_decode(value),
                false => value.to_owned(),
            },
            properties: Vec::new(),
        }),
        None => parse_member_in_full(raw),
    }
}

/// The common member, `token=value` with no OWS inside and no properties, checked in
/// one pass over its bytes: the key and the value, and whether the value has a `%`.
/// `None` for anything else, valid or not, which [`parse_member_in_full`] then reads:
/// every member this accepts, that reads the same (a token has no `=`, `;`, space or
/// tab; a raw value no `;`, space or tab).
fn split_plain(raw: &str) -> Option<(&str, &str, bool)> {
    let bytes = raw.as_bytes();
    let key_len = bytes.iter().position(|&b| !TCHAR[usize::from(b)])?;
    if key_len == 0 || bytes[key_len] != b'=' {
        return None;
    }
    let mut escaped = false;
    for &b in &bytes[key_len + 1..] {
        if !RAW_VALUE[usize::from(b)] {
            return None;
        }
        escaped |= b == b'%';
    }
    // Both cuts are next to the ASCII `=`.
    Some((&raw[..key_len], &raw[key_len + 1..], escaped))
}

/// [`parse_member`] of any member: OWS around the key, the value and `=`, properties.
fn parse_member_in_full(raw: &str) -> Option<Member> {
    let mut parts = split_ascii(raw, b';');
    let (key, value) = split_once_ascii(parts.next()?, b'=')?;
    let (key, value) = (trim_ows(key), trim_ows(value));
    if !is_token(key) || !is_raw_value(value) {
        return None;
    }
    let properties = parts
        .map(trim_ows)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => {
                let (k, v) = (trim_ows(k), trim_ows(v));
                (is_token(k) && is_raw_value(v)).then(|| format!("{k}={v}"))
            }
            None => is_token(p).then(|| p.to_owned()),
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Member {
        key: key.to_owned(),
        value: percent_decode(value),
        properties,
    })
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept.
/// Invalid UTF-8 becomes U+FFFD (W3C Baggage, "value").
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|h| b == b'%' && h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}

/// Whether a value byte is written as it is (else percent-encoded).
fn is_plain_value_byte(b: u8) -> bool {
    PLAIN_VALUE[usize::from(b)]
}

/// Percent-encodes every byte outside `baggage-octet`, and `%` and `=`.
fn encode_value(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // The common case, nothing to escape: one copy.
    if value.bytes().all(is_plain_value_byte) {
        out.push_str(value);
        return;
    }
    for b in value.bytes() {
        if is_plain_value_byte(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// The length of a member once written, or `None` if it cannot be written: a key that
/// is not a token, or longer than [`MAX_BYTES`] alone.
fn written_len(key: &str, value: &str, properties: &[String]) -> Option<usize> {
    // Encoding never shrinks: a value too long as it is is not even looked at.
    if !is_token(key) || key.len() + 1 + value.len() > MAX_BYTES {
        return None;
    }
    let value_len = value.len() + 2 * value.bytes().filter(|&b| !is_plain_value_byte(b)).count();
    let properties_len: usize = properties.iter().map(|p| 1 + p.len()).sum();
    let len = key.len() + 1 + value_len + properties_len;
    (len <= MAX_BYTES).then_some(len)
}

/// Writes `(key, value, properties)` members as a header value within the limits, and
/// returns it with the number of members not written (see
/// [`Baggage::to_header_value`]).
///
/// The common case — every key a token, all within the limits — takes two passes over
/// `members` and no allocation but the result: the lengths are summed first, then the
/// members written into a string of exactly that size. Anything else goes to
/// [`write_within_limits`].
pub(crate) fn write_members<'a, I>(members: I) -> (String, usize)
where
    I: Iterator<Item = (&'a str, &'a str, &'a [String])> + Clone,
{
    let mut bytes = 0;
    for (i, (key, value, properties)) in members.clone().enumerate() {
        // Commas included; stops at the first member that cannot be written or is over
        // a limit, so that a huge MDC is not measured twice.
        match written_len(key, value, properties) {
            Some(len) if i < MAX_MEMBERS && bytes + len + usize::from(i > 0) <= MAX_BYTES => {
                bytes += len + usize::from(i > 0);
            }
            _ => return write_within_limits(members),
        }
    }
    let mut out = String::with_capacity(bytes);
    for (key, value, properties) in members {
        write_member(&mut out, key, value, properties);
    }
    debug_assert_eq!(out.len(), bytes);
    (out, 0)
}

/// Appends one member, after a comma unless `out` is empty.
fn write_member(out: &mut String, key: &str, value: &str, properties: &[String]) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(key);
    out.push('=');
    encode_value(value, out);
    for p in properties {
        out.push(';');
        out.push_str(p);
    }
}

/// [`write_members`] when some member cannot be written or they do not all fit: the
/// lengths are kept, the members to drop chosen (see [`Baggage::to_header_value`]), and
/// the others written straight into the result.
fn write_within_limits<'a, I>(members: I) -> (String, usize)
where
    I: Iterator<Item = (&'a str, &'a str, &'a [String])> + Clone,
{
    let mut lengths: Vec<Option<usize>> = members
        .clone()
        .map(|(key, value, properties)| written_len(key, value, properties))
        .collect();
    let total = lengths.len();
    let mut kept = lengths.iter().flatten().count();
    // Bytes, with one comma between members.
    let mut bytes = lengths.iter().flatten().sum::<usize>() + kept.saturating_sub(1);
    if bytes > MAX_BYTES {
        // Largest first; of equal ones, the last first.
        let mut by_size: Vec<usize> = (0..total).filter(|&i| lengths[i].is_some()).collect();
        by_size.sort_by_key(|&i| std::cmp::Reverse((lengths[i], i)));
        for i in by_size {
            if bytes <= MAX_BYTES {
                break;
            }
            if let Some(len) = lengths[i].take() {
                bytes -= len + usize::from(kept > 1);
                kept -= 1;
            }
        }
    }
    // Members: the last ones go.
    for len in lengths.iter_mut().rev() {
        if kept <= MAX_MEMBERS {
            break;
        }
        if len.take().is_some() {
            kept -= 1;
        }
    }
    let mut out = String::with_capacity(bytes);
    for ((key, value, properties), len) in members.zip(&lengths) {
        if len.is_some() {
            write_member(&mut out, key, value, properties);
        }
    }
    (out, total - kept)
}

#[cfg(test)]
mod tests;
