//! The memory disk's directory tree: inodes, the names that reach them, and which of those names
//! a crash would keep.
//!
//! Invariants kept by [`Tree`]: inode [`ROOT`] is a directory and is never removed; every name in
//! a directory's `entries` (what processes see) reaches an existing inode; `durable_entries`
//! (what the disk holds) turn into `entries` by applying the operations in `pending`, which are
//! kept in the order they were made. Syncing a directory applies, in order, the pending
//! operations that touch it, so a name created, removed or renamed is durable exactly when its
//! directory has been synced since.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};

use super::file_data::FileData;
use crate::file_system::{DirectoryEntry, EntryKind};

/// Names an inode (a file or a directory) independently of the names that reach it.
pub(super) type InodeId = u64;

/// The root directory's inode.
const ROOT: InodeId = 0;

/// A directory's names, as processes see them and as the disk holds them.
#[derive(Debug, Default)]
pub(super) struct Directory {
    entries: BTreeMap<String, InodeId>,
    durable_entries: BTreeMap<String, InodeId>,
}

/// A file or a directory.
#[derive(Debug)]
enum Inode {
    File(FileData),
    Directory(Directory),
}

/// A change of names, kept until a sync of a directory it touches makes it durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DirectoryOperation {
    /// `name` in `directory` now reaches `inode`.
    Link {
        directory: InodeId,
        name: String,
        inode: InodeId,
    },
    /// `name` in `directory` (which reached `inode`) is gone.
    Unlink {
        directory: InodeId,
        name: String,
        inode: InodeId,
    },
    /// `inode` moved from one name to another.
    Rename {
        from_directory: InodeId,
        from_name: String,
        to_directory: InodeId,
        to_name: String,
        inode: InodeId,
    },
}

impl DirectoryOperation {
    fn touches(&self, directory: InodeId) -> bool {
        match self {
            DirectoryOperation::Link {
                directory: in_directory,
                ..
            }
            | DirectoryOperation::Unlink {
                directory: in_directory,
                ..
            } => *in_directory == directory,
            DirectoryOperation::Rename {
                from_directory,
                to_directory,
                ..
            } => *from_directory == directory || *to_directory == directory,
        }
    }
}

/// Every inode of the disk and the directory operations not yet durable.
#[derive(Debug)]
pub(super) struct Tree {
    inodes: BTreeMap<InodeId, Inode>,
    next_inode: InodeId,
    pending: Vec<DirectoryOperation>,
}

impl Tree {
    /// A disk holding only an empty root directory.
    pub(super) fn new() -> Tree {
        let root = Inode::Directory(Directory::default());
        Tree {
            inodes: BTreeMap::from([(ROOT, root)]),
            next_inode: ROOT + 1,
            pending: Vec::new(),
        }
    }

    /// The inode `path` reaches, walking the names processes see.
    pub(super) fn lookup(&self, path: &Path) -> io::Result<InodeId> {
        let mut inode = ROOT;
        for name in names(path)? {
            inode = self.lookup_in(inode, name)?;
        }
        Ok(inode)
    }

    /// Whether `inode` is a directory.
    pub(super) fn is_directory(&self, inode: InodeId) -> bool {
        matches!(self.inodes.get(&inode), Some(Inode::Directory(_)))
    }

    /// The contents of the file `inode`.
    pub(super) fn file(&self, inode: InodeId) -> io::Result<&FileData> {
        match self.inodes.get(&inode).expect("a known inode") {
            Inode::File(file) => Ok(file),
            Inode::Directory(_) => Err(io::ErrorKind::IsADirectory.into()),
        }
    }

    /// The contents of the file `inode`, to change.
    pub(super) fn file_mut(&mut self, inode: InodeId) -> io::Result<&mut FileData> {
        match self.inodes.get_mut(&inode).expect("a known inode") {
            Inode::File(file) => Ok(file),
            Inode::Directory(_) => Err(io::ErrorKind::IsADirectory.into()),
        }
    }

    /// Creates an empty file at `path`.
    pub(super) fn create_file(&mut self, path: &Path) -> io::Result<InodeId> {
        self.create(path, Inode::File(FileData::default()))
    }

    /// Creates an empty directory at `path`.
    pub(super) fn create_directory(&mut self, path: &Path) -> io::Result<InodeId> {
        self.create(path, Inode::Directory(Directory::default()))
    }

