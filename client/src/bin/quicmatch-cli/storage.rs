//! The storage commands: `store-write`, `store-read`, `store-list`, `store-delete`, and
//! how their replies look (`storage_object`, `storage_objects`, `ack`).

use quicmatch_client::{
    ErrorCode, ReadPermission, RequestError, Socket, StorageObject, StorageObjectAck,
    StorageObjectId, UserId, WritePermission,
};
use serde_json::{json, Value};

use crate::render::Out;

fn bad_input(message: impl Into<String>) -> RequestError {
    RequestError::Server {
        code: ErrorCode::BAD_INPUT,
        message: message.into(),
    }
}

/// Whether `cmd` is one of these commands.
pub(crate) fn handles(cmd: &str) -> bool {
    matches!(
        cmd,
        "store-write" | "store-read" | "store-list" | "store-delete"
    )
}

/// The words after a command: its positional arguments, and its flags with their values.
struct Words<'a> {
    positional: Vec<&'a str>,
    flags: Vec<(&'a str, &'a str)>,
}

fn words<'a>(cmd: &str, args: &'a [String], allowed: &[&str]) -> Result<Words<'a>, RequestError> {
    let (mut positional, mut flags) = (Vec::new(), Vec::new());
    let mut rest = args.iter();
    while let Some(word) = rest.next() {
        if word.starts_with("--") {
            if !allowed.contains(&word.as_str()) {
                return Err(bad_input(format!("{cmd}: unknown flag {word}")));
            }
            let value = rest
                .next()
                .ok_or_else(|| bad_input(format!("{cmd}: {word} needs a value")))?;
            flags.push((word.as_str(), value.as_str()));
        } else {
            positional.push(word.as_str());
        }
    }
    Ok(Words { positional, flags })
}

fn read_permission(s: &str) -> Result<ReadPermission, RequestError> {
    match s {
        "public" => Ok(ReadPermission::PublicRead),
        "owner" => Ok(ReadPermission::OwnerRead),
        "none" => Ok(ReadPermission::NoRead),
        _ => Err(bad_input(format!(
            "--read wants public, owner or none, got {s:?}"
        ))),
    }
}

fn write_permission(s: &str) -> Result<WritePermission, RequestError> {
    match s {
        "owner" => Ok(WritePermission::OwnerWrite),
        "none" => Ok(WritePermission::NoWrite),
        _ => Err(bad_input(format!("--write wants owner or none, got {s:?}"))),
    }
}

fn read_name(p: ReadPermission) -> &'static str {
    match p {
        ReadPermission::PublicRead => "public",
        ReadPermission::OwnerRead => "owner",
        ReadPermission::NoRead => "none",
    }
}

fn write_name(p: WritePermission) -> &'static str {
    match p {
        WritePermission::OwnerWrite => "owner",
        WritePermission::NoWrite => "none",
    }
}

/// `--user ID`: a user id, or `system` (no owner).
fn owner(s: &str) -> Result<Option<UserId>, RequestError> {
    if s == "system" {
        return Ok(None);
    }
    let user: UserId = s
        .parse()
        .map_err(|e| bad_input(format!("--user: {e} (a user id, or system)")))?;
    Ok((!user.0.is_nil()).then_some(user))
}

fn exactly<'a>(cmd: &str, w: &Words<'a>, names: &[&str]) -> Result<Vec<&'a str>, RequestError> {
    if w.positional.len() != names.len() {
        return Err(bad_input(format!(
            "{cmd}: expected {} (quote JSON that has spaces)",
            names.join(" ")
        )));
    }
    Ok(w.positional.clone())
}

fn object_json(o: &StorageObject) -> Value {
    // The value as JSON when it parses (it always should), else as the text it is.
    let value = serde_json::from_str::<Value>(&o.value).unwrap_or_else(|_| json!(o.value));
    json!({
        "collection": o.collection,
        "key": o.key,
        "user_id": o.user_id.map(|u| u.to_string()),
        "value": value,
        "version": o.version,
        "read": read_name(o.permission_read),
        "write": write_name(o.permission_write),
        "create_time": o.create_time,
        "update_time": o.update_time,
    })
}

fn object_text(o: &StorageObject) -> String {
    let owner = o.user_id.map_or("system".to_owned(), |u| u.to_string());
    format!(
        "{}/{} of {owner} version {} (read {}, write {}): {}",
        o.collection,
        o.key,
        o.version,
        read_name(o.permission_read),
        write_name(o.permission_write),
        o.value
    )
}

fn ack_json(command: &str, ack: &StorageObjectAck) -> Value {
    json!({
        "type": "ack",
        "command": command,
        "collection": ack.collection,
        "key": ack.key,
        "user_id": ack.user_id.map(|u| u.to_string()),
        "version": ack.version,
    })
}

