//! Private signing keys at rest: sealed with the key-encryption key (KEK) when one is
//! configured (`[tokens] key_encryption_key` or `TOLLGATE_KEY_ENCRYPTION_KEY`), kept as PKCS#8
//! PEM in the clear when none is.
//!
//! - The KEK is the base64 of 32 random bytes (`tollgate keys generate-kek`, or
//!   `openssl rand -base64 32`); anything else is refused with the length it decodes to.
//! - Sealing is AES-256-GCM (aws-lc-rs, already the JWT and TLS backend) with a fresh random
//!   96-bit nonce per value. A sealed value says what it is: `tgk1:` + base64(nonce ‖
//!   ciphertext ‖ tag). The associated data is `tollgate signing key ` + the key id, so a
//!   sealed key copied onto another row does not open there.
//! - A stored value opens into its PEM: a sealed one only with the KEK it was sealed with
//!   ([`TokenError::KeyEncryptionKeyMissing`], [`TokenError::KeyEncryptionKeyWrong`], both
//!   naming the key id), a clear one always (an install from before a KEK was set; the issuer
//!   seals it in place at start).
//!
//! Decisions and their reasons: `docs/decisions/0022-signing-keys-at-rest.md`.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::TokenError;

/// The prefix of a sealed private key, version 1 (AES-256-GCM, see the module docs).
pub const SEALED_PREFIX: &str = "tgk1:";

/// The length of a key-encryption key, in bytes.
pub const KEK_LEN: usize = 32;

/// How a stored private key begins when it is in the clear.
const PEM_PREFIX: &str = "-----BEGIN";

/// The AES-GCM tag length, in bytes.
const TAG_LEN: usize = 16;

/// A key-encryption key: 32 bytes, wiped when the last clone drops. `Debug` prints no byte of
/// it; equality is checked in constant time.
#[derive(Clone)]
pub struct KeyEncryptionKey {
    bytes: Arc<Zeroizing<[u8; KEK_LEN]>>,
}

impl KeyEncryptionKey {
    /// The key from its configured form: the base64 (standard alphabet, padded) of 32 bytes,
    /// surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> Result<KeyEncryptionKey, TokenError> {
        let refuse = |what: String| {
            TokenError::Config(format!(
                "a key-encryption key must be the base64 of {KEK_LEN} random bytes (make one \
                 with `tollgate keys generate-kek` or `openssl rand -base64 32`); this one {what}"
            ))
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(refuse("is empty".into()));
        }
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text)
                .map_err(|e| refuse(format!("is not base64 ({e})")))?,
        );
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        if decoded.len() != KEK_LEN {
            return Err(refuse(format!("decodes to {} bytes", decoded.len())));
        }
        bytes.copy_from_slice(&decoded);
        Ok(KeyEncryptionKey {
            bytes: Arc::new(bytes),
        })
    }

    /// A new random key in its configured form (base64), for `tollgate keys generate-kek`.
    pub fn generate_base64() -> String {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        STANDARD.encode(bytes.as_ref())
    }

    /// `pem` (the private key of `kid`) sealed for storage: `tgk1:` + base64(nonce ‖
    /// ciphertext ‖ tag).
    pub(super) fn seal(&self, kid: &str, pem: &str) -> Result<String, TokenError> {
        let failed = || TokenError::Key(format!("cannot encrypt the private key of {kid}"));
        let key = self.aead().map_err(|_| failed())?;
        let mut in_out = Zeroizing::new(pem.as_bytes().to_vec());
        let nonce = key
            .seal_in_place_append_tag(Aad::from(associated_data(kid)), &mut *in_out)
            .map_err(|_| failed())?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + in_out.len());
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&in_out);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed)))
    }

    fn aead(&self) -> Result<RandomizedNonceKey, aws_lc_rs::error::Unspecified> {
        RandomizedNonceKey::new(&AES_256_GCM, self.bytes.as_ref().as_ref())
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(***)")
    }
}

impl PartialEq for KeyEncryptionKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes[..].ct_eq(&other.bytes[..]).into()
    }
}

impl Eq for KeyEncryptionKey {}

