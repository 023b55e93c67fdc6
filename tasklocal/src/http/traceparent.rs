//! The W3C Trace Context Level 2 ([spec](https://www.w3.org/TR/trace-context-2/))
//! `traceparent` and `tracestate` headers.
//!
//! # Decisions
//!
//! * Leading and trailing OWS (spaces and tabs) around a header value is
//!   ignored: it is not part of an HTTP field value (RFC 9110 §5.5) and the
//!   W3C test suite requires accepting it. Nothing else is trimmed.
//! * [`TraceParent`] keeps only the flags defined by Level 2 (`sampled`
//!   0x01, `random` 0x02); other bits are zeroed on parse, as the spec
//!   requires of vendors, and the header is always written as version `00`.
//! * [`TraceState`] follows the current key grammar of the W3C editor's draft
//!   (`w3c/trace-context`, `spec/20-http_request_header_format.md`): a key is 1 to
//!   256 characters, starts with a lowercase letter or a digit, and continues
//!   with lowercase letters, digits, `_`, `-`, `*`, `/` and `@` — so `foo@`,
//!   `foo@@bar` and `foo@bar@baz` are keys, `@foo` is not. The older
//!   `tenant@system` split (at most 241 and 14 characters) is gone.
//! * A repeated key keeps its first member; later ones are dropped (the spec
//!   lets a vendor discard duplicates, and the W3C test suite at strict level 2
//!   expects the state to be kept).
//! * A `tracestate` with an invalid list-member or more than
//!   [`MAX_TRACESTATE_MEMBERS`] members (counted as received, repeats
//!   included) is discarded whole; empty members, OWS around members and
//!   several header lines are fine. The spec allows dropping either the bad
//!   member or the whole header; the W3C test suite (strict level 2) requires
//!   the whole header, and so does the OpenTelemetry SDK for invalid members.
//!   Unlike `baggage`, a `tracestate` is one vendor's opaque state: a partial
//!   one could mislead it. The `traceparent` is kept either way.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{split_ascii, split_once_ascii, trim_ows};

const SAMPLED: u8 = 0x01;
const RANDOM: u8 = 0x02;

/// A parsed or generated `traceparent` header.
///
/// ```
/// use tasklocal::http::traceparent::TraceParent;
///
/// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
/// assert!(tp.sampled() && !tp.random());
/// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` header value; `None` if invalid.
    ///
    /// Version `00` must be exactly 55 characters. A higher version (not
    /// `ff`) is accepted if it is 55 characters or longer with a `-` as the
    /// 56th character; what follows is ignored. All hex must be lowercase
    /// and the ids must not be all zeros.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    ///
    /// let id = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
    /// assert!(TraceParent::parse(&format!(" 00-{id}-01\t")).is_some());
    /// assert!(TraceParent::parse(&format!("cc-{id}-09-what-the-future-holds")).is_some());
    /// assert!(TraceParent::parse(&format!("00-{id}-01-")).is_none());
    /// assert!(TraceParent::parse(&format!("ff-{id}-01")).is_none());
    /// assert!(TraceParent::parse(&format!("00-{}-01", id.to_uppercase())).is_none());
    /// ```
    pub fn parse(header: &str) -> Option<Self> {
        Self::parse_bytes(header.as_bytes())
    }

    /// [`parse`](Self::parse) of a header line as it came: what is not ASCII is
    /// invalid anyway, so the line needs no UTF-8 check first.
    pub(crate) fn parse_bytes(header: &[u8]) -> Option<Self> {
        let b = trim_ows_bytes(header);
        let version = hex(b.get(0..2)?)?;
        let well_formed = version != 0xff
            && b.get(2) == Some(&b'-')
            && b.get(35) == Some(&b'-')
            && b.get(52) == Some(&b'-')
            && match b.get(55) {
                None => true,
                Some(&c) => version != 0 && c == b'-',
            };
        let trace_id = hex(b.get(3..35)?)?;
        let parent_id = u64::try_from(hex(b.get(36..52)?)?).ok()?;
        let flags = u8::try_from(hex(b.get(53..55)?)?).ok()?;
        (well_formed && trace_id != 0 && parent_id != 0).then_some(Self {
            trace_id,
            parent_id,
            flags: flags & (SAMPLED | RANDOM),
        })
    }

    /// Starts a new trace: random non-zero trace and parent ids, the
    /// `random` flag set and `sampled` unset (see [`with_sampled`](Self::with_sampled)).
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    ///
    /// let tp = TraceParent::new_random();
    /// assert!(tp.random() && !tp.sampled());
    /// assert_ne!(tp.trace_id(), TraceParent::new_random().trace_id());
    /// assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
    /// ```
    pub fn new_random() -> Self {
        let trace_id = loop {
            let id = u128::from(random_u64()) << 64 | u128::from(random_u64());
            if id != 0 {
                break id;
            }
        };
        Self {
            trace_id,
            parent_id: random_nonzero_u64(),
            flags: RANDOM,
        }
    }

    /// A child context: same trace id and flags, new random non-zero parent id.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    ///
    /// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
    /// let child = tp.with_new_parent_id();
    /// assert_eq!(child.trace_id(), tp.trace_id());
    /// assert_ne!(child.parent_id(), tp.parent_id());
    /// assert_eq!(child.flags(), 0x03);
    /// ```
    #[must_use = "returns a new traceparent; `self` is unchanged"]
    pub fn with_new_parent_id(&self) -> Self {
        Self {
            parent_id: random_nonzero_u64(),
            ..*self
        }
    }

    /// Returns a copy with the `sampled` flag set or cleared.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    /// assert!(TraceParent::new_random().with_sampled(true).sampled());
    /// ```
    #[must_use = "returns a new traceparent"]
    pub fn with_sampled(self, sampled: bool) -> Self {
        let flags = if sampled {
            self.flags | SAMPLED
        } else {
            self.flags & !SAMPLED
        };
        Self { flags, ..self }
    }

    /// The trace id as 32 lowercase hex digits.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    /// assert_eq!(TraceParent::new_random().trace_id().len(), 32);
    /// ```
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The parent (span) id as 16 lowercase hex digits.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    /// assert_eq!(TraceParent::new_random().parent_id().len(), 16);
    /// ```
    pub fn parent_id(&self) -> String {
        format!("{:016x}", self.parent_id)
    }

    /// The `sampled` flag (0x01).
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    /// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    /// assert!(!tp.sampled());
    /// ```
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The Level 2 `random` flag (0x02): the trace id's right-most 7 bytes
    /// are random.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    /// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").unwrap();
    /// assert!(tp.random() && !tp.sampled());
    /// ```
    pub fn random(&self) -> bool {
        self.flags & RANDOM != 0
    }

    /// The trace flags; only the Level 2 bits (0x01, 0x02) are ever set.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceParent;
    /// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").unwrap();
    /// assert_eq!(tp.flags(), 0x01);
    /// ```
    pub fn flags(&self) -> u8 {
        self.flags
    }
}

