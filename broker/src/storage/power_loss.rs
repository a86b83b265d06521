//! A simulated disk that loses power, for tests (in the style of FoundationDB's and TigerBeetle's
//! simulators, over real files): the store runs on real files in a directory, every sync point
//! reports what it made durable (`durability.rs`), and [`SimulatedDisk::lose_power`] replaces
//! the directory with what a disk could hold after a power loss: every synced byte, plus an
//! arbitrary seeded subset of the pages written since (torn at page or sector granularity, in any
//! order),
//! and for every directory entry created, renamed or removed since its directory was last synced,
//! either the old or the new state.
//!
//! What counts as durable is strict POSIX: a file's bytes and size once an msync, fsync or
//! fdatasync covering them returned; a directory entry once the directory was fsynced. A file's
//! size set at creation is not durable until the file itself is synced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What an msync writes: whole pages.
pub const PAGE_BYTES: u64 = 4096;
/// The granularity at which unsynced writes reach the disk, or do not, chosen per power loss:
/// pages as the page cache writes them back, or sectors, as a disk may tear a page write.
const TEAR_BYTES: [usize; 2] = [PAGE_BYTES as usize, 512];

/// A file, whatever its name: inode number and birth time (inode numbers are reused).
type FileId = (u64, i128);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    File(FileId),
    Dir,
}

/// One data directory whose durability is tracked.
pub struct SimulatedDisk {
    root: PathBuf,
    state: Mutex<Durable>,
}

#[derive(Default)]
struct Durable {
    /// Each directory's entries as of its last sync; a directory never synced has none.
    dirs: HashMap<PathBuf, BTreeMap<OsString, Entry>>,
    /// Each file's bytes as of its syncs (its length: the size at its last sync).
    files: HashMap<FileId, Vec<u8>>,
}

/// Disks installed by running tests; the hooks look up the one a path lies under.
static DISKS: Mutex<Vec<Arc<SimulatedDisk>>> = Mutex::new(Vec::new());

/// A small seeded random number generator (SplitMix64): the same seed gives the same choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`%.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

impl SimulatedDisk {
    /// Tracks `root` (which must exist and stays tracked until the disk is dropped): everything
    /// in it now counts as durable.
    pub fn install(root: &Path) -> Arc<SimulatedDisk> {
        let disk = Arc::new(SimulatedDisk {
            root: root.to_owned(),
            state: Mutex::new(Durable::default()),
        });
        disk.take_all_as_durable();
        DISKS.lock().unwrap().push(disk.clone());
        disk
    }

    /// Replaces the directory with a state a disk could hold after losing power now. The store
    /// using it must be stopped without a clean shutdown first (`Store::crash`). Afterwards the
    /// new content is all durable (it is what the disk holds).
    pub fn lose_power(&self, rng: &mut Rng) {
        // How likely each unsynced page or entry is to have reached the disk, varied per power
        // loss: none, all, or a coin per page.
        let percent = match rng.below(4) {
            0 => 0,
            1 => 100,
            _ => rng.below(101),
        };
        let tear_bytes = TEAR_BYTES[rng.below(2) as usize];
        self.lose_power_keeping(tear_bytes, &mut |_| rng.chance(percent));
    }

    /// [`SimulatedDisk::lose_power`] with the choices made by `keep`: whether an unsynced
    /// change reached the disk, torn into pieces of `tear_bytes`.
    pub fn lose_power_keeping(&self, tear_bytes: usize, keep: &mut dyn FnMut(Unsynced) -> bool) {
        let current = current_paths(&self.root);
        let rebuilt = self.root.with_extension("after-power-loss");
        let _ = std::fs::remove_dir_all(&rebuilt);
        std::fs::create_dir(&rebuilt).unwrap();
        {
            let durable = self.state.lock().unwrap();
            let mut choices = Choices {
                durable: &durable,
                current: &current,
                tear_bytes,
                keep,
            };
            choices.rebuild_dir(&self.root, &rebuilt);
        }
        std::fs::remove_dir_all(&self.root).unwrap();
        std::fs::rename(&rebuilt, &self.root).unwrap();
        self.take_all_as_durable();
    }

    fn take_all_as_durable(&self) {
        let mut state = self.state.lock().unwrap();
        *state = Durable::default();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = list(&dir);
            for (name, entry) in &entries {
                match entry {
                    Entry::Dir => dirs.push(dir.join(name)),
                    Entry::File(id) => {
                        let bytes = std::fs::read(dir.join(name)).unwrap();
                        state.files.insert(*id, bytes);
                    }
                }
            }
            state.dirs.insert(dir, entries);
        }
    }

    fn record_file(&self, path: &Path, range: Option<(u64, u64)>) {
        // Read under the lock: two syncs of one page from two threads record what they read in
        // the order they read it, never an older snapshot over a newer one.
        let mut state = self.state.lock().unwrap();
        let Ok(file) = File::open(path) else {
            return;
        };
        let Ok(metadata) = file.metadata() else {
            return;
        };
        let len = metadata.len();
        let (from, to) = match range {
            None => (0, len),
            // An msync writes whole pages.
            Some((offset, count)) => (
                offset / PAGE_BYTES * PAGE_BYTES,
                (offset + count).div_ceil(PAGE_BYTES) * PAGE_BYTES,
            ),
        };
        let to = to.min(len);
        let mut bytes = vec![0; (to.saturating_sub(from)) as usize];
        file.read_exact_at(&mut bytes, from).unwrap();
        let durable = state.files.entry(file_id(&metadata)).or_default();
        // Syncing makes the current size durable too.
        durable.resize(len as usize, 0);
        durable[from as usize..to as usize].copy_from_slice(&bytes);
    }

    fn record_dir(&self, dir: &Path) {
        let entries = list(dir);
        self.state
            .lock()
            .unwrap()
            .dirs
            .insert(dir.to_owned(), entries);
    }
}

