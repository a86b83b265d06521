//! One preallocated, memory-mapped file: a commit-log segment or a queue-index file.
//!
//! A segment is reserved on disk (fallocate) whole when it is made; a queue-index file is mapped
//! whole but reserved a prefix at a time as it fills (`allocate_to`), so that an index costs
//! disk only for what it holds. Nothing is ever written through the map beyond the reserved
//! prefix, so a write can never meet a full disk (SIGBUS). No descriptor stays open: the map is
//! enough to read, write and msync, and a broker with many files keeps few descriptors.
//!
//! Writers and readers share the mapping without locks on the bytes. The invariant that makes this
//! sound: a byte range is written only while no reader can see it (above the position the store
//! has published), and is never written again after it is published, except by recovery and
//! retention, which run before readers exist or on ranges no reader can reach.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{Advice, MmapRaw};

use super::durability;
use super::error::{Result, StorageError};
use super::file_names::temp_path;

/// The buffer `MappedFile::read_ahead` reads into (and throws away).
const READ_AHEAD_SCRATCH_BYTES: usize = 256 * 1024;
/// The size of `MappedFile::zero_ahead`'s writes: the page-cache folios they make, and what
/// one system call does before the core can go to another thread.
const ZERO_PIECE_BYTES: u64 = 16 * 1024;
/// No piece being zeroed (`MappedFile::zeroing_from`).
const NOT_ZEROING: u64 = u64::MAX;

pub struct MappedFile {
    path: PathBuf,
    map: MmapRaw,
    len: u64,
    /// Bytes from the start reserved on disk: only these may be written.
    allocated: AtomicU64,
    /// Device and inode of the mapped file, so that `zero_ahead`, which opens it by name, never
    /// writes into another file made under the same name since.
    identity: (u64, u64),
    /// The end of the range the writer writes or last wrote (`begin_write`).
    write_end: AtomicU64,
    /// Where the piece each preparer thread's `zero_ahead` is writing starts; `NOT_ZEROING`
    /// between pieces.
    zeroing_from: [AtomicU64; 2],
}

/// Which preparer thread zeroes (`MappedFile::zero_ahead`): each has its own claim, for both may
/// zero the same chunk at once (the normal-priority one takes over what the idle-time one holds).
#[derive(Clone, Copy)]
pub enum ZeroingSlot {
    Near = 0,
    Idle = 1,
}

impl MappedFile {
    /// Creates `path` with `len` bytes reserved on disk (fallocate) and synced, under a temporary
    /// name renamed into place (and the directory synced), so that a crash or power loss never
    /// leaves a half-created file under the real name and a later write through the map can never
    /// meet a full disk.
    pub fn create(path: &Path, len: u64) -> Result<MappedFile> {
        let mut made = MappedFile::create_all_reserving(&[path.to_owned()], len, len)?;
        Ok(made.pop().expect("one file asked for"))
    }

