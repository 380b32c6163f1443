//! Keys for humans: how the admin commands print keys and how they read them from
//! the command line.
//!
//! Printing ([`escape`], [`start_bound`], [`end_bound`]): printable ASCII as is,
//! except `\` and `"`, which become `\\` and `\"`; every other byte is `\xNN` (two
//! lowercase hex digits). In tables keys are shown in double quotes; an empty start key
//! (the beginning of the key space) shows as `-inf` and an empty end key (the end of
//! the key space) as `+inf`, without quotes. [`to_hex`] gives the plain hex form.
//!
//! Reading ([`KeyInput`]): keys are UTF-8 text by default; `--hex` reads them as hex
//! (`6b31`, optional `0x`), `--escaped` reads the escaped form above (so that a key
//! can be copied from a table).

use clap::Args;

/// The escaped form of `key`, without quotes (see the module docs).
pub fn escape(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Reads the escaped form back: `\\`, `\"` and `\xNN` escapes, everything else as its
/// UTF-8 bytes.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some((_, '\\')) => out.push(b'\\'),
            Some((_, '"')) => out.push(b'"'),
            Some((_, 'x')) => {
                let digits: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                let byte = parse_hex_byte(&digits).ok_or_else(|| {
                    format!("bad escape at byte {at} of {text:?}: \\x needs two hex digits")
                })?;
                out.push(byte);
            }
            _ => {
                return Err(format!(
                    "bad escape at byte {at} of {text:?}: use \\\\, \\\" or \\xNN"
                ))
            }
        }
    }
    Ok(out)
}

/// Two hex digits as a byte (`from_str_radix` alone would also take a sign).
fn parse_hex_byte(digits: &str) -> Option<u8> {
    (digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u8::from_str_radix(digits, 16).ok())
        .flatten()
}

/// `key` as lowercase hex ("" for the empty key).
pub fn to_hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads hex (either case, an optional `0x` prefix) into bytes.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if !digits.len().is_multiple_of(2) {
        return Err(format!("{text:?} is not hex: odd number of digits"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(parse_hex_byte)
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect()
}

/// A key in double quotes, escaped.
pub fn quoted(key: &[u8]) -> String {
    format!("\"{}\"", escape(key))
}

/// A region's start key for display: `-inf` when empty, else quoted.
pub fn start_bound(key: &[u8]) -> String {
    if key.is_empty() {
        "-inf".to_string()
    } else {
        quoted(key)
    }
}

/// A region's end key for display: `+inf` when empty, else quoted.
pub fn end_bound(key: &[u8]) -> String {
    if key.is_empty() {
        "+inf".to_string()
    } else {
        quoted(key)
    }
}

/// How keys given on the command line are read.
#[derive(Args, Clone, Debug, Default)]
pub struct KeyInput {
    /// Read the keys as hex (e.g. 6b31 or 0x6b31 for "k1") instead of UTF-8 text.
    #[arg(long, conflicts_with = "escaped")]
    pub hex: bool,
    /// Read the keys in the escaped form the tables print (printable ASCII, \\, \" and
    /// \xNN; without the surrounding quotes) instead of UTF-8 text.
    #[arg(long)]
    pub escaped: bool,
}

impl KeyInput {
    /// The bytes of a key given as `text`.
    pub fn parse(&self, text: &str) -> Result<Vec<u8>, String> {
        if self.hex {
            from_hex(text)
        } else if self.escaped {
            unescape(text)
        } else {
            Ok(text.as_bytes().to_vec())
        }
    }

    /// The bytes of every key, or the first error.
    pub fn parse_all(&self, texts: &[String]) -> Result<Vec<Vec<u8>>, String> {
        texts.iter().map(|t| self.parse(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_printable_ascii_and_escapes_the_rest() {
        assert_eq!(escape(b"user/42 a-z~"), "user/42 a-z~");
        assert_eq!(escape(b"@\x00"), "@\\x00");
        assert_eq!(
            escape(&[0x80, 0xc0, 0xff, 0x7f, 0x1f]),
            "\\x80\\xc0\\xff\\x7f\\x1f"
        );
        assert_eq!(escape(b"a\\b\"c"), "a\\\\b\\\"c");
        assert_eq!(escape("é".as_bytes()), "\\xc3\\xa9");
        assert_eq!(escape(b""), "");
    }

    #[test]
    fn unescape_inverts_escape() {
        let keys: [&[u8]; 6] = [
            b"",
            b"plain",
            b"@\x00",
            &[0, 1, 0x7f, 0x80, 0xff],
            b"back\\slash \"quoted\"",
            "é".as_bytes(),
        ];
        for key in keys {
            assert_eq!(unescape(&escape(key)).unwrap(), key, "{key:?}");
        }
        // UTF-8 text passes through as its bytes; hex digits in either case.
        assert_eq!(unescape("é\\xC3").unwrap(), b"\xc3\xa9\xc3");
    }

    #[test]
    fn unescape_refuses_bad_escapes() {
        for bad in ["\\", "a\\q", "\\x", "\\x4", "\\xzz", "\\x+1"] {
            let err = unescape(bad).unwrap_err();
            assert!(err.contains("bad escape"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(to_hex(b"k1\x00\xff"), "6b3100ff");
        assert_eq!(to_hex(b""), "");
        assert_eq!(from_hex("6b3100ff").unwrap(), b"k1\x00\xff");
        assert_eq!(from_hex("0x6B31").unwrap(), b"k1");
        assert_eq!(from_hex("").unwrap(), b"");
        assert!(from_hex("6b3").unwrap_err().contains("odd number"));
        assert!(from_hex("zz").unwrap_err().contains("not hex"));
        assert!(from_hex("é1").is_err());
        assert!(from_hex("+1").is_err());
    }

    #[test]
    fn bounds_show_infinity_for_empty_keys() {
        assert_eq!(start_bound(b""), "-inf");
        assert_eq!(end_bound(b""), "+inf");
        assert_eq!(start_bound(b"\x80\x00"), "\"\\x80\\x00\"");
        assert_eq!(end_bound(b"-inf"), "\"-inf\"");
    }

    #[test]
    fn key_input_reads_text_hex_or_escaped() {
        let text = KeyInput::default();
        assert_eq!(text.parse("a\\x00").unwrap(), b"a\\x00");
        let hex = KeyInput {
            hex: true,
            escaped: false,
        };
        assert_eq!(
            hex.parse_all(&["6b31".into(), "80".into()]).unwrap(),
            vec![b"k1".to_vec(), vec![0x80]]
        );
        assert!(hex.parse("k1").is_err());
        let escaped = KeyInput {
            hex: false,
            escaped: true,
        };
        assert_eq!(escaped.parse("a\\x00").unwrap(), b"a\x00");
    }
}
