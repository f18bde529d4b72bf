use serde_json::Value;

use crate::Error;

/// An RFC 6901 JSON pointer, e.g. `/data/order_id` or `/items/0/sku`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<String>,
}

impl JsonPointer {
    pub fn parse(input: &str) -> Result<JsonPointer, Error> {
        let bad = |why: &str| Err(Error::validation("pointer", why.to_string()));
        if input.len() > 256 {
            return bad("must be at most 256 characters");
        }
        if input.is_empty() {
            return Ok(JsonPointer { text: String::new(), tokens: vec![] });
        }
        let Some(rest) = input.strip_prefix('/') else {
            return bad("must be empty or start with /");
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => return bad("~ must be followed by 0 or 1"),
                    }
                } else {
                    token.push(c);
                }
            }
            tokens.push(token);
        }
        Ok(JsonPointer { text: input.to_string(), tokens })
    }

    /// The value the pointer names in `doc`, if any.
    pub fn resolve<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        let mut v = doc;
        for t in &self.tokens {
            v = match v {
                Value::Object(m) => m.get(t)?,
                Value::Array(a) if t == "0" || (!t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit())) => a.get(t.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn rfc6901_examples() {
        let doc = json!({"foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "m~n": 8, "data": {"order_id": "2012"}});
        let at = |p: &str| JsonPointer::parse(p).unwrap().resolve(&doc).cloned();
        assert_eq!(at(""), Some(doc.clone()));
        assert_eq!(at("/foo"), Some(json!(["bar", "baz"])));
        assert_eq!(at("/foo/0"), Some(json!("bar")));
        assert_eq!(at("/"), Some(json!(0)));
        assert_eq!(at("/a~1b"), Some(json!(1)));
        assert_eq!(at("/c%d"), Some(json!(2)));
        assert_eq!(at("/m~0n"), Some(json!(8)));
        assert_eq!(at("/data/order_id"), Some(json!("2012")));
        assert_eq!(at("/foo/01"), None, "leading zeros are not indexes");
        assert_eq!(at("/foo/2"), None);
        assert_eq!(at("/nope/x"), None);
        assert!(JsonPointer::parse("data").is_err());
        assert!(JsonPointer::parse("/a~2").is_err());
        assert!(JsonPointer::parse("/a~").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            if let Ok(p) = JsonPointer::parse(&s) {
                let _ = p.resolve(&json!({"a": [1, {"b": null}], "~": {"/": 1}}));
            }
        }

        #[test]
        fn escaped_keys_round_trip(key in "[a-z~/]{1,10}", value in any::<i64>()) {
            let escaped = key.replace('~', "~0").replace('/', "~1");
            let p = JsonPointer::parse(&format!("/{escaped}")).unwrap();
            let doc = json!({ key.clone(): value });
            prop_assert_eq!(p.resolve(&doc), Some(&json!(value)));
        }
    }
}
