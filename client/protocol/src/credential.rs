//! A principal's credential as it travels in the handshake's `auth_token` (`NAME:SECRET`,
//! proto-spec.md §4), and the constant-time comparison every secret check uses.

use std::fmt;

use bytes::Bytes;

/// Longest principal name, as long as a topic name.
pub const MAX_PRINCIPAL_NAME_BYTES: usize = 249;

/// A principal's name and secret. `Debug` and `Display` show the name only.
///
/// ```
/// use smq_protocol::credential::Credential;
///
/// let credential = Credential::parse("orders-app:s3cret").unwrap();
/// assert_eq!(credential.name(), "orders-app");
/// assert_eq!(Credential::from_auth_token(&credential.to_auth_token()).unwrap(), credential);
/// assert!(!format!("{credential:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    name: String,
    secret: String,
}

/// Why a credential is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("a credential is NAME:SECRET; this one has no `:`")]
    NoSeparator,
    #[error("the principal name must be 1 to {MAX_PRINCIPAL_NAME_BYTES} bytes without `:` or control characters")]
    BadName,
    #[error("the secret of principal {0} is empty")]
    EmptySecret(String),
    #[error("a credential must be UTF-8")]
    NotUtf8,
}

impl Credential {
    /// A credential from its name and secret, checked as [`Credential::parse`] checks them.
    pub fn new(
        name: impl Into<String>,
        secret: impl Into<String>,
    ) -> Result<Credential, CredentialError> {
        let (name, secret) = (name.into(), secret.into());
        if name.is_empty()
            || name.len() > MAX_PRINCIPAL_NAME_BYTES
            || name.contains(':')
            || name.chars().any(char::is_control)
        {
            return Err(CredentialError::BadName);
        }
        if secret.is_empty() {
            return Err(CredentialError::EmptySecret(name));
        }
        Ok(Credential { name, secret })
    }

    /// `NAME:SECRET`: the name ends at the first `:`; the secret may contain more. A final
    /// newline (a credential file) is not part of the secret.
    pub fn parse(text: &str) -> Result<Credential, CredentialError> {
        let text = text.trim_end_matches(['\n', '\r']);
        let (name, secret) = text.split_once(':').ok_or(CredentialError::NoSeparator)?;
        Credential::new(name, secret)
    }

    /// The handshake's `auth_token` bytes for this credential.
    pub fn to_auth_token(&self) -> Bytes {
        Bytes::from(format!("{}:{}", self.name, self.secret))
    }

    /// The credential a handshake's `auth_token` carries.
    pub fn from_auth_token(token: &[u8]) -> Result<Credential, CredentialError> {
        Credential::parse(std::str::from_utf8(token).map_err(|_| CredentialError::NotUtf8)?)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}:***)", self.name)
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Compares secrets in time that does not depend on where they differ (only on their lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_needs_a_name_a_colon_and_a_secret() {
        assert_eq!(Credential::parse("app"), Err(CredentialError::NoSeparator));
        assert_eq!(Credential::parse(":s"), Err(CredentialError::BadName));
        assert_eq!(
            Credential::parse("app:"),
            Err(CredentialError::EmptySecret("app".into()))
        );
        let credential = Credential::parse("app:a:b\n").unwrap();
        assert_eq!((credential.name(), credential.secret()), ("app", "a:b"));
        assert_eq!(
            Credential::from_auth_token(&[0xff, b':', b'x']),
            Err(CredentialError::NotUtf8)
        );
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
