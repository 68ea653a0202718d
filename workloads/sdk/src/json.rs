//! A small, strict JSON parser (RFC 8259) for the configuration document.
//!
//! Strict means: exactly one value with nothing but whitespace around it, no comments, no
//! trailing commas, no leading `+` or zeros, no lone surrogates in `\u` escapes, no control
//! characters in strings, no duplicate object keys, and numbers that fit in an `f64`.
//! Nesting is limited to [`MAX_DEPTH`] so that a hostile document cannot exhaust the stack.

use std::collections::BTreeMap;
use std::fmt;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Self::Object(members) => Some(members),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The member `key` of an object; `None` for other values.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    /// What kind of value this is, for error messages: "a number", "an array", ...
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::String(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }
}

/// Where and why a document is not (strict) JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset into the document.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a UTF-8 document.
pub fn parse_bytes(bytes: &[u8]) -> Result<Value, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => Err(ParseError { offset: e.valid_up_to(), message: "not UTF-8".to_owned() }),
    }
}

pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut parser = Parser { text, bytes: text.as_bytes(), pos: 0, depth: 0 };
    parser.skip_whitespace();
    let value = parser.value()?;
    parser.skip_whitespace();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("unexpected characters after the document"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> ParseError {
        ParseError { offset: self.pos, message: message.to_owned() }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` (after whitespace) or fails with `expected`.
    fn expect(&mut self, byte: u8, expected: &str) -> Result<(), ParseError> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of document, expected a value")),
        }
    }

    fn nested(&mut self, parse: fn(&mut Self) -> Result<Value, ParseError>) -> Result<Value, ParseError> {
        if self.depth == MAX_DEPTH {
            return Err(self.error("nested deeper than 64 arrays and objects"));
        }
        self.depth += 1;
        let value = parse(self);
        self.depth -= 1;
        value
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ParseError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn object(&mut self) -> Result<Value, ParseError> {
        self.pos += 1; // '{'
        let mut members = BTreeMap::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string as object key"));
            }
            let key_at = self.pos;
            let key = self.string()?;
            self.expect(b':', "expected ':' after object key")?;
            self.skip_whitespace();
            let value = self.value()?;
            if members.contains_key(&key) {
                return Err(ParseError { offset: key_at, message: format!("duplicate key \"{key}\"") });
            }
            members.insert(key, value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}' in object")),
            }
        }
    }

    fn array(&mut self) -> Result<Value, ParseError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value()?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']' in array")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error("leading zeros are not allowed"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("expected a digit after the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        // The grammar above is a subset of what `f64::from_str` accepts, which rounds correctly.
        match self.text[start..self.pos].parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Value::Number(n)),
            _ => Err(ParseError { offset: start, message: "number out of range".to_owned() }),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // '"'
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control character in one go. These
            // are ASCII, so the run ends on a character boundary of the (valid UTF-8) text.
            let run = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[run..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        _ => return Err(self.error("invalid escape sequence")),
                    };
                    self.pos += 1;
                    out.push(escaped);
                }
                Some(_) => return Err(self.error("control character in string (escape it)")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// The character of a `\uXXXX` escape (after `\u`), joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let at = self.pos - 2;
        let high = self.hex4()?;
        let code = match high {
            0xd800..=0xdbff => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(ParseError { offset: at, message: "unpaired surrogate in \\u escape".to_owned() });
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&low) {
                    return Err(ParseError { offset: at, message: "unpaired surrogate in \\u escape".to_owned() });
                }
                0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(ParseError { offset: at, message: "unpaired surrogate in \\u escape".to_owned() }),
            _ => high,
        };
        // Surrogates are excluded above, so every remaining code is a scalar value.
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.error("expected 4 hex digits in \\u escape")),
            };
            code = code * 16 + u32::from(digit);
            self.pos += 1;
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Value {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> ParseError {
        match parse(text) {
            Ok(v) => panic!("{text} parsed as {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(ok("null"), Value::Null);
        assert_eq!(ok(" true "), Value::Bool(true));
        assert_eq!(ok("\tfalse\r\n"), Value::Bool(false));
        assert_eq!(ok("0"), Value::Number(0.0));
        assert_eq!(ok("-0.5"), Value::Number(-0.5));
        assert_eq!(ok("1e3"), Value::Number(1000.0));
        assert_eq!(ok("2.5E-1"), Value::Number(0.25));
        assert_eq!(ok("1E+2"), Value::Number(100.0));
        assert_eq!(ok("0.1"), Value::Number(0.1));
        assert_eq!(ok("1.7976931348623157e308"), Value::Number(f64::MAX));
        assert_eq!(ok("\"a\""), Value::String("a".to_owned()));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(ok(r#""\"\\\/\b\f\n\r\t""#).as_str(), Some("\"\\/\u{8}\u{c}\n\r\t"));
        assert_eq!(ok(r#""\u00e9\u20AC""#).as_str(), Some("é€"));
        assert_eq!(ok(r#""\ud83d\ude00 ok""#).as_str(), Some("😀 ok"));
        assert_eq!(ok("\"déjà vu 😀\"").as_str(), Some("déjà vu 😀"));
        assert_eq!(ok(r#""\u0000""#).as_str(), Some("\0"));
    }

    #[test]
    fn containers() {
        let v = ok(r#" { "a" : [1, 2.5, {"b": null}], "c": {}, "d": [] } "#);
        assert_eq!(v.get("a").and_then(Value::as_array).map(<[Value]>::len), Some(3));
        assert_eq!(v.get("a").unwrap().as_array().unwrap()[2].get("b"), Some(&Value::Null));
        assert_eq!(v.get("c"), Some(&Value::Object(BTreeMap::new())));
        assert_eq!(v.get("d"), Some(&Value::Array(Vec::new())));
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn refuses_what_rfc_8259_refuses() {
        for bad in [
            "",
            " ",
            "nul",
            "True",
            "+1",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "0x10",
            "NaN",
            "Infinity",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{a:1}",
            "{'a':1}",
            "[1 2]",
            "{\"a\" 1}",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"tab\there\"",
            "\"new\nline\"",
            "// c\n1",
            "[1]]",
            "1 2",
            "\u{feff}1",
        ] {
            err(bad);
        }
    }

    #[test]
    fn refuses_lone_surrogates() {
        for bad in [r#""\ud800""#, r#""\ud800x""#, r#""\ud800\u0041""#, r#""\udc00""#, r#""\ud800\ud800""#] {
            assert!(err(bad).message.contains("surrogate"), "{bad}");
        }
    }

    #[test]
    fn refuses_out_of_range_numbers() {
        assert_eq!(err("1e309").message, "number out of range");
        assert_eq!(err("[-1e400]").offset, 1);
        // Underflow rounds to zero, which is a number.
        assert_eq!(ok("1e-400"), Value::Number(0.0));
    }

    #[test]
    fn refuses_duplicate_keys() {
        let e = err(r#"{"a": 1, "a": 2}"#);
        assert_eq!(e.message, "duplicate key \"a\"");
        assert_eq!(e.offset, 9);
    }

    #[test]
    fn reports_the_offset() {
        let e = err("[1, 2, x]");
        assert_eq!(e.offset, 7);
        assert_eq!(e.to_string(), "invalid JSON at byte 7: expected a value");
        assert_eq!(err("{} x").message, "unexpected characters after the document");
    }

    #[test]
    fn limits_nesting() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        ok(&deep(MAX_DEPTH));
        assert!(err(&deep(MAX_DEPTH + 1)).message.contains("nested deeper"));
        let objects = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH + 1), "}".repeat(MAX_DEPTH + 1));
        assert!(err(&objects).message.contains("nested deeper"));
        // Far deeper input fails the same way instead of overflowing the stack.
        assert!(err(&"[".repeat(1_000_000)).message.contains("nested deeper"));
    }

    #[test]
    fn refuses_invalid_utf8() {
        let e = parse_bytes(b"\"ab\xff\"").unwrap_err();
        assert_eq!(e.offset, 3);
        assert_eq!(parse_bytes(b"[true]").unwrap(), Value::Array(vec![Value::Bool(true)]));
    }
}
