use std::fmt;

/// A character that needs no quoting in a `key=value` text: ASCII graphic except
/// `"`, `=` and `\`, or a non-ASCII letter or digit.
fn is_plain_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_graphic() && !matches!(c, '"' | '=' | '\\')
    } else {
        c.is_alphanumeric()
    }
}

/// Whether `s` can be written as it is in a `key=value` text.
pub(crate) fn is_plain(s: &str) -> bool {
    // Bytes first: the usual key or value is ASCII, and a byte test needs no UTF-8
    // decoding; anything else is decided char by char.
    !s.is_empty()
        && (s
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'))
            || s.chars().all(is_plain_char))
}

/// Writes a text as it is when it is [plain](is_plain), else quoted with Rust's
/// escapes (`"a b\n"`): control characters, line and paragraph separators,
/// invisible and bidirectional formatting characters all come out as escapes.
pub(crate) struct Text<'a>(pub(crate) &'a str);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_plain(self.0) {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Writes a JSON string literal, quotes included. Besides what JSON requires,
/// escapes U+2028/U+2029 and every other control character, so that the result
/// is one line whatever a reader takes for a line break.
#[cfg(feature = "tracing")]
pub(crate) struct Json<'a>(pub(crate) &'a str);

#[cfg(feature = "tracing")]
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut plain_from = 0;
        for (at, c) in self.0.char_indices() {
            let escaped = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                _ if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => None,
                _ => continue,
            };
            f.write_str(&self.0[plain_from..at])?;
            match escaped {
                Some(escaped) => f.write_str(escaped)?,
                None => write!(f, "\\u{:04x}", c as u32)?,
            }
            plain_from = at + c.len_utf8();
        }
        f.write_str(&self.0[plain_from..])?;
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_quotes_only_what_needs_it() {
        assert_eq!(Text("req-1").to_string(), "req-1");
        assert_eq!(Text("é/ü:1").to_string(), "é/ü:1");
        assert_eq!(Text("").to_string(), "\"\"");
        assert_eq!(Text("a b").to_string(), "\"a b\"");
        assert_eq!(Text("a=b").to_string(), "\"a=b\"");
        assert_eq!(
            Text("x\nrequest_id=other").to_string(),
            "\"x\\nrequest_id=other\""
        );
        assert_eq!(Text("q\"\\").to_string(), "\"q\\\"\\\\\"");
        assert_eq!(
            Text("a\u{2028}\u{202e}\u{1b}").to_string(),
            "\"a\\u{2028}\\u{202e}\\u{1b}\""
        );
    }

    #[cfg(feature = "tracing")]
    #[test]
    fn json_escapes_quotes_controls_and_separators() {
        assert_eq!(Json("r1").to_string(), "\"r1\"");
        assert_eq!(
            Json("a\"b\\c\nd\u{1}\u{2028}é").to_string(),
            "\"a\\\"b\\\\c\\nd\\u0001\\u2028é\""
        );
    }
}