    /// Creates the directory `path` and any missing parents.
    pub(super) fn create_directory_all(&mut self, path: &Path) -> io::Result<()> {
        let mut walked = PathBuf::from("/");
        for name in names(path)? {
            walked.push(name);
            match self.lookup(&walked) {
                Ok(inode) if self.is_directory(inode) => {}
                Ok(_) => return Err(io::ErrorKind::AlreadyExists.into()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    self.create_directory(&walked)?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The entries of the directory at `path`, sorted by name.
    pub(super) fn list(&self, path: &Path) -> io::Result<Vec<DirectoryEntry>> {
        let directory = self.directory(self.lookup(path)?)?;
        let entries = directory
            .entries
            .iter()
            .map(|(name, inode)| DirectoryEntry {
                path: path.join(name),
                kind: if self.is_directory(*inode) {
                    EntryKind::Directory
                } else {
                    EntryKind::File
                },
            });
        Ok(entries.collect())
    }

    /// Removes the name of the file at `path`.
    pub(super) fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        let (parent, name) = self.lookup_parent(path)?;
        let inode = self.lookup_in(parent, &name)?;
        if self.is_directory(inode) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        self.unlink(parent, name);
        Ok(())
    }

    /// Removes the directory at `path` and, deepest first, every name inside it.
    pub(super) fn remove_directory_all(&mut self, path: &Path) -> io::Result<()> {
        let (parent, name) = self.lookup_parent(path)?;
        let inode = self.lookup_in(parent, &name)?;
        if !self.is_directory(inode) {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        self.unlink_everything_in(inode);
        self.unlink(parent, name);
        Ok(())
    }

    /// Moves the name `from` to `to`, replacing a file or an empty directory there.
    pub(super) fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_directory, from_name) = self.lookup_parent(from)?;
        let inode = self.lookup_in(from_directory, &from_name)?;
        let (to_directory, to_name) = self.lookup_parent(to)?;
        if let Some(&replaced) = self.directory(to_directory)?.entries.get(&to_name) {
            if replaced == inode {
                return Ok(());
            }
            self.check_replaceable(inode, replaced)?;
        }
        self.directory_mut(from_directory)
            .entries
            .remove(&from_name);
        let to_entries = &mut self.directory_mut(to_directory).entries;
        to_entries.insert(to_name.clone(), inode);
        self.pending.push(DirectoryOperation::Rename {
            from_directory,
            from_name,
            to_directory,
            to_name,
            inode,
        });
        Ok(())
    }

    /// Makes every pending operation touching the directory `inode` durable, in order.
    pub(super) fn sync_directory(&mut self, inode: InodeId) {
        let (touching, others) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition::<Vec<_>, _>(|operation| operation.touches(inode));
        self.pending = others;
        for operation in &touching {
            self.apply_durably(operation);
        }
    }

    /// Hands over the operations no sync has made durable, oldest first.
    pub(super) fn take_pending(&mut self) -> Vec<DirectoryOperation> {
        std::mem::take(&mut self.pending)
    }

    /// Applies `operation` to the names the disk holds. An operation whose starting point is not
    /// on the disk (a crash kept it but not an earlier one it depends on) changes nothing.
    pub(super) fn apply_durably(&mut self, operation: &DirectoryOperation) {
        match operation {
            DirectoryOperation::Link {
                directory,
                name,
                inode,
            } => {
                let durable = &mut self.directory_mut(*directory).durable_entries;
                durable.insert(name.clone(), *inode);
            }
            DirectoryOperation::Unlink {
                directory,
                name,
                inode,
            } => {
                let durable = &mut self.directory_mut(*directory).durable_entries;
                if durable.get(name) == Some(inode) {
                    durable.remove(name);
                }
            }
            DirectoryOperation::Rename {
                from_directory,
                from_name,
                to_directory,
                to_name,
                inode,
            } => {
                let from = &mut self.directory_mut(*from_directory).durable_entries;
                if from.get(from_name) == Some(inode) {
                    from.remove(from_name);
                    let to = &mut self.directory_mut(*to_directory).durable_entries;
                    to.insert(to_name.clone(), *inode);
                }
            }
        }
    }

    /// After a crash: every directory holds what the disk holds, the other inodes are freed, and
    /// returns the files that remain, to settle their contents.
    pub(super) fn keep_only_durable_names(&mut self) -> Vec<&mut FileData> {
        assert!(self.pending.is_empty(), "the crash decided every operation");
        for inode in self.inodes.values_mut() {
            if let Inode::Directory(directory) = inode {
                directory.entries.clone_from(&directory.durable_entries);
            }
        }
        let reachable = self.reachable();
        self.inodes.retain(|inode, _| reachable.contains(inode));
        let files = self.inodes.values_mut().filter_map(|inode| match inode {
            Inode::File(file) => Some(file),
            Inode::Directory(_) => None,
        });
        files.collect()
    }

    /// The bytes taken by every file that processes or the disk can still reach.
    pub(super) fn used_bytes(&self) -> u64 {
        let reachable = self.reachable();
        let footprints = reachable.iter().map(|inode| match &self.inodes[inode] {
            Inode::File(file) => file.footprint_bytes(),
            Inode::Directory(_) => 0,
        });
        footprints.sum()
    }

    /// Every file processes can reach, with a path to it, in path order.
    pub(super) fn files(&self) -> Vec<(PathBuf, InodeId)> {
        let mut files = Vec::new();
        let mut to_visit = vec![(PathBuf::from("/"), ROOT)];
        while let Some((path, inode)) = to_visit.pop() {
            match &self.inodes[&inode] {
                Inode::File(_) => files.push((path, inode)),
                Inode::Directory(directory) => {
                    let children = directory.entries.iter();
                    to_visit.extend(children.map(|(name, child)| (path.join(name), *child)));
                }
            }
        }
        files.sort();
        files
    }

    fn create(&mut self, path: &Path, created: Inode) -> io::Result<InodeId> {
        let (parent, name) = self.lookup_parent(path)?;
        if self.directory(parent)?.entries.contains_key(&name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(inode, created);
        self.link(parent, name, inode);
        Ok(inode)
    }

    fn lookup_in(&self, directory: InodeId, name: &str) -> io::Result<InodeId> {
        let entries = &self.directory(directory)?.entries;
        entries
            .get(name)
            .copied()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    /// The directory holding the last name of `path`, and that name.
    fn lookup_parent(&self, path: &Path) -> io::Result<(InodeId, String)> {
        let mut names = names(path)?;
        let Some(name) = names.pop() else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let mut parent = ROOT;
        for walked in names {
            parent = self.lookup_in(parent, walked)?;
        }
        self.directory(parent)?;
        Ok((parent, name.to_string()))
    }

    fn directory(&self, inode: InodeId) -> io::Result<&Directory> {
        match self.inodes.get(&inode).expect("a known inode") {
            Inode::Directory(directory) => Ok(directory),
            Inode::File(_) => Err(io::ErrorKind::NotADirectory.into()),
        }
    }

    fn directory_mut(&mut self, inode: InodeId) -> &mut Directory {
        match self.inodes.get_mut(&inode).expect("a known inode") {
            Inode::Directory(directory) => directory,
            Inode::File(_) => panic!("inode {inode} is not a directory"),
        }
    }

    /// Whether `inode` may take the place of `replaced` in a rename, as POSIX says.
    fn check_replaceable(&self, inode: InodeId, replaced: InodeId) -> io::Result<()> {
        match (self.is_directory(inode), self.is_directory(replaced)) {
            (false, false) => Ok(()),
            (true, true) if self.directory(replaced)?.entries.is_empty() => Ok(()),
            (true, true) => Err(io::ErrorKind::DirectoryNotEmpty.into()),
            (false, true) => Err(io::ErrorKind::IsADirectory.into()),
            (true, false) => Err(io::ErrorKind::NotADirectory.into()),
        }
    }

    fn link(&mut self, directory: InodeId, name: String, inode: InodeId) {
        let entries = &mut self.directory_mut(directory).entries;
        entries.insert(name.clone(), inode);
        self.pending.push(DirectoryOperation::Link {
            directory,
            name,
            inode,
        });
    }

    fn unlink(&mut self, directory: InodeId, name: String) {
        let entries = &mut self.directory_mut(directory).entries;
        let inode = entries.remove(&name).expect("an existing name");
        self.pending.push(DirectoryOperation::Unlink {
            directory,
            name,
            inode,
        });
    }

    fn unlink_everything_in(&mut self, directory: InodeId) {
        let children: Vec<(String, InodeId)> = self
            .directory_mut(directory)
            .entries
            .iter()
            .map(|(name, inode)| (name.clone(), *inode))
            .collect();
        for (name, child) in children {
            if self.is_directory(child) {
                self.unlink_everything_in(child);
            }
            self.unlink(directory, name);
        }
    }

    /// The inodes reachable from the root through the names processes see or the disk holds.
    fn reachable(&self) -> BTreeSet<InodeId> {
        let mut reachable = BTreeSet::from([ROOT]);
        let mut to_visit = vec![ROOT];
        while let Some(inode) = to_visit.pop() {
            let Inode::Directory(directory) = &self.inodes[&inode] else {
                continue;
            };
            for child in directory
                .entries
                .values()
                .chain(directory.durable_entries.values())
            {
                if reachable.insert(*child) {
                    to_visit.push(*child);
                }
            }
        }
        reachable
    }
}

/// The names along `path`; `/` and `.` are the root. `..` is refused: the logs never use it.
fn names(path: &Path) -> io::Result<Vec<&str>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                let name = name.to_str().ok_or(io::ErrorKind::InvalidFilename)?;
                names.push(name);
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::ErrorKind::InvalidInput.into());
            }
        }
    }
    Ok(names)
}
