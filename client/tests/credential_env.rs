//! The library's builders take the credential from the environment as the CLI does: its own
//! process, since the variables are the process's.

use smq_client::ClientConfig;

#[test]
fn the_builders_take_the_credential_from_the_environment_unless_set() {
    std::env::remove_var("SMQ_CREDENTIAL_FILE");
    std::env::remove_var("SMQ_CREDENTIAL");
    assert!(ClientConfig::new("127.0.0.1:10911").credential.is_none());

    std::env::set_var("SMQ_CREDENTIAL", "orders-app:s3cret");
    let config = ClientConfig::new("127.0.0.1:10911");
    let credential = config
        .credential
        .clone()
        .expect("taken from SMQ_CREDENTIAL");
    assert_eq!(
        (credential.name(), credential.secret()),
        ("orders-app", "s3cret")
    );
    config.validate().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credential");
    std::fs::write(&file, "billing:from-file\n").unwrap();
    std::env::remove_var("SMQ_CREDENTIAL");
    std::env::set_var("SMQ_CREDENTIAL_FILE", &file);
    let credential = ClientConfig::new("127.0.0.1:10911")
        .credential
        .expect("taken from SMQ_CREDENTIAL_FILE");
    assert_eq!(credential.name(), "billing");

    // A malformed variable fails validation (every connect), naming it and hiding the secret,
    // unless the application set a credential itself.
    std::env::remove_var("SMQ_CREDENTIAL_FILE");
    std::env::set_var("SMQ_CREDENTIAL", "no-colon-s3cret");
    let mut config = ClientConfig::new("127.0.0.1:10911");
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("SMQ_CREDENTIAL"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    config.credential = Some(smq_client::credential::parse("ops:ops", "test").unwrap());
    config.validate().unwrap();
    std::env::remove_var("SMQ_CREDENTIAL");
}
