//! Where secrets come from: a client's credential given as `NAME:SECRET`, the `SMQ_CREDENTIAL`
//! variable, or a file (`SMQ_CREDENTIAL_FILE`, `--credential-file`) holding `NAME:SECRET`; and
//! the shared secrets (cluster secret, read token) given by a variable or a file.

use std::path::Path;

pub use smq_protocol::credential::{Credential, CredentialError};

use crate::error::{Error, Result};

/// The variable holding `NAME:SECRET`.
pub const CREDENTIAL_ENV: &str = "SMQ_CREDENTIAL";
/// The variable naming a file that holds `NAME:SECRET`.
pub const CREDENTIAL_FILE_ENV: &str = "SMQ_CREDENTIAL_FILE";

/// `NAME:SECRET`, checked; the error says what is wrong but never shows the secret.
pub fn parse(text: &str, source: &str) -> Result<Credential> {
    Credential::parse(text).map_err(|error| Error::InvalidArgument(format!("{source}: {error}")))
}

/// The credential in the file at `path` (`NAME:SECRET`, a final newline allowed).
pub fn from_file(path: &Path) -> Result<Credential> {
    let text = read_secret_file(path)?;
    parse(&text, &format!("credential file {}", path.display()))
}

/// The secret in the file at `path`: its text without a final newline; an empty one is refused.
pub fn read_secret_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Error::InvalidArgument(format!(
            "cannot read the secret file {}: {error}",
            path.display()
        ))
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the secret file {} is empty",
            path.display()
        )));
    }
    Ok(secret.to_owned())
}

/// A shared secret given either by the variable `variable` (its value, read by the caller) or
/// by a file (`file_flag`), not both; `None` when neither is given.
pub fn secret_from(
    value: Option<String>,
    variable: &str,
    file: Option<&Path>,
    file_flag: &str,
) -> Result<Option<String>> {
    match (value, file) {
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "the secret is given twice, by {variable} and {file_flag}: give one"
        ))),
        (Some(value), None) if value.is_empty() => {
            Err(Error::InvalidArgument(format!("{variable} is empty")))
        }
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => read_secret_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

/// The credential of the environment: `SMQ_CREDENTIAL`, else the file `SMQ_CREDENTIAL_FILE`
/// names, else none (anonymous).
pub fn from_env() -> Result<Option<Credential>> {
    if let Ok(text) = std::env::var(CREDENTIAL_ENV) {
        return parse(&text, CREDENTIAL_ENV).map(Some);
    }
    match std::env::var_os(CREDENTIAL_FILE_ENV) {
        Some(path) => from_file(Path::new(&path)).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_file_holds_name_and_secret_and_errors_hide_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credential");
        std::fs::write(&path, "orders-app:s3cret\n").unwrap();
        let credential = from_file(&path).unwrap();
        assert_eq!(
            (credential.name(), credential.secret()),
            ("orders-app", "s3cret")
        );
        std::fs::write(&path, "no-colon-s3cret\n").unwrap();
        let error = from_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("NAME:SECRET") && !error.contains("s3cret"),
            "{error}"
        );
    }
}