/// Runs one storage command.
pub(crate) async fn run(
    socket: &Socket,
    out: &mut Out,
    cmd: &str,
    args: &[String],
) -> Result<(), RequestError> {
    match cmd {
        "store-write" => {
            let w = words(cmd, args, &["--version", "--read", "--write"])?;
            let [collection, key, value] = exactly(cmd, &w, &["COLLECTION", "KEY", "JSON"])?[..]
            else {
                return Err(bad_input("store-write: expected COLLECTION KEY JSON"));
            };
            let mut write = socket.write_storage_object(collection, key, value);
            let (mut read_p, mut write_p) =
                (ReadPermission::OwnerRead, WritePermission::OwnerWrite);
            for (flag, v) in &w.flags {
                match *flag {
                    "--version" => write = write.version(*v),
                    "--read" => read_p = read_permission(v)?,
                    _ => write_p = write_permission(v)?,
                }
            }
            let ack = write.permissions(read_p, write_p).await?;
            let text = format!(
                "stored {}/{} version {}",
                ack.collection, ack.key, ack.version
            );
            out.emit(ack_json(cmd, &ack), text);
        }
        "store-read" => {
            let w = words(cmd, args, &["--user"])?;
            let [collection, key] = exactly(cmd, &w, &["COLLECTION", "KEY"])?[..] else {
                return Err(bad_input("store-read: expected COLLECTION KEY"));
            };
            let user = match w.flags.last() {
                Some((_, v)) => owner(v)?,
                None => Some(socket.session().user_id),
            };
            let id = StorageObjectId::new(collection, key, user);
            match socket.read_storage_objects(vec![id]).await?.pop() {
                Some(o) => {
                    let mut value = object_json(&o);
                    value["type"] = json!("storage_object");
                    value["found"] = json!(true);
                    out.emit(value, object_text(&o));
                }
                None => out.emit(
                    json!({
                        "type": "storage_object",
                        "found": false,
                        "collection": collection,
                        "key": key,
                        "user_id": user.map(|u| u.to_string()),
                    }),
                    format!("no object {collection}/{key} you may read"),
                ),
            }
        }
        "store-list" => {
            let w = words(cmd, args, &["--user", "--limit", "--cursor"])?;
            let [collection] = exactly(cmd, &w, &["COLLECTION"])?[..] else {
                return Err(bad_input("store-list: expected COLLECTION"));
            };
            let mut list = socket.list_storage_objects(collection);
            for (flag, v) in &w.flags {
                list = match *flag {
                    "--user" => match owner(v)? {
                        Some(user) => list.user(user),
                        None => list.system(),
                    },
                    "--limit" => list.limit(v.parse().map_err(|_| {
                        bad_input(format!("--limit must be a non-negative integer, got {v:?}"))
                    })?),
                    _ => list.cursor(*v),
                };
            }
            let page = list.await?;
            let mut text: Vec<String> = page.objects.iter().map(object_text).collect();
            text.push(match &page.cursor {
                Some(c) => format!("{} objects; more with --cursor {c}", page.objects.len()),
                None => format!("{} objects; no more", page.objects.len()),
            });
            out.emit(
                json!({
                    "type": "storage_objects",
                    "collection": collection,
                    "objects": page.objects.iter().map(object_json).collect::<Vec<_>>(),
                    "cursor": page.cursor,
                }),
                text.join("\n"),
            );
        }
        _ => {
            let w = words(cmd, args, &["--version"])?;
            let [collection, key] = exactly(cmd, &w, &["COLLECTION", "KEY"])?[..] else {
                return Err(bad_input("store-delete: expected COLLECTION KEY"));
            };
            let version = w.flags.last().map(|(_, v)| *v);
            socket
                .delete_storage_object(collection, key, version)
                .await?;
            out.emit(
                json!({"type": "ack", "command": cmd, "collection": collection, "key": key}),
                format!("deleted {collection}/{key}"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn flags_and_positionals_are_split_and_checked() {
        let a = args("saves slot1 {} --version * --read public");
        let w = words("store-write", &a, &["--version", "--read", "--write"]).expect("words");
        assert_eq!(w.positional, ["saves", "slot1", "{}"]);
        assert_eq!(w.flags, [("--version", "*"), ("--read", "public")]);
        let e = words("store-write", &args("a b --nope 1"), &["--version"])
            .err()
            .expect("unknown flag");
        assert!(e.to_string().contains("unknown flag --nope"), "{e}");
        let e = words("store-read", &args("a b --user"), &["--user"])
            .err()
            .expect("no value");
        assert!(e.to_string().contains("--user needs a value"), "{e}");
        let one = args("a");
        let w = words("store-read", &one, &["--user"]).expect("words");
        assert!(exactly("store-read", &w, &["COLLECTION", "KEY"]).is_err());
    }

    #[test]
    fn permissions_and_owners_parse() {
        assert_eq!(
            read_permission("public").ok(),
            Some(ReadPermission::PublicRead)
        );
        assert_eq!(read_permission("none").ok(), Some(ReadPermission::NoRead));
        assert!(read_permission("everyone").is_err());
        assert_eq!(
            write_permission("none").ok(),
            Some(WritePermission::NoWrite)
        );
        assert!(write_permission("public").is_err());
        assert_eq!(owner("system").ok(), Some(None));
        assert_eq!(
            owner("00000000-0000-0000-0000-000000000000").ok(),
            Some(None)
        );
        let id = "8f1c2e4a-0000-4000-8000-000000000001";
        assert_eq!(
            owner(id).ok().flatten().map(|u| u.to_string()),
            Some(id.to_owned())
        );
        assert!(owner("bob").is_err());
        for p in [
            ReadPermission::NoRead,
            ReadPermission::OwnerRead,
            ReadPermission::PublicRead,
        ] {
            assert_eq!(read_permission(read_name(p)).ok(), Some(p));
        }
    }

    #[test]
    fn objects_render_with_their_value_as_json() {
        let o = StorageObject {
            collection: "saves".into(),
            key: "slot1".into(),
            user_id: None,
            value: r#"{"level":3}"#.into(),
            version: "0000000000000001".into(),
            permission_read: ReadPermission::PublicRead,
            permission_write: WritePermission::NoWrite,
            create_time: 1,
            update_time: 2,
        };
        let v = object_json(&o);
        assert_eq!(v["value"]["level"], 3);
        assert_eq!(v["read"], "public");
        assert_eq!(v["user_id"], Value::Null);
        assert!(object_text(&o).contains("saves/slot1 of system"));
    }
}
