//! ARCHITECTURE.md's code map is checked against the tree: every path it names exists, and every
//! Rust source file of the crates is in it (named as an entry, its file name in the map's text, or inside a
//! folder the map names with no entries of its own), so the map cannot drift from the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The folders whose source files the code map must account for.
const SOURCE_ROOTS: &[&str] = &[
    "client/protocol/src",
    "client/settings/src",
    "client/src",
    "client/cli/src",
    "broker/src",
    "nameserver/src",
    "tests/src",
    "tests/tests",
    "tests/fuzz/fuzz_targets",
];

/// Descriptions in the map start at this column or further right; entries start left of it.
const DESCRIPTION_INDENT: usize = 10;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The text of the fenced block under "## Code map".
fn code_map(architecture: &str) -> &str {
    let section = architecture
        .split_once("## Code map")
        .expect("ARCHITECTURE.md has a \"## Code map\" section")
        .1;
    let block = section
        .split_once("```")
        .expect("the code map is a fenced block")
        .1;
    let block = block.split_once('\n').map_or(block, |(_fence, rest)| rest);
    block
        .split_once("```")
        .expect("the code map's block is closed")
        .0
}

/// One path the map names, and whether entries below it are indented under it.
struct Entry {
    path: PathBuf,
    indent: usize,
}

/// The paths the map's entries name: a line indented less than a description starts with one
/// or more names (`a.rs, b.rs`), each relative to the folder of the nearest entry above it that
/// is indented less (a folder, or the folder holding a file).
fn entries(map: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut parents: Vec<(usize, PathBuf)> = Vec::new();
    for line in map.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim().is_empty() || indent >= DESCRIPTION_INDENT {
            continue;
        }
        while parents.last().is_some_and(|(depth, _)| *depth >= indent) {
            parents.pop();
        }
        let base = parents
            .last()
            .map_or_else(PathBuf::new, |(_, dir)| dir.clone());
        let mut folder = base.clone();
        for name in names(line) {
            let path = base.join(name);
            folder = if name.ends_with('/') {
                path.clone()
            } else {
                path.parent().map_or_else(PathBuf::new, Path::to_path_buf)
            };
            entries.push(Entry { path, indent });
        }
        parents.push((indent, folder));
    }
    entries
}

/// The names an entry line starts with: its first word, and each next one while a comma
/// follows (`frame.rs, request.rs  what they do`).
fn names(line: &str) -> Vec<&str> {
    let mut names = Vec::new();
    for word in line.split_whitespace() {
        names.push(word.trim_end_matches(','));
        if !word.ends_with(',') {
            break;
        }
    }
    names
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read {
        let path = entry.expect("reading a source folder").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn the_code_map_names_only_paths_that_exist_and_every_source_file() {
    let root = workspace();
    let architecture =
        std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("reading ARCHITECTURE.md");
    let map = code_map(&architecture);
    let entries = entries(map);
    assert!(entries.len() > 20, "the code map parsed to too few entries");

    let missing: Vec<_> = entries
        .iter()
        .filter(|entry| !root.join(&entry.path).exists())
        .map(|entry| entry.path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map names paths that do not exist: {missing:?}"
    );

    // A folder entry with no entries under it stands for everything inside it.
    let leaf_folders: Vec<&Path> = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| root.join(&entry.path).is_dir())
        .filter(|(index, entry)| {
            entries
                .get(index + 1)
                .is_none_or(|next| next.indent <= entry.indent)
        })
        .map(|(_, entry)| entry.path.as_path())
        .collect();
    let named: BTreeSet<&Path> = entries.iter().map(|entry| entry.path.as_path()).collect();
    let words: BTreeSet<&str> = map
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .collect();

    let mut files = Vec::new();
    for dir in SOURCE_ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 50,
        "found too few source files under {root:?}"
    );
    let unmapped: Vec<_> = files
        .iter()
        .map(|file| file.strip_prefix(&root).expect("under the workspace"))
        .filter(|file| !named.contains(file))
        .filter(|file| !leaf_folders.iter().any(|folder| file.starts_with(folder)))
        .filter(|file| {
            let name = file
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            !words.contains(name)
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        unmapped.is_empty(),
        "source files missing from ARCHITECTURE.md's code map (add a line for each): {unmapped:?}"
    );
}