impl TraceParent {
    /// A `traceparent` from its fields, for the conversions from other libraries'
    /// span contexts; `None` when an id is all zeros (invalid).
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn from_parts(trace_id: u128, parent_id: u64, flags: u8) -> Option<Self> {
        (trace_id != 0 && parent_id != 0).then_some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id and the parent id as numbers.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn ids(&self) -> (u128, u64) {
        (self.trace_id, self.parent_id)
    }

    /// The header value: `00-{trace id}-{parent id}-{flags}` in lowercase hex.
    pub(crate) fn encode(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let (high, low) = ((self.trace_id >> 64) as u64, self.trace_id as u64);
        out[3..19].copy_from_slice(&hex16(high));
        out[19..35].copy_from_slice(&hex16(low));
        out[36..52].copy_from_slice(&hex16(self.parent_id));
        out[53..55].copy_from_slice(&hex16(u64::from(self.flags))[14..]);
        out
    }
}

/// `n` as 16 lowercase hex digits, computed 8 digits at a time in a `u64` (SWAR): the
/// 8 nibbles of a 32-bit half are spread to one byte each, then every byte becomes its
/// ASCII digit at once. About 20 instructions per half, no table, no per-digit loop.
fn hex16(n: u64) -> [u8; 16] {
    /// `0x1234_5678` -> `0x0102_0304_0506_0708`: each step moves the upper half of
    /// every lane up by half a lane (16, 8, then 4 bits) and masks.
    fn spread(half: u32) -> u64 {
        let x = u64::from(half);
        let x = (x | x << 16) & 0x0000_ffff_0000_ffff;
        let x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
        (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f
    }
    /// Each byte `0..=15` to `b'0'..=b'9'` or `b'a'..=b'f'`: adding 6 carries into bit 4
    /// exactly for 10 and over, which then get the extra `b'a' - b'0' - 10 = 39`.
    fn digits(nibbles: u64) -> [u8; 8] {
        let letters = ((nibbles + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        (nibbles + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
    }
    let mut out = [0; 16];
    out[..8].copy_from_slice(&digits(spread((n >> 32) as u32)));
    out[8..].copy_from_slice(&digits(spread(n as u32)));
    out
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always ASCII.
        f.write_str(std::str::from_utf8(&self.encode()).map_err(|_| fmt::Error)?)
    }
}

/// Lowercase hex digits (at most 32) to a number; `None` otherwise.
fn hex(digits: &[u8]) -> Option<u128> {
    // In two u64 halves: a u128 shift per digit costs several instructions.
    let (high, low) = digits.split_at(digits.len().saturating_sub(16));
    Some(u128::from(hex64(high)?) << 64 | u128::from(hex64(low)?))
}

/// Lowercase hex digits (at most 16) to a number; `None` otherwise.
fn hex64(digits: &[u8]) -> Option<u64> {
    // Branch-free per digit: a table gives each byte its value, or 0x80 when it is no
    // lowercase hex digit; the flags are or-ed together and checked once at the end.
    let mut n = 0u64;
    let mut invalid = 0u8;
    for &c in digits {
        let digit = HEX_DIGIT[usize::from(c)];
        invalid |= digit;
        n = n << 4 | u64::from(digit & 0xf);
    }
    (invalid & 0x80 == 0).then_some(n)
}

/// The value of a lowercase hex digit, 0x80 for any other byte.
static HEX_DIGIT: [u8; 256] = {
    let mut table = [0x80; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// [`trim_ows`] of bytes.
fn trim_ows_bytes(b: &[u8]) -> &[u8] {
    let is_ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !is_ows(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_ows(c)).map_or(start, |i| i + 1);
    &b[start..end]
}

/// Pseudo-random bits from std's randomly keyed SipHash over a counter.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn random_nonzero_u64() -> u64 {
    loop {
        let n = random_u64();
        if n != 0 {
            break n;
        }
    }
}

/// Most list-members a [`TraceState`] keeps (W3C limit).
///
/// ```
/// assert_eq!(tasklocal::http::traceparent::MAX_TRACESTATE_MEMBERS, 32);
/// ```
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A `tracestate` header: vendor `key=value` pairs, most recent first.
///
/// ```
/// use tasklocal::http::traceparent::TraceState;
///
/// let ts = TraceState::parse("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE");
/// assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
/// assert_eq!(ts.to_string(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TraceState {
    /// The members as written: `key=value` joined by `,`, every member valid, no key
    /// twice, at most [`MAX_TRACESTATE_MEMBERS`]. This canonical header line is the whole
    /// representation: writing it (`inject`, on every outgoing call) is one copy, parsing
    /// a header makes one string, and equality is member-wise. A value has no `,` or `=`
    /// and a key no `=`, so the members and their parts are found again by splitting.
    header: String,
}

/// The longest canonical header: 32 members of a 256-character key, `=` and a
/// 256-character value, with 31 commas.
const MAX_TRACESTATE_BYTES: usize = MAX_TRACESTATE_MEMBERS * (256 + 1 + 256 + 1) - 1;

impl TraceState {
    /// Parses a `tracestate` header value; never fails. Empty members are
    /// skipped and a repeated key keeps its first value; an invalid member or
    /// more than [`MAX_TRACESTATE_MEMBERS`] members make the whole state empty
    /// (see the [module docs](self)).
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceState;
    ///
    /// let ts = TraceState::parse(" a=1,, t@sys=4 ,b=trailing ");
    /// assert_eq!(ts.iter().collect::<Vec<_>>(), [("a", "1"), ("t@sys", "4"), ("b", "trailing")]);
    /// assert_eq!(TraceState::parse("foo@@bar=1").get("foo@@bar"), Some("1"));
    /// assert_eq!(TraceState::parse("a=1,a=2").to_string(), "a=1");
    /// assert!(TraceState::parse("a=1,BAD=2").is_empty());
    /// assert!(TraceState::parse("a=1,@b=2").is_empty());
    /// ```
    pub fn parse(header: &str) -> Self {
        Self::parse_all([header])
    }

    /// Parses several `tracestate` header lines as one list (HTTP lets a list be split
    /// over several lines).
    pub(crate) fn parse_all<S: AsRef<str>>(headers: impl IntoIterator<Item = S>) -> Self {
        let mut state = Self::default();
        let mut received = 0;
        for line in headers {
            let line = line.as_ref();
            // A line holds at most its own length of canonical members (plus a comma):
            // one allocation for the usual single line already written canonically.
            // Capped, so that a line of commas and spaces reserves no more than a
            // full state.
            state
                .header
                .reserve((line.len() + 1).min(MAX_TRACESTATE_BYTES));
            for member in split_ascii(line, b',').map(trim_ows) {
                if member.is_empty() {
                    continue;
                }
                received += 1;
                match split_once_ascii(member, b'=') {
                    Some((key, value))
                        if is_key(key) && is_value(value) && received <= MAX_TRACESTATE_MEMBERS =>
                    {
                        // A repeated key: the first member stays, this one is dropped.
                        if state.header.is_empty() {
                            state.header.push_str(member);
                        } else if state.get(key).is_none() {
                            state.header.push(',');
                            state.header.push_str(member);
                        }
                    }
                    // Invalid, or over the member limit: discarded whole.
                    _ => return Self::default(),
                }
            }
        }
        state
    }

    /// Returns the value of `key`, if present.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceState;
    /// assert_eq!(TraceState::parse("a=1").get("a"), Some("1"));
    /// ```
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Iterates over `(key, value)` pairs in header order.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceState;
    /// let ts = TraceState::parse("b=2,a=1");
    /// assert_eq!(ts.iter().collect::<Vec<_>>(), [("b", "2"), ("a", "1")]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        // Every member has its `=`: `filter_map` drops nothing.
        self.members()
            .filter_map(|(start, end)| split_once_ascii(&self.header[start..end], b'='))
    }

    /// Number of members.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceState;
    /// assert_eq!(TraceState::parse("a=1,b=2").len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        match self.header.is_empty() {
            true => 0,
            false => 1 + self.header.bytes().filter(|&b| b == b',').count(),
        }
    }

    /// Whether there are no members.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceState;
    /// assert!(TraceState::parse("").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.header.is_empty()
    }

