//! Operations: what an event's body means (create case, set fields, status changes, entries),
//! as plain domain data. `wire` converts them to and from the `Body` message.

use serde::Serialize;
/// Builds [`FieldWrites`] and [`Dots`] (`smallvec![a, b]`), re-exported for the engine's users.
pub use smallvec::smallvec;
use smallvec::SmallVec;

use crate::model::error::OperationError;
use crate::model::ids::{AuthorId, CaseId, EntryId};
use crate::model::limits::{DOTS_PER_WRITE_MAX, FIELDS_PER_OP_MAX, FIELD_NAME_BYTES_MAX};
use crate::model::vector_clock::VersionVector;

/// An event's identity by position: (author, seq). Writes name what they supersede by dot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The author.
    pub author: AuthorId,
    /// The author's seq.
    pub seq: u64,
}

/// A typed field value. In JSON as the proto3 JSON mapping and `docs/case-json.md` spell a
/// value: `{"text": "Anna"}`, `{"integer": 42}`, `{"decimal": "12.50"}`, `{"boolean": true}`,
/// `{"date": "1980-02-01"}`, `{"blob": "AP8="}` (base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldValue {
    /// Free text.
    Text(String),
    /// A signed 64-bit integer.
    Integer(i64),
    /// A decimal number in canonical text form (`-12.50`).
    Decimal(String),
    /// True or false.
    #[serde(rename = "boolean")]
    Bool(bool),
    /// A calendar date, `YYYY-MM-DD`.
    Date(String),
    /// Raw bytes.
    #[serde(rename = "blob")]
    Bytes(#[serde(serialize_with = "base64_bytes")] Vec<u8>),
}

fn base64_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

impl FieldValue {
    /// Checks the value fits its type.
    pub fn validate(&self) -> Result<(), OperationError> {
        match self {
            FieldValue::Decimal(text) if !is_decimal(text) => {
                Err(OperationError::Value { kind: "decimal", text: text.clone() })
            }
            FieldValue::Date(text) if !is_date(text) => Err(OperationError::Value { kind: "date", text: text.clone() }),
            _ => Ok(()),
        }
    }

    /// Parses `type:text` (`int:5`, `date:2026-01-31`, `dec:1.5`, `bool:true`, `hex:00ff`) or
    /// plain text.
    pub fn parse_typed(input: &str) -> Result<FieldValue, OperationError> {
        let value = match input.split_once(':') {
            Some(("int" | "integer", rest)) => FieldValue::Integer(
                rest.trim().parse().map_err(|_| OperationError::Value { kind: "integer", text: rest.to_string() })?,
            ),
            Some(("dec" | "decimal", rest)) => FieldValue::Decimal(rest.trim().to_string()),
            Some(("bool", rest)) => FieldValue::Bool(match rest.trim() {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => return Err(OperationError::Value { kind: "bool", text: rest.to_string() }),
            }),
            Some(("date", rest)) => FieldValue::Date(rest.trim().to_string()),
            Some(("hex" | "bytes", rest)) => FieldValue::Bytes(
                hex::decode(rest.trim())
                    .map_err(|_| OperationError::Value { kind: "bytes", text: rest.to_string() })?,
            ),
            Some(("text", rest)) => FieldValue::Text(rest.to_string()),
            _ => FieldValue::Text(input.to_string()),
        };
        value.validate()?;
        Ok(value)
    }

    /// The value as display text.
    pub fn display(&self) -> String {
        match self {
            FieldValue::Text(t) | FieldValue::Decimal(t) | FieldValue::Date(t) => t.clone(),
            FieldValue::Integer(i) => i.to_string(),
            FieldValue::Bool(b) => b.to_string(),
            FieldValue::Bytes(b) => format!("0x{}", hex::encode(b)),
        }
    }
}

fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    !whole.is_empty()
        && whole.len() <= 30
        && fraction.len() <= 30
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && (!digits.contains('.') || !fraction.is_empty())
}

fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else { return false };
    let numeric = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    if !(numeric(year, 4) && numeric(month, 2) && numeric(day, 2)) {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (year.parse::<u32>(), month.parse::<u32>(), day.parse::<u32>()) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Checks a field name: 1 to 128 bytes, no control characters.
pub fn validate_field_name(name: &str) -> Result<(), OperationError> {
    if name.is_empty() || name.len() > FIELD_NAME_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(OperationError::FieldName(name.to_string()));
    }
    Ok(())
}

/// A field's name: inline up to 24 bytes, so decoding a write allocates nothing for its name, and
/// a case state's field map is searched without a pointer chase per name.
pub type FieldName = compact_str::CompactString;

/// The versions a field write supersedes: inline when one or none (nearly always: a field has one
/// current version unless it is in conflict), so decoding a write allocates nothing for them.
pub type Dots = SmallVec<[Dot; 1]>;

/// An operation's field writes: inline when one (the common edit), so decoding an event's body
/// allocates nothing for the list. A bulk fold decodes a body per event on one thread and drops
/// its lists on another, where each allocation was a cross-thread free.
pub type FieldWrites = SmallVec<[FieldWrite; 1]>;

/// One field write: the new value and the versions it supersedes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldWrite {
    /// Field name.
    pub name: FieldName,
    /// New value.
    pub value: FieldValue,
    /// Versions of this field the writer had seen as current.
    pub supersedes: Dots,
}

/// A status: of a case (active, archived, deleted) or of an entry (present, removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A live case.
    Active,
    /// An archived case.
    Archived,
    /// A deleted case (a tombstone: restore brings it back).
    Deleted,
    /// A live entry.
    Present,
    /// A removed entry.
    Removed,
}

impl Status {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Archived => "archived",
            Status::Deleted => "deleted",
            Status::Present => "present",
            Status::Removed => "removed",
        }
    }
}

/// A status write: the status versions it supersedes and what the writer had seen of the space.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StatusWrite {
    /// Status versions the writer had seen as current.
    pub supersedes: Dots,
    /// The writer's version vector when it wrote.
    pub seen: VersionVector,
}

/// The case status changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChange {
    /// To deleted.
    Delete,
    /// To archived.
    Archive,
    /// From archived to active.
    Unarchive,
    /// From deleted to active.
    Restore,
}

impl StatusChange {
    /// The status written.
    pub fn status(self) -> Status {
        match self {
            StatusChange::Delete => Status::Deleted,
            StatusChange::Archive => Status::Archived,
            StatusChange::Unarchive | StatusChange::Restore => Status::Active,
        }
    }
}

/// What an event does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Creates a case with initial fields.
    CreateCase {
        /// The new case.
        case: CaseId,
        /// Initial fields.
        fields: FieldWrites,
    },
    /// Sets fields of a case.
    SetFields {
        /// The case.
        case: CaseId,
        /// The writes.
        fields: FieldWrites,
    },
    /// Deletes, archives, unarchives or restores a case.
    ChangeStatus {
        /// The case.
        case: CaseId,
        /// Which change.
        change: StatusChange,
        /// The status write.
        write: StatusWrite,
    },
    /// Adds an entry to a case.
    AddEntry {
        /// The case.
        case: CaseId,
        /// The new entry.
        entry: EntryId,
        /// Its fields.
        fields: FieldWrites,
    },
    /// Updates fields of an entry.
    UpdateEntry {
        /// The case.
        case: CaseId,
        /// The entry.
        entry: EntryId,
        /// The writes.
        fields: FieldWrites,
    },
    /// Removes an entry.
    RemoveEntry {
        /// The case.
        case: CaseId,
        /// The entry.
        entry: EntryId,
        /// The status write.
        write: StatusWrite,
    },
    /// Brings a removed entry back.
    RestoreEntry {
        /// The case.
        case: CaseId,
        /// The entry.
        entry: EntryId,
        /// The status write.
        write: StatusWrite,
    },
}

impl Operation {
    /// The case the operation changes.
    pub fn case(&self) -> CaseId {
        match self {
            Operation::CreateCase { case, .. }
            | Operation::SetFields { case, .. }
            | Operation::ChangeStatus { case, .. }
            | Operation::AddEntry { case, .. }
            | Operation::UpdateEntry { case, .. }
            | Operation::RemoveEntry { case, .. }
            | Operation::RestoreEntry { case, .. } => *case,
        }
    }

