//! What a restart needs back: records of sessions, parties and server-run matches, and
//! the matches' handler snapshots, in the `restart` table. The server decides what the
//! records say (`crate::persist`); this module only stores and loads them, in the same
//! group commits as objects.

use redb::{ReadableTable, Table, TableDefinition};

use super::{writer::Op, Storage, StorageError};

/// `(kind, id) -> bytes`: kinds are [`RestartKind`]'s names; the id is the session's,
/// party's or match's UUID as a `u128`.
pub(crate) const RESTART: TableDefinition<'static, (&str, u128), &[u8]> =
    TableDefinition::new("restart");

/// The kinds of restart records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RestartKind {
    /// A session: who it is.
    Session,
    /// A party: its settings and members.
    Party,
    /// A server-run match: its handler, label, members and counters.
    Match,
    /// A server-run match's handler snapshot (opaque bytes).
    State,
}

impl RestartKind {
    pub(crate) const ALL: [Self; 4] = [Self::Session, Self::Party, Self::Match, Self::State];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Party => "party",
            Self::Match => "match",
            Self::State => "state",
        }
    }

    fn of(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Records to put (replacing) and to delete, committed together.
#[derive(Debug, Default)]
pub(crate) struct RestartChanges {
    pub(crate) puts: Vec<(RestartKind, u128, Vec<u8>)>,
    pub(crate) deletes: Vec<(RestartKind, u128)>,
}

impl RestartChanges {
    pub(crate) fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// Applies changes inside the writer's transaction.
pub(crate) fn apply(
    table: &mut Table<'_, (&'static str, u128), &'static [u8]>,
    changes: &RestartChanges,
) -> Result<(), StorageError> {
    for (kind, id) in &changes.deletes {
        table
            .remove((kind.name(), *id))
            .map_err(StorageError::internal)?;
    }
    for (kind, id, bytes) in &changes.puts {
        table
            .insert((kind.name(), *id), bytes.as_slice())
            .map_err(StorageError::internal)?;
    }
    Ok(())
}

impl Storage {
    /// Commits restart records (waits for the commit). Creates the store if needed.
    pub(crate) fn write_restart(&self, changes: RestartChanges) -> Result<(), StorageError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.wait(|reply| Op::Restart { changes, reply })
    }

    /// Every restart record, by kind; nothing when there is no store yet.
    pub(crate) fn load_restart(&self) -> Result<Vec<(RestartKind, u128, Vec<u8>)>, StorageError> {
        let Some(db) = self.handle.inner.database(false)? else {
            return Ok(Vec::new());
        };
        let txn = db.begin_read().map_err(StorageError::internal)?;
        let table = match txn.open_table(RESTART) {
            Ok(t) => t,
            // A store from before restart records, or one never written: nothing kept.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::internal(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(StorageError::internal)? {
            let (key, value) = row.map_err(StorageError::internal)?;
            let (kind, id) = key.value();
            if let Some(kind) = RestartKind::of(kind) {
                out.push((kind, id, value.value().to_vec()));
            }
        }
        Ok(out)
    }
}
