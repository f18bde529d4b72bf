//! Whether an upstream's answer is already in the platform envelope: a JSON object with a
//! non-negative integer `code` and a string `msg` at its top level (anything else, `data`
//! above all, is only checked to be JSON). Such an answer passes through unchanged; any
//! other is wrapped.
//!
//! Every call's answer is probed, so the probe is a scan of its own rather than
//! serde_json's deserializer (about 1,900 instructions for an 84-byte answer, most of
//! them in the deserializer's machinery): it validates the document in one pass without
//! building anything. The few shapes it does not settle itself (an escape inside a key or
//! in `msg`, nesting deeper than [`MAX_DEPTH`]) go to serde_json, and a property test
//! holds the two to the same answers.

/// Nesting the scan follows itself; deeper documents go to serde_json (whose own limit is
/// 128 levels).
const MAX_DEPTH: usize = 100;

/// The top level the fallback deserializes.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    code: u64,
    #[allow(dead_code)]
    #[serde(borrow)]
    msg: std::borrow::Cow<'a, str>,
}

/// The envelope's `code` when `body` is already in the envelope; `None` when it is not
/// (not JSON, not an object, `code` missing, negative, fractional or not a number, `msg`
/// missing or not a string, either one twice).
pub fn code(body: &[u8]) -> Option<u64> {
    match scan(body) {
        Ok(code) => code,
        Err(Unsure) => fallback(body),
    }
}

/// serde_json's answer. A top-level array is not an envelope, though serde would read a
/// struct from `[code, msg]`.
fn fallback(body: &[u8]) -> Option<u64> {
    if body.iter().find(|b| !is_ws(**b)) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Probe>(body).ok().map(|p| p.code)
}

/// A shape the scan leaves to serde_json.
struct Unsure;