    /// Sets `key` to `value` and moves it to the front, as the spec asks of
    /// a vendor updating its entry; the right-most member is dropped if
    /// there are then more than [`MAX_TRACESTATE_MEMBERS`]. Returns `false`
    /// (and changes nothing) if the key or value is invalid.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceState;
    /// let mut ts = TraceState::parse("a=1,b=2");
    /// assert!(ts.insert("b", "3"));
    /// assert!(!ts.insert("B", "3"));
    /// assert_eq!(ts.to_string(), "b=3,a=1");
    /// ```
    pub fn insert(&mut self, key: &str, value: &str) -> bool {
        if !is_key(key) || !is_value(value) {
            return false;
        }
        self.remove(key);
        // The right-most member goes when 32 are there already.
        let kept = match self.members().nth(MAX_TRACESTATE_MEMBERS - 1) {
            Some((start, _)) => &self.header[..start - 1],
            None => &self.header,
        };
        let mut header = String::with_capacity(key.len() + 1 + value.len() + 1 + kept.len());
        header.push_str(key);
        header.push('=');
        header.push_str(value);
        if !kept.is_empty() {
            header.push(',');
            header.push_str(kept);
        }
        self.header = header;
        true
    }

    /// Removes `key`, returning its value.
    ///
    /// ```
    /// use tasklocal::http::traceparent::TraceState;
    /// let mut ts = TraceState::parse("a=1,b=2");
    /// assert_eq!(ts.remove("a"), Some("1".to_string()));
    /// assert_eq!(ts.to_string(), "b=2");
    /// ```
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let (start, end) = self.members().find(|&(start, end)| {
            split_once_ascii(&self.header[start..end], b'=').is_some_and(|(k, _)| k == key)
        })?;
        let value = self.header[start + key.len() + 1..end].to_owned();
        // The member and one comma next to it: the one after, or for the last member
        // the one before.
        let cut = if end < self.header.len() {
            start..end + 1
        } else {
            start.saturating_sub(1)..end
        };
        self.header.replace_range(cut, "");
        Some(value)
    }

    /// The byte ranges of the members in `header`.
    fn members(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let header = self.header.as_bytes();
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= header.len() {
                return None;
            }
            let end = header[start..]
                .iter()
                .position(|&b| b == b',')
                .map_or(header.len(), |at| start + at);
            let member = (start, end);
            start = end + 1;
            Some(member)
        })
    }
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header)
    }
}

