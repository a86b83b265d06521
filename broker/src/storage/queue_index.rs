//! The index of one (topic, queue): fixed-size entries, one per batch, from queue offset to the
//! batch's position in the commit log, split into files named by their first queue offset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Result, StorageError};
use super::file_names::{index_file_path, parse_offset_name, TEMP_SUFFIX};
use super::preparer::INDEX_READ_AHEAD_BYTES;
use super::segment::{create_dir_durably, sync_dir, MappedFile, SharedFile};

/// Bytes of one entry: base queue offset, log position, batch size, message count.
pub const ENTRY_BYTES: u64 = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub base_queue_offset: u64,
    pub position: u64,
    pub size: u32,
    pub message_count: u32,
}

impl IndexEntry {
    /// Queue offset one past the batch's last message.
    pub fn next_queue_offset(&self) -> u64 {
        self.base_queue_offset + u64::from(self.message_count)
    }
}

/// One index file, named by its first queue offset.
pub struct IndexFile {
    first_queue_offset: u64,
    /// The file's map; `None` while its queue is unmapped (`QueueIndex::unmap_files`): what
    /// reads or writes entries maps it first (`QueueIndex::map_files`).
    file: Option<SharedFile>,
    /// Slots in the file.
    capacity: u64,
    entries: u64,
    /// Its first and last entries, kept in memory so that an unmapped index still knows where
    /// it begins and ends (retention, truncation and recovery ask every queue's index).
    first: Option<IndexEntry>,
    last: Option<IndexEntry>,
    /// Bytes from the start the preparer was asked to read ahead.
    read_ahead_requested_bytes: u64,
}

/// Pages of an index file to read into memory ahead of its next entry.
pub struct ReadAheadRequest {
    pub file: SharedFile,
    pub offset: u64,
    pub len: u64,
}

impl IndexFile {
    /// Creates the file of `dir`'s entries from `first_queue_offset` on and reads its first
    /// pages in.
    pub fn create(dir: &Path, first_queue_offset: u64, entries_per_file: u32) -> Result<IndexFile> {
        let mut made =
            IndexFile::create_all(&[dir.to_owned()], first_queue_offset, entries_per_file)?;
        Ok(made.pop().expect("one file asked for"))
    }

    /// [`IndexFile::create`] in each of `dirs` at once (`MappedFile::create_all_reserving`).
    pub fn create_all(
        dirs: &[PathBuf],
        first_queue_offset: u64,
        entries_per_file: u32,
    ) -> Result<Vec<IndexFile>> {
        let paths: Vec<PathBuf> = dirs
            .iter()
            .map(|dir| index_file_path(dir, first_queue_offset))
            .collect();
        let len = u64::from(entries_per_file) * ENTRY_BYTES;
        let files = MappedFile::create_all_reserving(&paths, len, INDEX_READ_AHEAD_BYTES)?;
        Ok(files
            .into_iter()
            .map(|file| {
                let _ = file.advise_random_access();
                let _ = file.read_ahead(0, INDEX_READ_AHEAD_BYTES);
                IndexFile {
                    first_queue_offset,
                    capacity: file.len() / ENTRY_BYTES,
                    file: Some(Arc::new(file)),
                    entries: 0,
                    first: None,
                    last: None,
                    read_ahead_requested_bytes: INDEX_READ_AHEAD_BYTES,
                }
            })
            .collect())
    }

    /// Maps the file of `dir`'s entries from `first_queue_offset` on, as it is on disk.
    fn map(dir: &Path, first_queue_offset: u64) -> Result<SharedFile> {
        let file = MappedFile::open(&index_file_path(dir, first_queue_offset))?;
        let _ = file.advise_random_access();
        Ok(Arc::new(file))
    }

