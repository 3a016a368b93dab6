//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), the
//! `sign` of an `http` channel: every request carries `webhook-id` (the
//! attempt's idempotency key, the same on every retry), `webhook-timestamp`
//! (Unix seconds) and `webhook-signature`, `v1,` then the base64
//! HMAC-SHA256 of `id.timestamp.body` under each key: during a rotation
//! the partner accepts the request with either its old or its new key.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The prefix Standard Webhooks gives secrets; optional when written.
const SECRET_PREFIX: &str = "whsec_";

/// The keys a channel signs with, in the order written.
#[derive(Clone, Debug)]
pub struct Signing {
    pub keys: Vec<SigningKey>,
}

/// A key's bytes: `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    /// A secret as Standard Webhooks writes one: `whsec_` and the key in
    /// base64. The error says what is wrong without quoting the secret.
    pub fn parse(written: &str) -> Result<Self, String> {
        let encoded = written.strip_prefix(SECRET_PREFIX).unwrap_or(written);
        let key = STANDARD.decode(encoded.trim()).map_err(|_| {
            "a signing secret is `whsec_` followed by the key in base64 \
             (e.g. `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`); this one is not base64"
                .to_string()
        })?;
        if key.len() < 16 {
            return Err(format!(
                "a signing key of {} bytes is too short to protect anything: use 24 to 64 \
                 random bytes (e.g. `openssl rand -base64 32`, prefixed with `whsec_`)",
                key.len()
            ));
        }
        Ok(SigningKey(key))
    }
}

impl Signing {
    /// The `webhook-signature` value for one request: a `v1,` signature
    /// per key, separated by spaces.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut value = String::new();
        for key in &self.keys {
            // HMAC takes a key of any length: `new_from_slice` cannot fail.
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else {
                continue;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str("v1,");
            value.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and of its
    /// reference libraries' tests.
    #[test]
    fn signs_the_specifications_example() {
        let signing = Signing {
            keys: vec![SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()],
        };
        assert_eq!(
            signing.signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_signs_with_every_key_in_order() {
        let old = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = SigningKey::parse("c2VjcmV0LWtleS1mb3ItdGhlLXRlc3RzLW9ubHk=").unwrap();
        let both = Signing {
            keys: vec![new.clone(), old.clone()],
        };
        let one = |key: &SigningKey| {
            Signing {
                keys: vec![key.clone()],
            }
            .signature("id", 1, b"{}")
        };
        assert_eq!(
            both.signature("id", 1, b"{}"),
            format!("{} {}", one(&new), one(&old))
        );
    }

    #[test]
    fn secrets_must_be_base64_and_long_enough_and_are_never_shown() {
        let error = SigningKey::parse("whsec_not base64!").unwrap_err();
        assert!(error.contains("base64"), "{error}");
        assert!(!error.contains("not base64!"), "{error}");
        let error = SigningKey::parse("whsec_YWJj").unwrap_err();
        assert!(error.contains("3 bytes"), "{error}");
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(…)");
    }
}