impl TraceState {
    /// The header line (what `Display` writes): a copy of the canonical form.
    pub(crate) fn to_header_value(&self) -> String {
        self.header.clone()
    }
}

/// `key = ( lcalpha / DIGIT ) 0*255( keychar )`, `keychar = lcalpha / DIGIT /
/// "_" / "-" / "*" / "/" / "@"`: 1 to 256 characters, `@` anywhere but first.
fn is_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() <= 256
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter().all(|&c| KEY_CHARS[usize::from(c)])
}

/// 1 to 256 printable ASCII characters except `,` and `=`, not ending in a space.
fn is_value(value: &str) -> bool {
    (1..=256).contains(&value.len())
        && !value.ends_with(' ')
        && value.bytes().all(|c| VALUE_CHARS[usize::from(c)])
}

/// `keychar`, as a table: one load per byte instead of a chain of comparisons.
static KEY_CHARS: [bool; 256] = byte_table!(|c| c.is_ascii_lowercase()
    || c.is_ascii_digit()
    || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@'));

/// `chr = %x20 / nblk-chr` with `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`.
static VALUE_CHARS: [bool; 256] =
    byte_table!(|c| matches!(c, 0x20..=0x7e) && c != b',' && c != b'=');

#[cfg(test)]
mod tests;