/// Stops tracking `disk`'s directory.
pub fn uninstall(disk: &Arc<SimulatedDisk>) {
    DISKS.lock().unwrap().retain(|d| !Arc::ptr_eq(d, disk));
}

/// Hook: see `durability::file_synced`.
pub fn file_synced(path: &Path, range: Option<(u64, u64)>) {
    if let Some(disk) = disk_of(path) {
        disk.record_file(path, range);
    }
}

/// Hook: see `durability::dir_synced`.
pub fn dir_synced(dir: &Path) {
    if let Some(disk) = disk_of(dir) {
        disk.record_dir(dir);
    }
}

fn disk_of(path: &Path) -> Option<Arc<SimulatedDisk>> {
    let disks = DISKS.lock().unwrap();
    disks.iter().find(|d| path.starts_with(&d.root)).cloned()
}

fn file_id(metadata: &std::fs::Metadata) -> FileId {
    let born = metadata
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    (metadata.ino(), born)
}

/// A directory's entries now.
fn list(dir: &Path) -> BTreeMap<OsString, Entry> {
    let mut entries = BTreeMap::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return entries;
    };
    for entry in read.flatten() {
        let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let kind = if metadata.is_dir() {
            Entry::Dir
        } else {
            Entry::File(file_id(&metadata))
        };
        entries.insert(entry.file_name(), kind);
    }
    entries
}

/// Where each file under `root` is now.
fn current_paths(root: &Path) -> HashMap<FileId, PathBuf> {
    let mut paths = HashMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for (name, entry) in list(&dir) {
            match entry {
                Entry::Dir => dirs.push(dir.join(name)),
                Entry::File(id) => {
                    paths.insert(id, dir.join(name));
                }
            }
        }
    }
    paths
}

/// A change not synced when the power went, which may or may not have reached the disk.
#[derive(Debug)]
pub enum Unsynced<'a> {
    /// A directory entry created, replaced or removed (the path in the directory as now).
    Entry(&'a Path),
    /// A file's size (the file where it is now).
    Size(&'a Path),
    /// The piece of a file at this offset.
    Bytes(&'a Path, u64),
}

impl Unsynced<'_> {
    pub fn path(&self) -> &Path {
        match self {
            Unsynced::Entry(path) | Unsynced::Size(path) | Unsynced::Bytes(path, _) => path,
        }
    }
}

struct Choices<'a> {
    durable: &'a Durable,
    current: &'a HashMap<FileId, PathBuf>,
    tear_bytes: usize,
    keep: &'a mut dyn FnMut(Unsynced) -> bool,
}

impl Choices<'_> {
    /// Writes into `out` what directory `dir` holds after the power loss.
    fn rebuild_dir(&mut self, dir: &Path, out: &Path) {
        let empty = BTreeMap::new();
        let durable = self.durable.dirs.get(dir).unwrap_or(&empty);
        let now = list(dir);
        let names: BTreeSet<&OsString> = durable.keys().chain(now.keys()).collect();
        for name in names {
            let (before, after) = (durable.get(name), now.get(name));
            let kept = if before == after || (self.keep)(Unsynced::Entry(&dir.join(name))) {
                after
            } else {
                before
            };
            match kept {
                None => {}
                Some(Entry::Dir) => {
                    let out = out.join(name);
                    std::fs::create_dir(&out).unwrap();
                    self.rebuild_dir(&dir.join(name), &out);
                }
                Some(Entry::File(id)) => {
                    let bytes = self.file_after(*id);
                    std::fs::write(out.join(name), bytes).unwrap();
                }
            }
        }
    }

    /// A file's bytes after the power loss: its synced bytes, plus a chosen subset of the
    /// pieces that differ from them now.
    fn file_after(&mut self, id: FileId) -> Vec<u8> {
        let mut bytes = self.durable.files.get(&id).cloned().unwrap_or_default();
        let Some(path) = self.current.get(&id) else {
            return bytes; // Removed since: only what was synced can come back.
        };
        let now = std::fs::read(path).unwrap();
        if now.len() != bytes.len() && (self.keep)(Unsynced::Size(path)) {
            bytes.resize(now.len(), 0);
        }
        for start in (0..bytes.len().min(now.len())).step_by(self.tear_bytes) {
            let end = (start + self.tear_bytes).min(bytes.len()).min(now.len());
            if bytes[start..end] != now[start..end]
                && (self.keep)(Unsynced::Bytes(path, start as u64))
            {
                bytes[start..end].copy_from_slice(&now[start..end]);
            }
        }
        bytes
    }
}
