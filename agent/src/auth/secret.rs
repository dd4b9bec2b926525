//! Clerk secrets (PINs and passwords): the rules they must meet, and Argon2id hashing.
//!
//! Only the PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) is stored. Verification is
//! Argon2's own, which compares the outputs in constant time; it is kept out of the login
//! decision ([`super::decide::decide_login`] takes its result as a `bool`).

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use super::config::{HashParams, MAX_SECRET_CHARS, SecretRules};
use super::roles::Role;

/// A PIN or password as typed; zeroized on drop, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret read from outside.
    pub fn new(text: String) -> Self {
        Secret(Zeroizing::new(text))
    }

    /// The secret itself, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Length of the random salt the caller supplies for each new hash.
pub const SALT_LEN: usize = 16;

/// Why a secret was refused or could not be hashed or checked. Never holds the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Shorter than the role's minimum.
    #[error("a {role:?} secret needs at least {min} characters")]
    TooShort {
        /// The role the secret is for.
        role: Role,
        /// Its minimum length in characters.
        min: usize,
    },
    /// Longer than [`MAX_SECRET_CHARS`].
    #[error("secrets are at most {MAX_SECRET_CHARS} characters")]
    TooLong,
    /// A Clerk or Supervisor PIN holding something other than ASCII digits.
    #[error("a PIN holds digits only")]
    PinNotDigits,
    /// An Admin or SuperAdmin password without both a letter and a digit (PCI DSS 8.3.6).
    #[error("a password needs at least one letter and one digit")]
    PasswordTooSimple,
    /// Argon2 refused the parameters or the salt.
    #[error("argon2: {0}")]
    Hash(#[source] argon2::password_hash::Error),
    /// Argon2 refused the parameters.
    #[error("argon2 parameters: {0}")]
    Params(#[source] argon2::Error),
    /// The stored hash is not a PHC string.
    #[error("stored hash is malformed: {0}")]
    BadStoredHash(#[source] argon2::password_hash::Error),
    /// The stored hash is not Argon2id (a downgrade is refused, not verified).
    #[error("stored hash is not argon2id")]
    NotArgon2id,
}

/// Checks `secret` against the rules for `role`: digits-only PINs of the role's minimum length
/// for Clerk and Supervisor, passwords of at least 12 characters with a letter and a digit for
/// Admin and SuperAdmin.
pub fn check_secret(role: Role, secret: &Secret, rules: &SecretRules) -> Result<(), SecretError> {
    let text = secret.expose();
    let len = text.chars().count();
    if len > MAX_SECRET_CHARS {
        return Err(SecretError::TooLong);
    }
    let min = match role {
        Role::Clerk => rules.clerk_pin_min_len,
        Role::Supervisor => rules.supervisor_pin_min_len,
        Role::Admin | Role::SuperAdmin => rules.admin_password_min_len.max(12),
    };
    if len < min {
        return Err(SecretError::TooShort { role, min });
    }
    match role {
        Role::Clerk | Role::Supervisor => {
            if !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SecretError::PinNotDigits);
            }
        }
        Role::Admin | Role::SuperAdmin => {
            let letter = text.chars().any(char::is_alphabetic);
            let digit = text.chars().any(|c| c.is_ascii_digit());
            if !(letter && digit) {
                return Err(SecretError::PasswordTooSimple);
            }
        }
    }
    Ok(())
}

/// Hashes `secret` with Argon2id under `params` and the caller's random `salt`; returns the PHC
/// string to store. Slow on purpose (about 25 ms with the defaults): run it off the reactor.
pub fn hash_secret(
    secret: &Secret,
    salt: &[u8; SALT_LEN],
    params: &HashParams,
) -> Result<String, SecretError> {
    let params =
        Params::new(params.m_kib, params.t, params.p, None).map_err(SecretError::Params)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::encode_b64(salt).map_err(SecretError::Hash)?;
    let hash = argon
        .hash_password(secret.expose().as_bytes(), &salt)
        .map_err(SecretError::Hash)?;
    Ok(hash.to_string())
}

/// Whether `secret` matches the stored PHC string `phc` (constant-time comparison, with the
/// parameters recorded in `phc`). A malformed or non-Argon2id hash is an error, not a mismatch.
pub fn verify_secret(secret: &Secret, phc: &str) -> Result<bool, SecretError> {
    let parsed = PasswordHash::new(phc).map_err(SecretError::BadStoredHash)?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(SecretError::NotArgon2id);
    }
    if secret.expose().chars().count() > MAX_SECRET_CHARS {
        return Ok(false);
    }
    match Argon2::default().verify_password(secret.expose().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(SecretError::BadStoredHash(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(text: &str) -> Secret {
        Secret::new(text.to_owned())
    }

    #[test]
    fn debug_never_shows_the_secret() {
        assert_eq!(format!("{:?}", s("4711")), "Secret(<redacted>)");
    }

    #[test]
    fn rules_by_role() {
        let r = SecretRules::default();
        assert!(check_secret(Role::Clerk, &s("1234"), &r).is_ok());
        assert!(matches!(
            check_secret(Role::Clerk, &s("123"), &r),
            Err(SecretError::TooShort { min: 4, .. })
        ));
        assert!(matches!(
            check_secret(Role::Clerk, &s("12a4"), &r),
            Err(SecretError::PinNotDigits)
        ));
        assert!(matches!(
            check_secret(Role::Supervisor, &s("12345"), &r),
            Err(SecretError::TooShort { min: 6, .. })
        ));
        assert!(check_secret(Role::Supervisor, &s("123456"), &r).is_ok());
        assert!(matches!(
            check_secret(Role::Admin, &s("abcdefghij1"), &r),
            Err(SecretError::TooShort { min: 12, .. })
        ));
        assert!(matches!(
            check_secret(Role::Admin, &s("abcdefghijkl"), &r),
            Err(SecretError::PasswordTooSimple)
        ));
        assert!(matches!(
            check_secret(Role::SuperAdmin, &s("123456789012"), &r),
            Err(SecretError::PasswordTooSimple)
        ));
        assert!(check_secret(Role::SuperAdmin, &s("correct horse 1"), &r).is_ok());
        assert!(matches!(
            check_secret(Role::Clerk, &s(&"1".repeat(129)), &r),
            Err(SecretError::TooLong)
        ));
    }

    #[test]
    fn hash_is_argon2id_phc_and_verifies() {
        // Small parameters keep the test fast; the format and algorithm are what is checked.
        let params = HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let phc = hash_secret(&s("482913"), &[7; SALT_LEN], &params).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify_secret(&s("482913"), &phc).unwrap());
        assert!(!verify_secret(&s("482914"), &phc).unwrap());
        assert!(matches!(
            verify_secret(&s("x"), "not a hash"),
            Err(SecretError::BadStoredHash(_))
        ));
        let argon2i = phc.replacen("argon2id", "argon2i", 1);
        assert!(matches!(
            verify_secret(&s("482913"), &argon2i),
            Err(SecretError::NotArgon2id)
        ));
    }

    #[test]
    fn default_params_hash_with_owasp_numbers() {
        let phc = hash_secret(
            &s("s3cret-password"),
            &[1; SALT_LEN],
            &HashParams::default(),
        )
        .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_secret(&s("s3cret-password"), &phc).unwrap());
    }
}