/// Whether a stored private key is sealed (as opposed to a PEM in the clear).
pub(super) fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// The PEM of `kid`'s stored private key `stored`: opened with `kek` when sealed, as it is
/// when in the clear.
pub(super) fn open(
    kid: &str,
    stored: &str,
    kek: Option<&KeyEncryptionKey>,
) -> Result<Zeroizing<String>, TokenError> {
    if stored.starts_with(PEM_PREFIX) {
        return Ok(Zeroizing::new(stored.to_owned()));
    }
    let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
        return Err(TokenError::Key(format!(
            "the stored private key of {kid} is neither a PEM nor a `{SEALED_PREFIX}` value \
             (written by a newer Tollgate?)"
        )));
    };
    let Some(kek) = kek else {
        return Err(TokenError::KeyEncryptionKeyMissing {
            kid: kid.to_owned(),
        });
    };
    let malformed = |why: &str| {
        TokenError::Key(format!(
            "the stored private key of {kid} is a malformed `{SEALED_PREFIX}` value: {why}"
        ))
    };
    let mut sealed = Zeroizing::new(
        STANDARD
            .decode(encoded)
            .map_err(|e| malformed(&e.to_string()))?,
    );
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(malformed("too short"));
    }
    let (nonce, in_out) = sealed.split_at_mut(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| malformed("bad nonce"))?;
    let wrong = || TokenError::KeyEncryptionKeyWrong {
        kid: kid.to_owned(),
    };
    let key = kek.aead().map_err(|_| wrong())?;
    let plain = key
        .open_in_place(nonce, Aad::from(associated_data(kid)), in_out)
        .map_err(|_| wrong())?;
    let pem = std::str::from_utf8(plain).map_err(|_| malformed("not UTF-8 inside"))?;
    Ok(Zeroizing::new(pem.to_owned()))
}

/// What a sealed key is bound to: its purpose and its row's key id.
fn associated_data(kid: &str) -> Vec<u8> {
    format!("tollgate signing key {kid}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str =
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";

    fn kek() -> KeyEncryptionKey {
        KeyEncryptionKey::from_base64(&KeyEncryptionKey::generate_base64()).unwrap()
    }

    #[test]
    fn a_sealed_key_opens_with_its_kek_and_kid_only() {
        let (kek, other) = (kek(), kek());
        let sealed = kek.seal("kid-a", PEM).unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("PRIVATE KEY") && !sealed.contains("MIGHAgEA"));
        assert_eq!(open("kid-a", &sealed, Some(&kek)).unwrap().as_str(), PEM);

        assert!(matches!(
            open("kid-a", &sealed, Some(&other)),
            Err(TokenError::KeyEncryptionKeyWrong { kid }) if kid == "kid-a"
        ));
        // The kid is bound: the same value on another row does not open.
        assert!(matches!(
            open("kid-b", &sealed, Some(&kek)),
            Err(TokenError::KeyEncryptionKeyWrong { kid }) if kid == "kid-b"
        ));
        assert!(matches!(
            open("kid-a", &sealed, None),
            Err(TokenError::KeyEncryptionKeyMissing { kid }) if kid == "kid-a"
        ));
    }

    #[test]
    fn every_seal_takes_a_fresh_nonce() {
        let kek = kek();
        assert_ne!(kek.seal("k", PEM).unwrap(), kek.seal("k", PEM).unwrap());
    }

    #[test]
    fn a_clear_key_opens_with_or_without_a_kek() {
        assert!(!is_sealed(PEM));
        assert_eq!(open("k", PEM, None).unwrap().as_str(), PEM);
        assert_eq!(open("k", PEM, Some(&kek())).unwrap().as_str(), PEM);
    }

    #[test]
    fn an_altered_or_unknown_value_is_refused_precisely() {
        let kek = kek();
        let sealed = kek.seal("k", PEM).unwrap();
        // One character of the ciphertext changed: the tag no longer matches.
        let mut flipped = sealed.clone().into_bytes();
        let at = SEALED_PREFIX.len() + 20;
        flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(matches!(
            open("k", &flipped, Some(&kek)),
            Err(TokenError::KeyEncryptionKeyWrong { .. })
        ));
        for (stored, needle) in [
            ("tgk1:!!!", "malformed"),
            ("tgk1:AAAA", "too short"),
            ("tgk2:AAAA", "neither a PEM"),
        ] {
            let err = open("k", stored, Some(&kek)).unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains(" k "),
                "{stored}: {err}"
            );
        }
    }

    #[test]
    fn a_kek_must_be_32_bytes_of_base64() {
        for (text, needle) in [
            ("", "is empty"),
            ("   ", "is empty"),
            ("not base64!", "is not base64"),
            (&STANDARD.encode([7u8; 16]), "decodes to 16 bytes"),
            (&STANDARD.encode([7u8; 33]), "decodes to 33 bytes"),
        ] {
            let err = KeyEncryptionKey::from_base64(text).unwrap_err();
            assert!(matches!(err, TokenError::Config(_)), "{err:?}");
            let err = err.to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("openssl rand -base64 32"), "{err}");
        }
        // What openssl prints, with its newline.
        let text = format!("{}\n", STANDARD.encode([7u8; 32]));
        assert!(KeyEncryptionKey::from_base64(&text).is_ok());
    }

    #[test]
    fn a_kek_prints_no_byte_of_itself() {
        let text = STANDARD.encode([0xabu8; 32]);
        let kek = KeyEncryptionKey::from_base64(&text).unwrap();
        let shown = format!("{kek:?}");
        assert!(!shown.contains(&text) && !shown.contains("171"), "{shown}");
        assert_eq!(kek, KeyEncryptionKey::from_base64(&text).unwrap());
        assert_ne!(kek, self::kek());
    }
}