    /// [`MappedFile::create`] for several files at once, with only the first `reserved` bytes of
    /// each reserved on disk (the rest is a hole until `allocate_to` reserves it), in phases:
    /// every temporary file made and reserved, then each synced, renamed into place, and each
    /// directory synced. The file system commits its journal for the first sync of each phase;
    /// the syncs after it find their changes committed already, so many files cost a few
    /// commits, not four each.
    pub fn create_all_reserving(
        paths: &[PathBuf],
        len: u64,
        reserved: u64,
    ) -> Result<Vec<MappedFile>> {
        let reserved = reserved.min(len);
        let mut made: Vec<(PathBuf, File)> = Vec::with_capacity(paths.len());
        let prepared = (|| {
            for path in paths {
                let temp = temp_path(path);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&temp)
                    .map_err(StorageError::io("creating", &temp))?;
                let reserving = file
                    .set_len(len)
                    .and_then(|()| preallocate(&file, 0, reserved));
                made.push((temp.clone(), file));
                reserving.map_err(StorageError::io("preallocating", &temp))?;
            }
            // The size is synced before the name appears: else a power loss can leave the file
            // under its real name but shorter (or empty), and the log would not line up.
            for (temp, file) in &made {
                file.sync_all()
                    .map_err(StorageError::io("preallocating", temp))?;
                durability::file_synced(temp, None);
            }
            Ok(())
        })();
        if let Err(error) = prepared {
            for (temp, _) in &made {
                let _ = std::fs::remove_file(temp);
            }
            return Err(error);
        }
        for ((temp, _), path) in made.iter().zip(paths) {
            std::fs::rename(temp, path).map_err(StorageError::io("renaming", temp))?;
        }
        let dirs: std::collections::BTreeSet<&Path> =
            paths.iter().filter_map(|path| path.parent()).collect();
        for dir in dirs {
            sync_dir(dir)?;
        }
        made.into_iter()
            .zip(paths)
            .map(|((_, file), path)| MappedFile::map(path, file, reserved))
            .collect()
    }

    /// Maps an existing file at its current length, taken as reserved on disk whole (a
    /// segment); an index file then says how much of it is known to be (`limit_reserved`).
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(StorageError::io("opening", path))?;
        MappedFile::map(path, file, u64::MAX)
    }

    /// Takes only the first `reserved` bytes as reserved on disk: `allocate_to` reserves more
    /// before anything is written past them. (SEEK_HOLE cannot tell: ext4 reports reserved but
    /// unwritten ranges as holes.)
    pub fn limit_reserved(&self, reserved: u64) {
        self.allocated.fetch_min(reserved, Ordering::AcqRel);
    }

    fn map(path: &Path, file: File, reserved: u64) -> Result<MappedFile> {
        let metadata = file
            .metadata()
            .map_err(StorageError::io("reading metadata of", path))?;
        let len = metadata.len();
        let map = MmapRaw::map_raw(&file).map_err(StorageError::io("memory-mapping", path))?;
        Ok(MappedFile {
            path: path.to_owned(),
            map,
            len,
            allocated: AtomicU64::new(reserved.min(len)),
            identity: (metadata.dev(), metadata.ino()),
            write_end: AtomicU64::new(0),
            zeroing_from: [AtomicU64::new(NOT_ZEROING), AtomicU64::new(NOT_ZEROING)],
        })
    }

    /// Tells the kernel not to read ahead around a fault on this map (MADV_RANDOM): an index is
    /// read a few entries at a time, and by default each fault would read up to the device's
    /// read-ahead (8 MiB here), making a broker with 10,000 index files read 30 GB at start.
    /// Reading ahead for the writer is `read_ahead`'s job.
    pub fn advise_random_access(&self) -> std::io::Result<()> {
        self.map.advise(memmap2::Advice::Random)
    }

    /// Bytes from the start reserved on disk.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Acquire)
    }

    /// Reserves the file's first `end` bytes on disk (clamped to its length); a full disk is an
    /// error here, never a SIGBUS at a later write. Blocks on the disk: never under the store's
    /// lock.
    pub fn allocate_to(&self, end: u64) -> Result<()> {
        let end = end.min(self.len);
        let from = self.allocated();
        if end <= from {
            return Ok(());
        }
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|file| preallocate(&file, from, end - from))
            .map_err(StorageError::io("preallocating", &self.path))?;
        self.allocated.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes `[offset, offset + len)` of the file.
    ///
    /// The caller must only read ranges that are published (see the module comment).
    pub fn bytes(&self, offset: u64, len: usize) -> &[u8] {
        assert!(
            offset + len as u64 <= self.len,
            "read past the end of {}",
            self.path.display()
        );
        // SAFETY: in bounds (checked above); the mapping lives as long as `self`; the range is
        // published, so no one writes it while this borrow lives (module invariant).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len) }
    }

    /// Says that the writer is about to write below `end`, and waits until no zeros that
    /// `zero_ahead` is writing can land there. The writer calls it before each write through
    /// `bytes_mut` into a file `zero_ahead` may be preparing (a log segment).
    ///
    /// With `zero_ahead`'s side this is Dekker's handshake: each stores, then loads what the
    /// other stored (sequentially consistent), so at least one sees the other. Either the
    /// preparer sees this end and leaves the piece, or this sees the piece claimed and waits for
    /// its zeros to be written, before the bytes that follow them. `zero_ahead` claims only
    /// pieces at least its margin past the end it sees, so the wait happens only if the writer
    /// wrote that much while one piece was being zeroed: a piece of the idle-time thread's, kept
    /// off a saturated machine's cores, is the one case where it is not short.
    pub fn begin_write(&self, end: u64) {
        self.write_end.store(end, Ordering::SeqCst);
        while self
            .zeroing_from
            .iter()
            .any(|from| from.load(Ordering::SeqCst) < end)
        {
            std::thread::yield_now();
        }
    }

    /// Makes the pages of `[offset, offset + len)` (clamped to the reserved part) ready for the
    /// writer by writing zeros over them through the file, `ZERO_PIECE_BYTES` at a time, then
    /// mapping them writable (MADV_POPULATE_WRITE): for a log segment, whose unwritten bytes are
    /// zeros. Stops at the first piece less than `margin` past the writer's end
    /// (`begin_write`) and returns where it stopped (`offset + len` when it zeroed all).
    ///
    /// Each piece is claimed before the writer's end is checked and released once written (see
    /// `begin_write`). The file is opened by name and checked to be the one mapped. Not a read
    /// (`read_ahead`): a read of a fresh segment runs the kernel's read-ahead, which makes up to
    /// 8 MiB of page cache inside one system call (BENCHMARKS.md, session 20); writes of 16 KiB
    /// make 16 KiB folios, as that read-ahead does, in calls that each end within microseconds.
    pub fn zero_ahead(
        &self,
        offset: u64,
        len: u64,
        margin: u64,
        slot: ZeroingSlot,
    ) -> std::io::Result<u64> {
        let end = offset + len.min(self.allocated().saturating_sub(offset));
        if end <= offset {
            return Ok(offset);
        }
        let file = OpenOptions::new().write(true).open(&self.path)?;
        let metadata = file.metadata()?;
        if (metadata.dev(), metadata.ino()) != self.identity {
            return Ok(offset); // deleted and made again since: nothing of this map to prepare
        }
        static ZEROS: [u8; ZERO_PIECE_BYTES as usize] = [0; ZERO_PIECE_BYTES as usize];
        let claim = &self.zeroing_from[slot as usize];
        let mut at = offset;
        while at < end {
            // Pieces aligned to their size, so that each makes one folio.
            let piece_end = ((at / ZERO_PIECE_BYTES + 1) * ZERO_PIECE_BYTES).min(end);
            claim.store(at, Ordering::SeqCst);
            if self.write_end.load(Ordering::SeqCst) + margin > at {
                claim.store(NOT_ZEROING, Ordering::SeqCst);
                break;
            }
            let written = file.write_all_at(&ZEROS[..(piece_end - at) as usize], at);
            claim.store(NOT_ZEROING, Ordering::SeqCst);
            written?;
            at = piece_end;
        }
        if at > offset {
            // An error only leaves the faults to the writer (an older kernel, memory pressure).
            let _ = self.map.advise_range(
                Advice::PopulateWrite,
                offset as usize,
                (at - offset) as usize,
            );
        }
        Ok(at)
    }

    /// Writable bytes `[offset, offset + len)` of the file.
    ///
    /// # Safety
    /// The caller must be the only writer of this range and no reader may see it until the
    /// returned borrow ends (see the module comment).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: u64, len: usize) -> &mut [u8] {
        assert!(
            offset + len as u64 <= self.allocated(),
            "write past the reserved part of {}",
            self.path.display()
        );
        std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset as usize), len)
    }

    /// Makes the pages of `[offset, offset + len)` (clamped to the reserved part) ready for the
    /// writer: brought into the page cache through the file, not the map (a read into a scratch
    /// buffer), then mapped writable. For index files, and for the log's pages too close to the
    /// writer to zero (`zero_ahead`). So the writer reaching them later takes no page fault: no
    /// file-system work (block mapping, waiting behind extent conversion or the journal) and no
    /// `page_mkwrite` on the append path.
    ///
    /// Why read first: populating pages that are not in memory through the map (MADV_POPULATE_*)
    /// runs the kernel's own read-ahead inside the fault, holding the process's memory-map lock,
    /// which stalled the whole broker for milliseconds at a time (BENCHMARKS.md, "The end-to-end
    /// tail"). A read, not readahead(2): readahead is a hint the kernel may cut short (its
    /// allocations give up rather than wait for memory), and on a busy machine it left pages out
    /// here and there (1 to 19 pages of a 16 MiB segment in 5 of 86 runs of
    /// `the_pages_ahead_of_the_writer_are_in_memory_before_it_reaches_them`): a read returns once
    /// every page is in.
    ///
    /// Then MADV_POPULATE_WRITE (Linux 5.14) does for pages already in memory what the writer's
    /// first store to each would do (ext4's `page_mkwrite`, a writable page-table entry): about a
    /// fifth of the broker worker's time at 100,000 msg/s (BENCHMARKS.md, session 13). It marks
    /// the pages dirty, so pages the writer does not reach within the kernel's write-back delay
    /// (30 s by default) are written as the zeros they hold, once. A kernel that refuses the
    /// advice leaves those faults to the writer. Neither step changes a byte, so both may run
    /// while the writer writes nearby.
    ///
    /// The file is opened for each call on purpose: the kernel's read-ahead state is per open
    /// file, and a descriptor kept open grows its reads into 2 MiB page-cache folios, which a
    /// write through the map dirties whole, so that each msync of a few KiB wrote 2 MiB
    /// (BENCHMARKS.md, "Session 13: the preparer's read-ahead without copying every byte", which
    /// also measured readahead(2), MADV_WILLNEED and a splice of the range into /dev/null instead
    /// of this read, and kept none of them).
    pub fn read_ahead(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.read_in(offset, len, false)
    }

    /// [`MappedFile::read_ahead`] reading exactly the range (POSIX_FADV_RANDOM): no read-ahead
    /// window and no read-ahead mark, in 4 KiB folios. For the few log pages too close to the
    /// writer to zero (`zero_ahead`): a mark left there would make a later fault of the map read
    /// ahead through the map's own descriptor, whose read-ahead state grows its folios to 2 MiB,
    /// and an msync of a few KiB then writes 2 MiB (a 10 s run at 20,000 msg/s under sync flush
    /// wrote 10 GB, BENCHMARKS.md session 20).
    pub fn read_exactly(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.read_in(offset, len, true)
    }

    fn read_in(&self, offset: u64, len: u64, exactly: bool) -> std::io::Result<()> {
        let len = len.min(self.allocated().saturating_sub(offset));
        if len == 0 {
            return Ok(());
        }
        let file = File::open(&self.path)?;
        if exactly {
            // SAFETY: advice on an open descriptor; it changes no data.
            let code =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
            if code != 0 {
                return Err(std::io::Error::from_raw_os_error(code));
            }
        }
        thread_local! {
            // Made (and zeroed) once per thread: zeroing a fresh buffer for each chunk cost
            // more than the read (callgrind: 960 instructions a produced message).
            static SCRATCH: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(vec![0u8; READ_AHEAD_SCRATCH_BYTES]);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut at = offset;
            while at < offset + len {
                let want = ((offset + len - at) as usize).min(scratch.len());
                match file.read_at(&mut scratch[..want], at)? {
                    0 => break, // the file ends here
                    read => at += read as u64,
                }
            }
            Ok::<(), std::io::Error>(())
        })?;
        // An error only leaves the faults to the writer (an older kernel, memory pressure).
        let _ = self
            .map
            .advise_range(Advice::PopulateWrite, offset as usize, len as usize);
        Ok(())
    }

    /// Zeroes everything from `offset` to the end of the file and makes that durable, without
    /// reading it (fallocate ZERO_RANGE: a metadata change, cheap on a 1 GiB segment), keeping it
    /// reserved on disk. For recovery, before readers or writers exist.
    pub fn zero_to_end(&self, offset: u64) -> Result<()> {
        self.clear_to_end(offset, true)
    }

    /// [`MappedFile::zero_to_end`] releasing the disk it took instead (a hole: `allocate_to`
    /// reserves it again before a write).
    pub fn discard_from(&self, offset: u64) -> Result<()> {
        self.clear_to_end(offset, false)
    }

    fn clear_to_end(&self, offset: u64, keep_reserved: bool) -> Result<()> {
        let len = self.len.saturating_sub(offset);
        if len == 0 {
            return Ok(());
        }
        let io = StorageError::io("zeroing the end of", &self.path);
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(StorageError::io("opening", &self.path))?;
        let (fd, from, count) = (file.as_raw_fd(), offset as libc::off_t, len as libc::off_t);
        // SAFETY: plain syscalls on an open descriptor.
        let zeroed = keep_reserved
            && unsafe { libc::fallocate(fd, libc::FALLOC_FL_ZERO_RANGE, from, count) } == 0;
        if !zeroed {
            // Not every file system has ZERO_RANGE (tmpfs): punch a hole, then reserve it again.
            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: as above.
            if unsafe { libc::fallocate(fd, punch, from, count) } != 0 {
                return Err(io(std::io::Error::last_os_error()));
            }
            if keep_reserved {
                preallocate(&file, offset, len)
                    .map_err(StorageError::io("preallocating", &self.path))?;
            } else {
                self.limit_reserved(offset);
            }
        }
        file.sync_data().map_err(io)?;
        durability::file_synced(&self.path, None);
        Ok(())
    }

    /// Whether any byte from `offset` on is not zero. Reads only what the file system holds as
    /// data (SEEK_DATA/SEEK_HOLE): a reserved but never written range is a hole on ext4 and XFS,
    /// unless its pages were read into the page cache (then they are read, from memory).
    pub fn holds_data_from(&self, offset: u64) -> Result<bool> {
        if offset >= self.len {
            return Ok(false);
        }
        let file = File::open(&self.path).map_err(StorageError::io("opening", &self.path))?;
        let seek = |from: u64, whence: libc::c_int| -> Result<Option<u64>> {
            // SAFETY: plain syscall on an open descriptor.
            let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
            if at >= 0 {
                return Ok(Some((at as u64).min(self.len)));
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None); // no data from `from` on
            }
            Err(StorageError::io("seeking data in", &self.path)(error))
        };
        let mut from = offset;
        while from < self.len {
            let Some(data) = seek(from, libc::SEEK_DATA)? else {
                return Ok(false);
            };
            let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(self.len);
            let start = data.max(offset);
            if hole > start
                && self
                    .bytes(start, (hole - start) as usize)
                    .iter()
                    .any(|byte| *byte != 0)
            {
                return Ok(true);
            }
            from = hole.max(from + 1);
        }
        Ok(false)
    }

    /// Writes `[offset, offset + len)` of the map to disk and waits for it (msync MS_SYNC).
    pub fn sync_range(&self, offset: u64, len: u64) -> std::io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(offset as usize, len as usize)?;
        durability::file_synced(&self.path, Some((offset, len)));
        Ok(())
    }
}