    /// The map; its queue's index is mapped while it is used (`Indexes::get_mapped`).
    fn mapped(&self) -> &SharedFile {
        self.file
            .as_ref()
            .expect("an index is mapped before its entries are read or written")
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn entry(&self, slot: u64) -> IndexEntry {
        let bytes = self
            .mapped()
            .bytes(slot * ENTRY_BYTES, ENTRY_BYTES as usize);
        IndexEntry {
            base_queue_offset: u64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes")),
            position: u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
            size: u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes")),
            message_count: u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes")),
        }
    }

    /// Slot of the entry holding `queue_offset`, if this file has one.
    fn slot_of(&self, queue_offset: u64) -> Option<u64> {
        let (mut low, mut high) = (0, self.entries);
        while low < high {
            let middle = low + (high - low) / 2;
            let entry = self.entry(middle);
            if entry.next_queue_offset() <= queue_offset {
                low = middle + 1;
            } else if entry.base_queue_offset > queue_offset {
                high = middle;
            } else {
                return Some(middle);
            }
        }
        None
    }

    fn write_entry(&self, slot: u64, entry: IndexEntry) {
        // SAFETY: the store's writer lock serializes index writes, and `slot` is past the
        // published entries, which are all readers look at.
        let bytes = unsafe {
            self.mapped()
                .bytes_mut(slot * ENTRY_BYTES, ENTRY_BYTES as usize)
        };
        bytes[0..8].copy_from_slice(&entry.base_queue_offset.to_be_bytes());
        bytes[8..16].copy_from_slice(&entry.position.to_be_bytes());
        bytes[16..20].copy_from_slice(&entry.size.to_be_bytes());
        bytes[20..24].copy_from_slice(&entry.message_count.to_be_bytes());
    }
}

pub struct QueueIndex {
    dir: PathBuf,
    entries_per_file: u32,
    /// Sorted by first queue offset; only the last one has free slots.
    files: Vec<IndexFile>,
    next_queue_offset: u64,
    /// Files whose first queue offset is at least this may hold entries not yet synced.
    unsynced_from_queue_offset: u64,
    /// Entries dropped since open (`truncate_from_position`, `start_at`): a change that is
    /// not an append.
    truncations: u64,
    /// `(next_queue_offset, truncations)` as the last successful sync found them: while both
    /// are still the same nothing was written since, and the index needs no sync. With 10,000
    /// queues, syncing every index's newest file every interval whether written or not was
    /// 10,000 `msync` calls a round, a whole core.
    synced_at: Option<(u64, u64)>,
    /// When it was last used (`Indexes`' clock): the least recently used are unmapped first.
    pub last_used: u64,
    /// Whether its files are unmapped (by `open` or `unmap_files`, and `map_files` has not
    /// mapped them since): an append checks this, not every file.
    unmapped: bool,
}

/// What `QueueIndex::unsynced_files` saw, for `QueueIndex::mark_synced` once they are synced.
#[derive(Debug, Clone, Copy)]
pub struct SyncMark {
    /// The newest file's first queue offset: it can still receive entries.
    newest_file: u64,
    next_queue_offset: u64,
    truncations: u64,
}

impl QueueIndex {
    /// Opens the index in `dir`, creating the directory if needed; its files are unmapped until
    /// it is used (`map_files`).
    pub fn open(dir: &Path, entries_per_file: u32) -> Result<QueueIndex> {
        create_dir_durably(dir)?;
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(StorageError::io("listing", dir))? {
            let entry = entry.map_err(StorageError::io("listing", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TEMP_SUFFIX) {
                std::fs::remove_file(entry.path())
                    .map_err(StorageError::io("deleting", entry.path()))?;
            } else if let Some(first) = parse_offset_name(&name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut files = Vec::with_capacity(firsts.len());
        for first_queue_offset in firsts {
            let file = IndexFile::map(dir, first_queue_offset)?;
            let mut index_file = IndexFile {
                first_queue_offset,
                capacity: file.len() / ENTRY_BYTES,
                file: Some(file),
                entries: 0,
                first: None,
                last: None,
                read_ahead_requested_bytes: 0,
            };
            index_file.entries = count_entries(&index_file);
            let used = index_file.entries * ENTRY_BYTES;
            if index_file.entries > 0 {
                index_file.first = Some(index_file.entry(0));
                index_file.last = Some(index_file.entry(index_file.entries - 1));
            }
            let file = index_file.mapped();
            // Past the entries, a power loss may have kept pages of entries written after one
            // that it lost: stale, and if left, a later count could take them for entries.
            if file.holds_data_from(used)? {
                file.discard_from(used)?;
            }
            index_file.read_ahead_requested_bytes = used;
            // Counted, the file is left unmapped until its queue is used (`map_files`): a
            // broker with more index files than a process may map still starts. Its entries
            // are on disk: recovery drops those past what the last checkpoint synced, and
            // appends the ones it indexes again to a mapped file.
            index_file.file = None;
            files.push(index_file);
        }
        let next_queue_offset = end_of(&files);
        let unmapped = !files.is_empty();
        Ok(QueueIndex {
            dir: dir.to_owned(),
            entries_per_file,
            files,
            next_queue_offset,
            unsynced_from_queue_offset: 0,
            truncations: 0,
            synced_at: None,
            last_used: 0,
            unmapped,
        })
    }

    /// The earliest and next queue offsets as far as the index knows them without its files:
    /// its oldest entry's offset, and the next offset (whether visible or not).
    pub fn offsets_in_memory(&self) -> (u64, u64) {
        let earliest = self
            .files
            .iter()
            .find_map(|f| f.first)
            .map_or(self.next_queue_offset, |first| first.base_queue_offset);
        (earliest, self.next_queue_offset)
    }

    /// Index files mapped now.
    pub fn mapped_files(&self) -> usize {
        self.files.iter().filter(|f| f.file.is_some()).count()
    }

    /// Maps the files left unmapped by `open` or `unmap_files`.
    pub fn map_files(&mut self) -> Result<()> {
        if !self.unmapped {
            return Ok(());
        }
        for file in self.files.iter_mut().filter(|f| f.file.is_none()) {
            let mapped = IndexFile::map(&self.dir, file.first_queue_offset)?;
            // What its entries fill was reserved when they were written; the rest is reserved
            // again (a no-op where it already is) before anything is written there.
            mapped.limit_reserved(file.entries * ENTRY_BYTES);
            file.file = Some(mapped);
        }
        self.unmapped = false;
        Ok(())
    }

    /// Whether everything written is synced: nothing for the flusher to write.
    pub fn is_synced(&self) -> bool {
        self.synced_at == Some((self.next_queue_offset, self.truncations))
    }

    /// Lets go of the maps of a synced index (`is_synced`), to be mapped again when it is next
    /// used; returns them, for the caller to drop (munmap) outside the store's lock.
    pub fn unmap_files(&mut self) -> Vec<SharedFile> {
        assert!(self.is_synced(), "only a synced index is unmapped");
        self.unmapped = true;
        self.files
            .iter_mut()
            .filter_map(|f| f.file.take())
            .collect()
    }

    /// Starts an index that has no files at `queue_offset` (a replica whose first batch of this
    /// queue is not its first: the master's retention deleted those before it).
    pub fn start_at(&mut self, queue_offset: u64) {
        assert!(self.files.is_empty());
        self.next_queue_offset = queue_offset;
        self.unsynced_from_queue_offset = queue_offset;
        self.truncations += 1;
    }

    pub fn has_files(&self) -> bool {
        !self.files.is_empty()
    }

    /// Queue offset the next batch gets.
    pub fn next_queue_offset(&self) -> u64 {
        self.next_queue_offset
    }

    /// Whether the next append needs a new file (none yet, or the last one is full).
    pub fn needs_file(&self) -> bool {
        self.files
            .last()
            .is_none_or(|last| last.entries == last.capacity())
    }

    /// When the last file's next entry lies past its reserved part: the file, and how far to
    /// reserve it (outside the store's lock, with `MappedFile::allocate_to`).
    pub fn needs_reserving(&self) -> Option<(SharedFile, u64)> {
        let last = self.files.last()?;
        let next_end = (last.entries + 1) * ENTRY_BYTES;
        if last.entries == last.capacity() || next_end <= last.mapped().allocated() {
            return None;
        }
        Some((last.mapped().clone(), next_end + INDEX_READ_AHEAD_BYTES))
    }

    /// The file the next append needs, to be made (outside the store's lock) and passed to
    /// `add_file`: its directory, first queue offset and size.
    pub fn next_file_plan(&self) -> (PathBuf, u64, u32) {
        (
            self.dir.clone(),
            self.next_queue_offset,
            self.entries_per_file,
        )
    }

    /// Adds a file made from `next_file_plan` while `needs_file` said so.
    pub fn add_file(&mut self, file: IndexFile) {
        assert!(
            self.needs_file(),
            "an index file added where none is needed"
        );
        assert_eq!(file.first_queue_offset, self.next_queue_offset);
        self.files.push(file);
    }

    /// Makes sure the next append has a slot, creating a file if needed, so that `append` itself
    /// cannot fail after the batch is in the log (recovery; appends make files outside the lock).
    pub fn prepare_append(&mut self) -> Result<()> {
        if self.needs_file() {
            let (dir, first, entries_per_file) = self.next_file_plan();
            self.add_file(IndexFile::create(&dir, first, entries_per_file)?);
        }
        if let Some((file, end)) = self.needs_reserving() {
            file.allocate_to(end)?;
        }
        Ok(())
    }

    /// Adds the entry of the next batch (a file must have room: see `needs_file`); returns the
    /// pages to read ahead of the next entries, when it is time to ask for more.
    pub fn append(&mut self, entry: IndexEntry) -> Option<ReadAheadRequest> {
        assert_eq!(
            entry.base_queue_offset,
            self.next_queue_offset,
            "queue offsets of {} must increase without gaps",
            self.dir.display()
        );
        let last = self.files.last_mut().expect("prepare_append was called");
        assert!(last.entries < last.capacity(), "prepare_append was called");
        last.write_entry(last.entries, entry);
        last.entries += 1;
        last.first.get_or_insert(entry);
        last.last = Some(entry);
        self.next_queue_offset = entry.next_queue_offset();
        let used = last.entries * ENTRY_BYTES;
        if used + INDEX_READ_AHEAD_BYTES / 2 <= last.read_ahead_requested_bytes
            || last.read_ahead_requested_bytes >= last.mapped().len()
        {
            return None;
        }
        let from = last.read_ahead_requested_bytes.max(used);
        last.read_ahead_requested_bytes = used + INDEX_READ_AHEAD_BYTES;
        Some(ReadAheadRequest {
            file: last.mapped().clone(),
            offset: from,
            len: last.read_ahead_requested_bytes - from,
        })
    }

    /// Sets the next queue offset of an index that has no entries (recovery of a queue whose
    /// index files were lost or dropped).
    pub fn restart_at(&mut self, queue_offset: u64) -> Result<()> {
        assert!(!self.has_entries());
        for empty in self.files.drain(..) {
            let path = index_file_path(&self.dir, empty.first_queue_offset);
            std::fs::remove_file(&path).map_err(StorageError::io("deleting", &path))?;
        }
        sync_dir(&self.dir)?;
        self.next_queue_offset = queue_offset;
        self.truncations += 1;
        Ok(())
    }

    pub fn has_entries(&self) -> bool {
        self.files.iter().any(|f| f.entries > 0)
    }

    /// Log position of the oldest batch indexed, if any.
    pub fn first_position(&self) -> Option<u64> {
        Some(self.files.iter().find_map(|f| f.first)?.position)
    }

    /// The entry of the batch holding `queue_offset`.
    #[cfg(test)]
    pub fn lookup(&self, queue_offset: u64) -> Option<IndexEntry> {
        let (file, slot) = self.locate(queue_offset)?;
        Some(self.files[file].entry(slot))
    }

    /// Entries from the batch holding `queue_offset` on, in order.
    pub fn entries_from(&self, queue_offset: u64) -> impl Iterator<Item = IndexEntry> + '_ {
        let start = self.locate(queue_offset);
        self.files
            .iter()
            .enumerate()
            .skip(start.map_or(self.files.len(), |(file, _)| file))
            .flat_map(move |(number, file)| {
                let first_slot = match start {
                    Some((start_file, slot)) if start_file == number => slot,
                    _ => 0,
                };
                (first_slot..file.entries).map(move |slot| file.entry(slot))
            })
    }

    fn locate(&self, queue_offset: u64) -> Option<(usize, u64)> {
        let after = self
            .files
            .partition_point(|f| f.first_queue_offset <= queue_offset);
        let file = after.checked_sub(1)?;
        let slot = self.files[file].slot_of(queue_offset)?;
        Some((file, slot))
    }

    /// The queue offset after the last batch that ends at or below log position `visible`: the
    /// end of the queue as consumers may see it. Looks back from the newest entry, past only the
    /// batches not visible yet (those of one flush round at most).
    pub fn next_offset_visible_at(&self, visible: u64) -> u64 {
        for file in self.files.iter().rev() {
            for slot in (0..file.entries).rev() {
                let entry = file.entry(slot);
                if entry.position + u64::from(entry.size) <= visible {
                    return entry.next_queue_offset();
                }
            }
            if file.entries > 0 {
                return file.entry(0).base_queue_offset;
            }
        }
        self.next_queue_offset
    }

    /// The oldest queue offset whose batch is at or after `log_start`.
    pub fn earliest_offset(&self, log_start: u64) -> u64 {
        for file in &self.files {
            if file.entries == 0 || file.entry(file.entries - 1).position < log_start {
                continue;
            }
            let (mut low, mut high) = (0, file.entries);
            while low < high {
                let middle = low + (high - low) / 2;
                if file.entry(middle).position < log_start {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            return file.entry(low).base_queue_offset;
        }
        self.next_queue_offset
    }

    /// Drops every entry of a batch at or after `position` (recovery re-indexes them).
    pub fn truncate_from_position(&mut self, position: u64) -> Result<()> {
        // Nothing at or after `position` (the usual case for all queues but a few): left as it
        // is, mapped or not.
        if self
            .files
            .last()
            .and_then(|last| last.last)
            .is_some_and(|newest| newest.position < position)
        {
            return Ok(());
        }
        self.map_files()?;
        while let Some(last) = self.files.last_mut() {
            let keep = (0..last.entries)
                .rev()
                .find(|slot| last.entry(*slot).position < position)
                .map_or(0, |slot| slot + 1);
            if keep < last.entries {
                for slot in keep..last.entries {
                    // SAFETY: recovery runs before any reader exists.
                    unsafe {
                        last.mapped()
                            .bytes_mut(slot * ENTRY_BYTES, ENTRY_BYTES as usize)
                    }
                    .fill(0);
                }
                let len = (last.entries - keep) * ENTRY_BYTES;
                last.mapped()
                    .sync_range(keep * ENTRY_BYTES, len)
                    .map_err(StorageError::io("syncing", last.mapped().path()))?;
                last.entries = keep;
                last.last = keep.checked_sub(1).map(|slot| last.entry(slot));
                if keep == 0 {
                    last.first = None;
                }
            }
            if last.entries == 0 && self.files.len() > 1 {
                let empty = self.files.pop().expect("not empty");
                let path = index_file_path(&self.dir, empty.first_queue_offset);
                std::fs::remove_file(&path).map_err(StorageError::io("deleting", &path))?;
                // Durably: an empty file coming back after a power loss would move the end.
                sync_dir(&self.dir)?;
            } else {
                break;
            }
        }
        if !self.files.is_empty() {
            self.next_queue_offset = end_of(&self.files);
        }
        let last_first = self.files.last().map_or(0, |f| f.first_queue_offset);
        self.unsynced_from_queue_offset = self.unsynced_from_queue_offset.min(last_first);
        self.truncations += 1;
        Ok(())
    }

    /// Forgets index files whose batches all lie before `log_start`, keeping the newest file,
    /// and returns their paths for the caller to delete outside the store's lock.
    pub fn delete_before_position(&mut self, log_start: u64) -> Vec<PathBuf> {
        let mut deleted = Vec::new();
        while self.files.len() > 1 {
            if self.files[0]
                .last
                .is_some_and(|last| last.position >= log_start)
            {
                break;
            }
            let first_queue_offset = self.files.remove(0).first_queue_offset;
            deleted.push(index_file_path(&self.dir, first_queue_offset));
        }
        deleted
    }

    /// Files that may hold unsynced entries with the bytes their entries use (only those are
    /// synced: pages read ahead are not written), none when nothing was written since the last
    /// sync, and a mark to pass to `mark_synced`.
    pub fn unsynced_files(&self) -> (Vec<(SharedFile, u64)>, SyncMark) {
        let mark = SyncMark {
            newest_file: self.files.last().map_or(0, |f| f.first_queue_offset),
            next_queue_offset: self.next_queue_offset,
            truncations: self.truncations,
        };
        if self.is_synced() {
            return (Vec::new(), mark);
        }
        // An unmapped file was synced before it was unmapped, and nothing is written to it
        // without mapping it again.
        let files = self
            .files
            .iter()
            .filter(|f| f.first_queue_offset >= self.unsynced_from_queue_offset)
            .filter_map(|f| Some((f.file.clone()?, f.entries * ENTRY_BYTES)))
            .collect();
        (files, mark)
    }

    /// Records that the files `unsynced_files` returned are synced; the newest of them can
    /// still receive entries, so it stays in the next round that has anything new.
    pub fn mark_synced(&mut self, mark: SyncMark) {
        self.unsynced_from_queue_offset = self.unsynced_from_queue_offset.max(mark.newest_file);
        self.synced_at = Some((mark.next_queue_offset, mark.truncations));
    }
}

/// Queue offset after the last entry of the last file (0 without files).
fn end_of(files: &[IndexFile]) -> u64 {
    files.last().map_or(0, |last| {
        last.last
            .map_or(last.first_queue_offset, |entry| entry.next_queue_offset())
    })
}

/// Number of entries in a file: the run from its first slot in which each entry goes on from the
/// one before (its first queue offset is where the previous one ended, its batch lies after the
/// previous one's), up to the first free (size 0) or discontinuous slot. Entries are written in
/// order, but after a power loss a later page of them can be on disk without an earlier one:
/// what follows such a gap is not part of the index. Linear: reads every entry once.
fn count_entries(file: &IndexFile) -> u64 {
    let mut next_queue_offset = file.first_queue_offset;
    let mut next_position = 0;
    for slot in 0..file.capacity() {
        let entry = file.entry(slot);
        let continues = entry.size != 0
            && entry.message_count != 0
            && entry.base_queue_offset == next_queue_offset
            && entry.position >= next_position;
        if !continues {
            return slot;
        }
        next_queue_offset = entry.next_queue_offset();
        next_position = entry.position + u64::from(entry.size);
    }
    file.capacity()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: u64, count: u32) -> IndexEntry {
        IndexEntry {
            base_queue_offset: base,
            position: base * 1000,
            size: 100,
            message_count: count,
        }
    }

    fn filled(dir: &Path, batches: u64, per_file: u32) -> QueueIndex {
        let mut index = QueueIndex::open(dir, per_file).unwrap();
        for batch in 0..batches {
            index.prepare_append().unwrap();
            index.append(entry(batch * 10, 10));
        }
        index
    }

    #[test]
    fn lookups_at_batch_and_file_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let index = filled(dir.path(), 40, 16);
        assert_eq!(index.next_queue_offset(), 400);
        for (queue_offset, expected_base) in [
            (0, 0),
            (9, 0),
            (10, 10),
            (159, 150),
            (160, 160),
            (161, 160),
            (399, 390),
        ] {
            assert_eq!(
                index.lookup(queue_offset).unwrap().base_queue_offset,
                expected_base,
                "at {queue_offset}"
            );
        }
        assert!(index.lookup(400).is_none());
        let from: Vec<u64> = index
            .entries_from(155)
            .map(|e| e.base_queue_offset)
            .take(3)
            .collect();
        assert_eq!(from, vec![150, 160, 170]);
        assert_eq!(index.entries_from(395).count(), 1);
        assert_eq!(index.entries_from(400).count(), 0);
    }

    #[test]
    fn reopened_index_continues_where_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), 33, 16));
        let mut index = QueueIndex::open(dir.path(), 16).unwrap();
        assert_eq!(index.mapped_files(), 0, "opened unmapped");
        index.map_files().unwrap();
        assert_eq!(index.next_queue_offset(), 330);
        assert_eq!(index.lookup(325).unwrap().base_queue_offset, 320);
    }

    #[test]
    fn truncation_by_position_rewinds_the_next_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = filled(dir.path(), 40, 16);
        index.truncate_from_position(170 * 1000).unwrap();
        assert_eq!(index.next_queue_offset(), 170);
        assert!(index.lookup(170).is_none());
        assert_eq!(index.lookup(169).unwrap().base_queue_offset, 160);
        drop(index);
        let mut index = QueueIndex::open(dir.path(), 16).unwrap();
        assert_eq!(index.mapped_files(), 0, "opened unmapped");
        index.map_files().unwrap();
        assert_eq!(index.next_queue_offset(), 170);
    }

    #[test]
    fn retention_drops_whole_files_and_moves_the_earliest_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = filled(dir.path(), 40, 16);
        index.delete_before_position(200 * 1000);
        assert_eq!(index.earliest_offset(200 * 1000), 200);
        assert!(
            index.lookup(150).is_none(),
            "file of offsets 0..160 is deleted"
        );
        assert_eq!(index.lookup(165).unwrap().base_queue_offset, 160);
    }

    /// An index with nothing written since its last sync has nothing to sync (10,000 idle
    /// queues cost no `msync` a round); an append or a truncation has it synced again.
    #[test]
    fn only_an_index_written_since_its_last_sync_has_files_to_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = filled(dir.path(), 20, 16);
        let synced = |index: &mut QueueIndex| {
            let (files, mark) = index.unsynced_files();
            let count = files.len();
            index.mark_synced(mark);
            count
        };
        assert_eq!(
            synced(&mut index),
            2,
            "both files of a reopened or new index"
        );
        assert_eq!(synced(&mut index), 0, "nothing written since");
        index.prepare_append().unwrap();
        index.append(entry(200, 10));
        let (files, mark) = index.unsynced_files();
        assert_eq!(files.len(), 1, "the newest file only");
        assert_eq!(files[0].1, 5 * ENTRY_BYTES, "its five entries");
        index.prepare_append().unwrap();
        index.append(entry(210, 10));
        index.mark_synced(mark);
        assert_eq!(
            synced(&mut index),
            1,
            "an entry appended while the sync ran is synced in the next round"
        );
        assert_eq!(synced(&mut index), 0);
        index.truncate_from_position(210 * 1000).unwrap();
        index.prepare_append().unwrap();
        index.append(entry(210, 10));
        assert_eq!(
            synced(&mut index),
            1,
            "the same next offset as synced, but after a truncation"
        );
    }
}
