//! API keys: where a caller's key comes from, what a well-formed key looks like, and a type
//! that never prints its value.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Longest key accepted; real keys are far shorter, and the cap bounds header sizes.
const MAX_KEY_LEN: usize = 512;

/// An upstream API key. Its `Debug` and `Display` show only a short fingerprint, so a key
/// cannot reach a log or an error message by accident.
#[derive(Clone)]
pub struct ApiKey(Arc<KeyInner>);

/// The key and its fingerprint, computed once: logs and metrics name the key on every call.
struct KeyInner {
    key: Box<str>,
    fingerprint: String,
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ApiKey {}

impl std::hash::Hash for ApiKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

/// Why a key was refused before any upstream call.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidApiKey {
    /// The key is empty.
    #[error("the API key is empty")]
    Empty,
    /// The key is longer than the gateway accepts.
    #[error("the API key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    /// The key holds a space, a control character (CR, LF ...) or a non-ASCII byte.
    #[error("the API key may hold only visible ASCII characters")]
    BadCharacter,
}

impl ApiKey {
    /// Checks a key: 1 to 512 visible ASCII characters, so it cannot split or add a header.
    pub fn parse(raw: &str) -> Result<Self, InvalidApiKey> {
        if raw.is_empty() {
            return Err(InvalidApiKey::Empty);
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(InvalidApiKey::TooLong);
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidApiKey::BadCharacter);
        }
        let digest = Sha256::digest(raw.as_bytes());
        let fingerprint = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(Arc::new(KeyInner {
            key: raw.into(),
            fingerprint,
        })))
    }

    /// The key itself, for the `api_key` header only.
    pub fn expose(&self) -> &str {
        &self.0.key
    }

    /// A short, stable, non-reversible label for logs and metrics.
    pub fn fingerprint(&self) -> &str {
        &self.0.fingerprint
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.fingerprint())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key:{}", self.fingerprint())
    }
}

/// Where the key of a call came from. A rejection of the gateway's own default key is the
/// operator's problem, not the caller's, and is reported differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// The caller sent it.
    Caller,
    /// The gateway's configured default key.
    Default,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_line_breaks_or_spaces_are_refused() {
        for raw in ["a\r\nb", "a\nb", "a\rb", "a b", "a\tb", "ключ"] {
            assert_eq!(
                ApiKey::parse(raw),
                Err(InvalidApiKey::BadCharacter),
                "{raw:?}"
            );
        }
        assert_eq!(ApiKey::parse(""), Err(InvalidApiKey::Empty));
        assert_eq!(ApiKey::parse(&"k".repeat(513)), Err(InvalidApiKey::TooLong));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = ApiKey::parse("super-secret-key").expect("valid key");
        let shown = format!("{key:?} {key}");
        assert!(!shown.contains("super-secret-key"), "{shown}");
        assert_eq!(key.fingerprint().len(), 8);
    }
}
