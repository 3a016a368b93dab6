//! A job's payload: JSON text kept exactly as the client wrote it.
//!
//! The engine never builds a payload into a tree to write it out again:
//! that would re-sort keys, round `0.30000000000000001` to `0.3` and turn
//! big integers into floats. Instead a payload is checked once, strictly,
//! when it is accepted (submission, edit), and embedded unchanged wherever
//! it goes (HTTP body, spool envelope, notification, the API's view).
//!
//! Strict means what a strict JSON parser on the partner's side would
//! accept: no lone UTF-16 surrogate in an escape (`"\ud800"`), and no
//! nesting deeper than [`MAX_DEPTH`]. `serde_json`'s raw values skip both
//! checks, so without this a payload could be accepted and then be
//! undeliverable.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The deepest nesting of arrays and objects a payload may have.
pub const MAX_DEPTH: usize = 128;

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(String);

/// Checks that `text` is one JSON value a strict parser accepts.
pub fn check(text: &str) -> Result<(), PayloadError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Our own depth count below stops at MAX_DEPTH + 1, so the stack stays
    // bounded; serde_json's limit (127) would refuse a legal 128.
    deserializer.disable_recursion_limit();
    Strict { depth: 0 }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|e| {
            let message = e.to_string();
            if message.contains(TOO_DEEP) {
                PayloadError(format!(
                    "nested deeper than {MAX_DEPTH} levels; flatten the payload"
                ))
            } else if message.contains("surrogate") || message.contains("hex escape") {
                PayloadError(format!(
                    "a `\\u` escape is not a whole character (a lone UTF-16 surrogate \
                     needs its pair): {message}"
                ))
            } else {
                PayloadError(format!("not strict JSON: {message}"))
            }
        })
}

/// The payload as a raw JSON value, to embed unchanged in a larger
/// document. `None` only for text that was never a checked payload.
pub fn as_raw(text: &str) -> Option<&RawValue> {
    serde_json::from_str(text).ok()
}

/// A JSON value the way a serializer embeds it: raw when the stored text
/// is JSON (always, for a checked payload), else as a JSON string.
pub fn embed(text: &str) -> Box<RawValue> {
    match as_raw(text) {
        Some(raw) => raw.to_owned(),
        None => {
            let quoted = serde_json::to_string(text).unwrap_or_else(|_| "null".to_string());
            RawValue::from_string(quoted).unwrap_or_else(|_| null())
        }
    }
}

fn null() -> Box<RawValue> {
    // A literal that is valid JSON; from_string cannot refuse it.
    RawValue::from_string("null".to_string()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

const TOO_DEEP: &str = "payload nesting limit exceeded";

/// Walks a value without keeping it: strings are decoded (so invalid
/// escapes are refused), arrays and objects are counted.
struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Strict {
    fn deeper<E: de::Error>(&self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(Strict {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq
            .next_element_seed(Strict { depth: inner.depth })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while map.next_key_seed(Strict { depth: inner.depth })?.is_some() {
            map.next_value_seed(Strict { depth: inner.depth })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn ordinary_json_passes() {
        for text in [
            "null",
            "1",
            "123456789012345678901234567890",
            "0.30000000000000001",
            r#"{"b":1,"a":[true,false,null,"\u00e9\ud83d\ude00"]}"#,
            " {\"x\" : \"y\"} ",
        ] {
            assert_eq!(check(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn lone_surrogates_are_refused() {
        for text in [r#""\ud800""#, r#"{"k":"\udc00x"}"#, r#"{"\ud800":1}"#] {
            let error = check(text).unwrap_err().to_string();
            assert!(error.contains("lone UTF-16 surrogate"), "{text}: {error}");
        }
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_deeper_is_refused() {
        assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
        let error = check(&nested(MAX_DEPTH + 1)).unwrap_err().to_string();
        assert!(error.contains("deeper than 128"), "{error}");
        // Far deeper: refused without exhausting the stack.
        assert!(check(&nested(1_000_000)).is_err());
        let objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert!(check(&objects).is_err());
    }

    #[test]
    fn not_json_is_refused() {
        for text in ["", "{", "[1,]", "01", "1 2", "{\"a\":1}x", "'a'"] {
            assert!(check(text).is_err(), "{text}");
        }
    }

    #[derive(serde::Serialize)]
    struct Envelope {
        payload: Box<RawValue>,
    }

    #[test]
    fn embedding_keeps_the_bytes() {
        let text = r#"{"z": 0.30000000000000001, "a":123456789012345678901234567890}"#;
        let envelope = serde_json::to_string(&Envelope {
            payload: embed(text),
        })
        .unwrap();
        assert_eq!(envelope, format!(r#"{{"payload":{text}}}"#));
        let pretty = serde_json::to_string_pretty(&Envelope {
            payload: embed(text),
        })
        .unwrap();
        assert!(pretty.contains(text), "{pretty}");
    }

    #[test]
    fn text_that_is_not_json_embeds_as_a_string() {
        let envelope = serde_json::to_string(&Envelope {
            payload: embed("not json"),
        })
        .unwrap();
        assert_eq!(envelope, r#"{"payload":"not json"}"#);
    }
}