    /// The entry the operation changes, if any.
    pub fn entry(&self) -> Option<EntryId> {
        match self {
            Operation::AddEntry { entry, .. }
            | Operation::UpdateEntry { entry, .. }
            | Operation::RemoveEntry { entry, .. }
            | Operation::RestoreEntry { entry, .. } => Some(*entry),
            _ => None,
        }
    }

    /// A short name: `create`, `set`, `delete`, `archive`, `unarchive`, `restore`, `entry-add`,
    /// `entry-update`, `entry-remove`, `entry-restore`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::CreateCase { .. } => "create",
            Operation::SetFields { .. } => "set",
            Operation::ChangeStatus { change: StatusChange::Delete, .. } => "delete",
            Operation::ChangeStatus { change: StatusChange::Archive, .. } => "archive",
            Operation::ChangeStatus { change: StatusChange::Unarchive, .. } => "unarchive",
            Operation::ChangeStatus { change: StatusChange::Restore, .. } => "restore",
            Operation::AddEntry { .. } => "entry-add",
            Operation::UpdateEntry { .. } => "entry-update",
            Operation::RemoveEntry { .. } => "entry-remove",
            Operation::RestoreEntry { .. } => "entry-restore",
        }
    }

    /// The field writes, if any.
    pub fn fields(&self) -> &[FieldWrite] {
        match self {
            Operation::CreateCase { fields, .. }
            | Operation::SetFields { fields, .. }
            | Operation::AddEntry { fields, .. }
            | Operation::UpdateEntry { fields, .. } => fields,
            _ => &[],
        }
    }

    /// Checks limits, names and values. A `SetFields` or `UpdateEntry` must write a field: an
    /// empty one would change nothing stored, so every fold treats its event as one whose body
    /// is not valid (kept in the log, ignored by the views).
    pub fn validate(&self) -> Result<(), OperationError> {
        let fields = self.fields();
        if fields.is_empty() && matches!(self, Operation::SetFields { .. } | Operation::UpdateEntry { .. }) {
            return Err(OperationError::Malformed("an operation that sets fields names none"));
        }
        if fields.len() > FIELDS_PER_OP_MAX {
            return Err(OperationError::TooLarge("too many fields in one operation"));
        }
        for (i, write) in fields.iter().enumerate() {
            validate_field_name(&write.name)?;
            write.value.validate()?;
            if write.supersedes.len() > DOTS_PER_WRITE_MAX {
                return Err(OperationError::TooLarge("too many superseded versions"));
            }
            if fields[..i].iter().any(|earlier| earlier.name == write.name) {
                return Err(OperationError::Malformed("a field is written twice in one operation"));
            }
        }
        if let Operation::ChangeStatus { write, .. }
        | Operation::RemoveEntry { write, .. }
        | Operation::RestoreEntry { write, .. } = self
        {
            if write.supersedes.len() > DOTS_PER_WRITE_MAX || write.seen.len() > DOTS_PER_WRITE_MAX {
                return Err(OperationError::TooLarge("too many dots in a status write"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_parse_and_validate() {
        assert_eq!(FieldValue::parse_typed("int:42").unwrap(), FieldValue::Integer(42));
        assert_eq!(FieldValue::parse_typed("hello").unwrap(), FieldValue::Text("hello".into()));
        assert_eq!(FieldValue::parse_typed("date:2024-02-29").unwrap(), FieldValue::Date("2024-02-29".into()));
        assert!(FieldValue::parse_typed("date:2023-02-29").is_err());
        assert!(FieldValue::parse_typed("dec:1.").is_err());
        assert_eq!(FieldValue::parse_typed("dec:-12.50").unwrap(), FieldValue::Decimal("-12.50".into()));
        assert!(FieldValue::parse_typed("int:x").is_err());
        assert!(FieldValue::parse_typed("bool:maybe").is_err());
        assert!(validate_field_name("").is_err());
        assert!(validate_field_name("a\nb").is_err());
        assert!(validate_field_name("phone").is_ok());
    }
}