/// `Ok(None)` for anything that is not the envelope, invalid JSON included.
type Scan<T> = Result<Option<T>, Unsure>;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The position of the first byte in `s` that ends or interrupts a string's plain run (a
/// quote, a backslash or a control character), or `s.len()`: eight bytes at a step.
fn special(s: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte below 0x20, or equal to `"` or `\\`, sets its high bit here (a set high
        // bit in `x` itself, a byte of 0x80 or more, is masked out by `!x`).
        let zero = |y: u64| y.wrapping_sub(ONES) & !y;
        let hits = (x.wrapping_sub(ONES * 0x20) | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\')))) & !x & HIGHS;
        if hits != 0 {
            return i + hits.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    i + s[i..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(s.len() - i)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// `?` for the inner `Option` of a [`Scan`]: returns `Ok(None)` from the caller.
macro_rules! need {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

fn scan(body: &[u8]) -> Scan<u64> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    if !s.eat(b'{') {
        return Ok(None);
    }
    let (mut code, mut msg) = (None, false);
    s.ws();
    if !s.eat(b'}') {
        loop {
            if !s.eat(b'"') {
                return Ok(None);
            }
            let key = need!(s.plain_string());
            s.ws();
            if !s.eat(b':') {
                return Ok(None);
            }
            s.ws();
            match key {
                b"code" => {
                    if code.is_some() {
                        return Ok(None);
                    }
                    let Some(n) = s.unsigned() else { return Ok(None) };
                    code = Some(n);
                }
                b"msg" => {
                    if msg || !s.eat(b'"') {
                        return Ok(None);
                    }
                    need!(s.plain_string());
                    msg = true;
                }
                _ => need!(s.value(1)),
            }
            s.ws();
            if s.eat(b',') {
                s.ws();
                continue;
            }
            if s.eat(b'}') {
                break;
            }
            return Ok(None);
        }
    }
    s.ws();
    if s.i != s.b.len() || !msg {
        return Ok(None);
    }
    Ok(code)
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|b| is_ws(*b)) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let yes = self.b.get(self.i) == Some(&c);
        self.i += usize::from(yes);
        yes
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// A string whose opening quote was eaten, read as a key or `msg`: its bytes when it
    /// has no escape and is UTF-8. An escape is left to serde_json.
    fn plain_string(&mut self) -> Scan<&'a [u8]> {
        let start = self.i;
        self.i += special(&self.b[start..]);
        match self.peek() {
            Some(b'"') => {}
            Some(b'\\') => return Err(Unsure),
            _ => return Ok(None),
        }
        let s: &'a [u8] = &self.b[start..self.i];
        self.i += 1;
        Ok((s.is_ascii() || std::str::from_utf8(s).is_ok()).then_some(s))
    }

    /// A string whose opening quote was eaten, only checked, as serde_json checks a value
    /// it skips: no control characters, valid escapes (its bytes are not checked to be
    /// UTF-8).
    fn skip_string(&mut self) -> Option<()> {
        loop {
            self.i += special(&self.b[self.i..]);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// `code`'s value: digits without a leading zero, no fraction or exponent, within u64.
    fn unsigned(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && self.b[start] == b'0') || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(n)
    }

    /// Any JSON number, checked against the grammar.
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        let int = self.digits();
        if int == 0 || (int > 1 && self.b[self.i - int] == b'0') {
            return None;
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let found = self.b.get(self.i..self.i + word.len())? == word;
        self.i += word.len();
        found.then_some(())
    }

    /// Any JSON value at `depth` levels inside the document, checked and skipped.
    fn value(&mut self, depth: usize) -> Scan<()> {
        Ok(match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.skip_string()
            }
            Some(b'{') => return self.container(depth, b'}'),
            Some(b'[') => return self.container(depth, b']'),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => None,
        })
    }

    /// An object or array, its opening bracket next.
    fn container(&mut self, depth: usize, close: u8) -> Scan<()> {
        if depth >= MAX_DEPTH {
            return Err(Unsure);
        }
        self.i += 1;
        self.ws();
        if self.eat(close) {
            return Ok(Some(()));
        }
        loop {
            if close == b'}' {
                if !self.eat(b'"') {
                    return Ok(None);
                }
                if self.skip_string().is_none() {
                    return Ok(None);
                }
                self.ws();
                if !self.eat(b':') {
                    return Ok(None);
                }
                self.ws();
            }
            need!(self.value(depth + 1));
            self.ws();
            if self.eat(b',') {
                self.ws();
                continue;
            }
            return Ok(self.eat(close).then_some(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn envelopes_and_others() {
        for (body, want) in [
            (&br#"{"code":0,"msg":"OK","data":{"order_id":"2012","n":[1,2.5e3,-0.5,true,null]}}"#[..], Some(0)),
            (br#" { "msg" : "x" , "code" : 40001 } "#, Some(40001)),
            (br#"{"code":18446744073709551615,"msg":""}"#, Some(u64::MAX)),
            (br#"{"code":18446744073709551616,"msg":""}"#, None),
            (br#"{"code":-1,"msg":""}"#, None),
            (br#"{"code":-0,"msg":""}"#, None),
            (br#"{"code":01,"msg":""}"#, None),
            (br#"{"code":1.0,"msg":""}"#, None),
            (br#"{"code":1e2,"msg":""}"#, None),
            (br#"{"code":"1","msg":""}"#, None),
            (br#"{"code":1,"msg":2}"#, None),
            (br#"{"code":1}"#, None),
            (br#"{"code":1,"msg":"","code":2}"#, None),
            (br#"{"code":1,"msg":"",}"#, None),
            (br#"{"code":1,"msg":""} x"#, None),
            (br#"{"code":1,"msg":"","data":"\u00e9\n\"\/"}"#, Some(1)),
            (br#"{"code":1,"msg":"","data":"\x"}"#, None),
            (br#"{"code":1,"msg":"\u00e9"}"#, Some(1)),
            (br#"{"c\u006fde":1,"msg":""}"#, Some(1)),
            (br#"[1,"msg"]"#, None),
            (b"", None),
            (b"not json", None),
            (br#"{"code":1,"msg":"tab	inside"}"#, None),
        ] {
            assert_eq!(code(body), want, "{}", String::from_utf8_lossy(body));
            assert_eq!(fallback(body), want, "serde on {}", String::from_utf8_lossy(body));
        }
        let deep = format!(r#"{{"code":3,"msg":"","data":{}{}}}"#, "[".repeat(150), "]".repeat(150));
        assert_eq!(code(deep.as_bytes()), fallback(deep.as_bytes()));
        let nested = format!(r#"{{"code":3,"msg":"","data":{}{}}}"#, "[".repeat(90), "]".repeat(90));
        assert_eq!(code(nested.as_bytes()), Some(3));
    }

    /// JSON-like text: mostly well-formed envelopes and near misses, built from pieces
    /// that exercise every branch of the scan.
    fn document() -> impl Strategy<Value = String> {
        let string = "\"([a-z é\\t]|\\\\[\"\\\\/bfnrtux]|\\\\u[0-9a-fA-FgG]{4}|\\\\ud83d\\\\ude00|\\\\ud800)*\"";
        let leaf = prop_oneof![
            Just("0".to_string()),
            Just("-0".to_string()),
            Just("true".to_string()),
            Just("nul".to_string()),
            "-?[0-9]{1,22}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
            string,
        ];
        let value = leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-z]{0,4}", inner), 0..4).prop_map(|v| format!("{{{}}}", v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(","))),
            ]
        });
        let code = prop_oneof![6 => "[1-9][0-9]{0,19}", 1 => Just("0".to_string()), 2 => "-?0[0-9]|-[1-9]|[0-9](\\.[0-9]|[eE][0-9])|\"[0-9]\"|null"];
        let msg = prop_oneof![6 => "\"[a-zA-Z é]{0,8}\"", 2 => string, 1 => "[0-9]|null|\\[\\]"];
        let key = prop_oneof![8 => "[a-z]{1,5}", 1 => Just("code".to_string()), 1 => Just("msg".to_string()), 1 => Just("c\\u006fde".to_string()), 1 => Just("ms\\g".to_string())];
        let others = proptest::collection::vec((key, value), 0..4);
        let tail = prop_oneof![8 => Just(""), 1 => Just(","), 1 => Just("]"), 1 => Just(" x")];
        (code, msg, others, "[ \\t\\n]{0,2}", tail, any::<prop::sample::Index>()).prop_map(|(code, msg, mut fields, ws, tail, at)| {
            fields.push(("code".to_string(), code));
            let place = at.index(fields.len() + 1);
            fields.insert(place, ("msg".to_string(), msg));
            let inner: Vec<String> = fields.into_iter().map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}")).collect();
            format!("{ws}{{{}}}{tail}", inner.join(","))
        })
    }

    proptest! {
        /// The scan and serde_json agree on documents of every shape.
        #[test]
        fn the_scan_agrees_with_serde_json(doc in document()) {
            prop_assert_eq!(code(doc.as_bytes()), fallback(doc.as_bytes()), "{}", doc);
        }

        /// The eight-at-a-time search finds what a byte-by-byte one finds.
        #[test]
        fn special_finds_the_first_quote_backslash_or_control(bytes in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'"'), Just(b'\\'), 0x1fu8..=0x23, 0x7fu8..=0x81], 0..40)) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(bytes.len());
            prop_assert_eq!(special(&bytes), naive);
        }

        /// And on any bytes at all (mostly not JSON), with an envelope's start or without.
        #[test]
        fn any_bytes_get_the_same_answer(prefix in prop_oneof![Just(&b""[..]), Just(&br#"{"code":7,"msg":"m","data":"#[..])], bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let body = [prefix, &bytes[..]].concat();
            prop_assert_eq!(code(&body), fallback(&body));
        }
    }
}
