//! Page tokens: the upstream cursor sealed with an AEAD cipher, with the request's filters
//! as associated data. A token is opaque (its cursor cannot be read), tamper-evident, and
//! refused when replayed with other filters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

/// Longest token accepted; longer input is refused before decoding.
const MAX_TOKEN_LEN: usize = 1024;
const NONCE_LEN: usize = 12;

/// Why a token was refused. All variants answer INVALID_ARGUMENT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this gateway issued, altered, or issued for other filters.
    #[error("is not a valid page token for this request")]
    Invalid,
}

/// Seals and opens page tokens. Tokens survive restarts and work across replicas only
/// when every instance is given the same secret.
#[derive(Clone)]
pub struct PageTokens {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens")
    }
}

impl PageTokens {
    /// Derives the key from a configured secret, or makes a random one when there is none.
    pub fn new(secret: Option<&str>) -> Self {
        let key = match secret {
            Some(secret) => Key::clone_from_slice(&Sha256::digest(secret.as_bytes())),
            None => ChaCha20Poly1305::generate_key(&mut OsRng),
        };
        Self {
            cipher: ChaCha20Poly1305::new(&key),
        }
    }

    /// Seals `cursor` for requests with the filters described by `scope`.
    pub fn seal(&self, scope: &str, cursor: &str) -> String {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: cursor.as_bytes(),
            aad: scope.as_bytes(),
        };
        // Encryption with a fresh nonce and an in-memory buffer cannot fail.
        let sealed = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Opens a token issued by `seal` with the same `scope`.
    pub fn open(&self, scope: &str, token: &str) -> Result<String, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Invalid)?;
        if bytes.len() <= NONCE_LEN {
            return Err(TokenError::Invalid);
        }

        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: scope.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| TokenError::Invalid)?;
        String::from_utf8(plain).map_err(|_| TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hide_the_cursor() {
        let tokens = PageTokens::new(Some("secret"));
        let token = tokens.seal("list_syncs:496:PULL", "6870abae-60d9");
        assert!(!token.contains("6870abae"));
        assert_eq!(
            tokens.open("list_syncs:496:PULL", &token).as_deref(),
            Ok("6870abae-60d9")
        );
    }

    #[test]
    fn tokens_are_bound_to_their_filters_and_secret() {
        let tokens = PageTokens::new(Some("secret"));
        let token = tokens.seal("list_syncs:496:PULL", "c");
        assert_eq!(
            tokens.open("list_syncs:496:PUSH", &token),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            tokens.open("list_syncs:497:PULL", &token),
            Err(TokenError::Invalid)
        );
        let other = PageTokens::new(Some("other"));
        assert_eq!(
            other.open("list_syncs:496:PULL", &token),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn altered_tokens_are_refused() {
        let tokens = PageTokens::new(None);
        let token = tokens.seal("s", "cursor");
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            tokens.open("s", &URL_SAFE_NO_PAD.encode(bytes)),
            Err(TokenError::Invalid)
        );
        assert_eq!(tokens.open("s", "not base64 !"), Err(TokenError::Invalid));
        assert_eq!(tokens.open("s", ""), Err(TokenError::Invalid));
    }
}
