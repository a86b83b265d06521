//! What each crate compiles, from `cargo tree`: the CLI's dependencies (clap, anyhow,
//! hdrhistogram) stay in the `smq` binary's crate, so the broker and library users do not build
//! them through the client; the protocol crate depends on no runtime or socket library and its
//! source names no `std::net` or `std::fs`, so "the protocol does no IO" holds by construction.

use std::path::Path;
use std::process::Command;

/// Every line of `cargo tree -p <package> -e normal`: its depth and crate name, in tree order
/// (a crate appears under each crate that depends on it).
fn tree(package: &str) -> Vec<(usize, String)> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let output = Command::new(env!("CARGO"))
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "depth"])
        .args(["--format", "{p}"])
        .current_dir(workspace)
        .output()
        .expect("running cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let digits = line.bytes().take_while(u8::is_ascii_digit).count();
            let depth = line[..digits].parse().expect("a depth prefix");
            let name = line[digits..].split(' ').next().unwrap_or_default();
            (depth, name.to_owned())
        })
        .collect()
}

/// The crates that depend on `name` directly in `tree`, one entry per edge.
fn dependents_of(tree: &[(usize, String)], name: &str) -> Vec<String> {
    let mut dependents = Vec::new();
    for (at, (depth, crate_name)) in tree.iter().enumerate() {
        if crate_name != name || *depth == 0 {
            continue;
        }
        let parent = tree[..at]
            .iter()
            .rev()
            .find(|(parent_depth, _)| *parent_depth == depth - 1)
            .expect("a crate below the root has a parent line");
        dependents.push(parent.1.clone());
    }
    dependents
}

fn contains(tree: &[(usize, String)], name: &str) -> bool {
    tree.iter().any(|(_, crate_name)| crate_name == name)
}

#[test]
fn the_client_library_carries_no_cli_dependencies() {
    let client = tree("smq-client");
    assert!(contains(&client, "tokio"), "the tree was read: {client:?}");
    for cli_only in ["clap", "anyhow", "hdrhistogram"] {
        assert!(
            !contains(&client, cli_only),
            "smq-client depends on {cli_only} (through {:?}): it belongs to smq-cli",
            dependents_of(&client, cli_only)
        );
    }
}

#[test]
fn the_broker_builds_no_cli_dependencies_through_the_client() {
    let broker = tree("smq-broker");
    assert!(contains(&broker, "smq-client"), "the tree was read");
    assert!(
        !contains(&broker, "hdrhistogram"),
        "smq-broker builds hdrhistogram (through {:?})",
        dependents_of(&broker, "hdrhistogram")
    );
    // The broker parses its own flags with clap and turns errors into anyhow in main.rs: those
    // edges are its own, and no other crate of its tree may bring them.
    for own in ["clap", "anyhow"] {
        let dependents = dependents_of(&broker, own);
        assert!(
            !dependents.is_empty() && dependents.iter().all(|parent| parent == "smq-broker"),
            "{own} reaches smq-broker through {dependents:?}, not only its own flags"
        );
    }
}

#[test]
fn the_protocol_crate_depends_on_no_runtime_and_does_no_io() {
    let protocol = tree("smq-protocol");
    let mut direct: Vec<&str> = protocol
        .iter()
        .filter(|(depth, _)| *depth == 1)
        .map(|(_, name)| name.as_str())
        .collect();
    direct.sort_unstable();
    assert_eq!(direct, ["bytes", "crc32fast", "serde", "thiserror"]);
    for io in ["tokio", "mio", "socket2", "hyper", "hickory-proto", "libc"] {
        assert!(
            !contains(&protocol, io),
            "smq-protocol depends on {io} (through {:?})",
            dependents_of(&protocol, io)
        );
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/protocol/src");
    let mut files = 0;
    for entry in std::fs::read_dir(&source).expect("the protocol's source") {
        let path = entry.expect("a directory entry").path();
        let text = std::fs::read_to_string(&path).expect("a source file");
        files += 1;
        for io in ["std::net", "std::fs", "std::process", "tokio::"] {
            assert!(!text.contains(io), "{} uses {io}", path.display());
        }
    }
    assert!(files >= 9, "read {files} files of {}", source.display());
}
