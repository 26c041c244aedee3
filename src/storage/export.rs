//! Backups and migrations as JSON lines: `quicmatch storage export FILE` writes a header
//! line and then one object per line; `import` reads such a file back.
//!
//! ```text
//! {"quicmatch_storage_export":1,"schema_version":1}
//! {"collection":"saves","key":"slot1","user_id":"8f1c...","value":{"hp":10},"version":"0000000000000001","permission_read":1,"permission_write":1,"create_time":1767225600000,"update_time":1767225600000}
//! ```
//!
//! `value` is the stored JSON object, byte for byte; permissions are Nakama's numbers.
//! An import line may leave out `version` (a new one is given), the permissions (owner
//! read, owner write) and the times (now). The header is optional on import; a newer
//! export format is refused.

use std::{
    io::{BufRead, Write},
    sync::Arc,
};

use quicmatch_protocol::{
    ReadPermission, StorageObject, UserId, WritePermission, MAX_STORAGE_VALUE_LEN,
};
use redb::{Database, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    model::{self, now_ms},
    tables::{Record, OBJECTS, SCHEMA_VERSION},
    StorageError,
};

/// The export format this server writes and reads.
const EXPORT_FORMAT: u64 = 1;

/// Objects imported per commit.
const IMPORT_BATCH: usize = 256;

/// Longest line an import reads: the largest value with its JSON escaping and the
/// other fields.
const MAX_LINE: usize = 6 * MAX_STORAGE_VALUE_LEN + 4096;

#[derive(Serialize, Deserialize)]
struct Header {
    quicmatch_storage_export: u64,
    schema_version: u64,
}

#[derive(Serialize)]
struct LineOut<'a> {
    collection: &'a str,
    key: &'a str,
    user_id: Option<UserId>,
    value: &'a RawValue,
    version: &'a str,
    permission_read: u8,
    permission_write: u8,
    create_time: u64,
    update_time: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    collection: String,
    key: String,
    user_id: Option<UserId>,
    value: Box<RawValue>,
    version: Option<String>,
    permission_read: Option<u8>,
    permission_write: Option<u8>,
    create_time: Option<u64>,
    update_time: Option<u64>,
}

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(e.to_string())
}

/// Writes every object of `db` (none when there is no store yet) to `out`.
pub(super) fn export(db: Option<Arc<Database>>, out: &mut dyn Write) -> Result<u64, StorageError> {
    let header = Header {
        quicmatch_storage_export: EXPORT_FORMAT,
        schema_version: SCHEMA_VERSION,
    };
    serde_json::to_writer(&mut *out, &header).map_err(io)?;
    out.write_all(b"\n").map_err(io)?;
    let mut count = 0;
    if let Some(db) = db {
        let txn = db.begin_read().map_err(StorageError::internal)?;
        let table = txn.open_table(OBJECTS).map_err(StorageError::internal)?;
        for entry in table.iter().map_err(StorageError::internal)? {
            let (name, record) = entry.map_err(StorageError::internal)?;
            let (collection, owner, key) = name.value();
            let record = Record::decode(record.value())
                .ok_or_else(|| StorageError::Internal(format!("{collection}/{key} is damaged")))?;
            let object = record.into_object(collection, owner, key);
            let value = RawValue::from_string(object.value).map_err(StorageError::internal)?;
            let line = LineOut {
                collection,
                key,
                user_id: object.user_id,
                value: &value,
                version: &object.version,
                permission_read: object.permission_read.number(),
                permission_write: object.permission_write.number(),
                create_time: object.create_time,
                update_time: object.update_time,
            };
            serde_json::to_writer(&mut *out, &line).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
            count += 1;
        }
    }
    out.flush().map_err(io)?;
    Ok(count)
}

/// Reads an export from `input`, handing `commit` batches of objects; returns how many.
pub(super) fn import(
    input: &mut dyn BufRead,
    mut commit: impl FnMut(Vec<StorageObject>) -> Result<(), StorageError>,
) -> Result<u64, StorageError> {
    let (mut batch, mut count, mut number) = (Vec::new(), 0, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded, so a file without newlines cannot take all memory.
        let read = std::io::Read::take(&mut *input, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if read == 0 {
            break;
        }
        number += 1;
        let at = |reason: String| StorageError::BadInput(format!("line {number}: {reason}"));
        if line.len() > MAX_LINE {
            return Err(at(format!("longer than {MAX_LINE} bytes")));
        }
        let text = std::str::from_utf8(&line).map_err(|_| at("not UTF-8".into()))?;
        if text.trim().is_empty() {
            continue;
        }
        if number == 1 {
            if let Ok(header) = serde_json::from_str::<Header>(text) {
                if header.quicmatch_storage_export > EXPORT_FORMAT {
                    return Err(at(format!(
                        "export format {} is newer than this server's {EXPORT_FORMAT}",
                        header.quicmatch_storage_export
                    )));
                }
                continue;
            }
        }
        let object = parse(text).map_err(|e| at(e.to_string()))?;
        batch.push(object);
        count += 1;
        if batch.len() == IMPORT_BATCH {
            commit(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        commit(batch)?;
    }
    Ok(count)
}

/// One object line, checked as a write would be.
fn parse(text: &str) -> Result<StorageObject, StorageError> {
    let line: LineIn =
        serde_json::from_str(text).map_err(|e| StorageError::BadInput(e.to_string()))?;
    model::check_name(&line.collection, &line.key)?;
    let value = line.value.get().to_owned();
    model::check_value(&value)?;
    let read = line.permission_read.unwrap_or(1);
    let write = line.permission_write.unwrap_or(1);
    let bad = |what: &str, n: u8| StorageError::BadInput(format!("{what} {n} is not a permission"));
    let now = now_ms();
    let created = line.create_time.unwrap_or(now);
    Ok(StorageObject {
        collection: line.collection,
        key: line.key,
        user_id: line.user_id,
        value,
        version: line.version.unwrap_or_default(),
        permission_read: ReadPermission::from_number(read)
            .ok_or_else(|| bad("permission_read", read))?,
        permission_write: WritePermission::from_number(write)
            .ok_or_else(|| bad("permission_write", write))?,
        create_time: created,
        update_time: line.update_time.unwrap_or(created),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_defaults_and_bad_ones_name_their_line() {
        let object = parse(r#"{"collection":"c","key":"k","user_id":null,"value":{"a": 1}}"#)
            .expect("parse");
        assert_eq!(object.value, r#"{"a": 1}"#, "kept byte for byte");
        assert_eq!(object.permission_read, ReadPermission::OwnerRead);
        assert_eq!(object.version, "");
        let input = "{\"quicmatch_storage_export\":1,\"schema_version\":1}\n\n\
                     {\"collection\":\"c\",\"key\":\"k\",\"user_id\":null,\"value\":[1]}\n";
        let e = import(&mut input.as_bytes(), |_| Ok(())).expect_err("an array");
        assert!(e.to_string().starts_with("line 3: "), "{e}");
        let newer = "{\"quicmatch_storage_export\":2,\"schema_version\":9}\n";
        let e = import(&mut newer.as_bytes(), |_| Ok(())).expect_err("newer");
        assert!(e.to_string().contains("newer"), "{e}");
        let unknown = r#"{"collection":"c","key":"k","user_id":null,"value":{},"x":1}"#;
        assert!(parse(unknown).is_err());
        let perm = r#"{"collection":"c","key":"k","user_id":null,"value":{},"permission_read":3}"#;
        assert!(parse(perm).is_err());
        let long = vec![b'x'; MAX_LINE + 10];
        let e = import(&mut long.as_slice(), |_| Ok(())).expect_err("long");
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}