/// A mapped file shared between the writer, readers and the flusher.
pub type SharedFile = Arc<MappedFile>;

/// Reserves `[from, from + len)` of `file` on disk, failing with ENOSPC now rather than with
/// SIGBUS later.
fn preallocate(file: &File, from: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall on an open descriptor.
    let code =
        unsafe { libc::posix_fallocate(file.as_raw_fd(), from as libc::off_t, len as libc::off_t) };
    if code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(code))
    }
}

/// Creates `dir` and its missing parents, each made durable in its parent directory (a new
/// directory whose own entry is not synced can vanish with everything in it at a power loss).
pub fn create_dir_durably(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.is_dir() {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(StorageError::io("creating", dir))?;
    for created in missing.iter().rev() {
        match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io("fsyncing directory", dir))?;
    durability::dir_synced(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_file_is_preallocated_and_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000");
        let file = MappedFile::create(&path, 1 << 20).unwrap();
        assert_eq!(file.len(), 1 << 20);
        assert!(file.bytes(0, 1 << 20).iter().all(|b| *b == 0));
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap());
        assert!(blocks * 512 >= 1 << 20, "only {blocks} blocks reserved");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn written_bytes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = MappedFile::create(&path, 8192).unwrap();
        unsafe { file.bytes_mut(4090, 5) }.copy_from_slice(b"hello");
        file.sync_range(4090, 5).unwrap();
        drop(file);
        let file = MappedFile::open(&path).unwrap();
        assert_eq!(file.bytes(4090, 5), b"hello");
    }

    /// The writer and both zeroing threads race with no margin, so that pieces are claimed
    /// right at the writer's end all the time: no zero may land on a written byte.
    #[test]
    fn zeros_written_ahead_never_land_on_what_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let len = 4 << 20;
        let file = Arc::new(MappedFile::create(&dir.path().join("segment"), len).unwrap());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let zeroers: Vec<_> = [ZeroingSlot::Near, ZeroingSlot::Idle]
            .into_iter()
            .map(|slot| {
                let (file, done) = (file.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut pieces = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        let from = file.write_end.load(Ordering::SeqCst);
                        let to = file.zero_ahead(from, 64 * 1024, 0, slot).unwrap();
                        pieces += (to - from).div_ceil(ZERO_PIECE_BYTES);
                    }
                    pieces
                })
            })
            .collect();
        let record = 1000u64;
        let mut offset = 0;
        while offset + record <= len {
            file.begin_write(offset + record);
            // SAFETY: the only writer, and nothing reads the file until the zeroers stop.
            unsafe { file.bytes_mut(offset, record as usize) }.fill(0xA5);
            offset += record;
        }
        done.store(true, Ordering::Relaxed);
        let pieces: u64 = zeroers.into_iter().map(|z| z.join().unwrap()).sum();
        assert!(
            pieces > 100,
            "the zeroers wrote only {pieces} pieces: no race was tried"
        );
        let zeroed = file
            .bytes(0, offset as usize)
            .iter()
            .filter(|b| **b != 0xA5)
            .count();
        assert_eq!(
            zeroed, 0,
            "{zeroed} written bytes were zeroed after the writer wrote them"
        );
    }
}
