//! Inputs for the agreement tests: ids, values, operations, event bytes, fields of any tag and
//! wire type, and mutations of valid encodings (bytes changed blindly, or fields read as a tree
//! and changed so that they stay well formed).

use super::*;

pub(super) fn author() -> impl Strategy<Value = AuthorId> {
    // A few authors often (so dots collide and sort), any author sometimes.
    prop_oneof![3 => (0u8..3).prop_map(|b| AuthorId([b; 32])), 1 => any::<[u8; 32]>().prop_map(AuthorId)]
}

pub(super) fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..300, Just(u64::MAX), 1u64..=u64::MAX]
}

pub(super) fn dot() -> impl Strategy<Value = Dot> {
    (author(), seq()).prop_map(|(author, seq)| Dot { author, seq })
}

pub(super) fn dots() -> impl Strategy<Value = Dots> {
    proptest::collection::vec(dot(), 0..4).prop_map(|mut dots| {
        // As every decoder returns them.
        dots.sort();
        dots.dedup();
        dots.into()
    })
}

pub(super) fn vector() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((author(), prop_oneof![Just(0u64), seq()]), 0..4).prop_map(|heads| {
        let mut vector = VersionVector::new();
        for (author, seq) in heads {
            vector.raise(author, seq);
        }
        vector
    })
}

pub(super) fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z ]{0,12}", "(?s).{0,24}"]
}

/// Values of every kind; decimals and dates mostly valid, sometimes not.
pub(super) fn value() -> impl Strategy<Value = FieldValue> {
    let date = (1000u32..3000, 1u32..=12, 1u32..=31).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"));
    prop_oneof![
        text().prop_map(FieldValue::Text),
        any::<i64>().prop_map(FieldValue::Integer),
        prop_oneof![4 => "-?[0-9]{1,8}(\\.[0-9]{1,4})?", 1 => text()].prop_map(FieldValue::Decimal),
        any::<bool>().prop_map(FieldValue::Bool),
        prop_oneof![4 => date, 1 => text()].prop_map(FieldValue::Date),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(FieldValue::Bytes),
    ]
}

/// Field names: mostly short and valid, sometimes any text (empty, long, control characters).
pub(super) fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z_]{1,10}", 1 => "(?s).{0,40}"]
}

pub(super) fn writes() -> impl Strategy<Value = Vec<FieldWrite>> {
    proptest::collection::vec(
        (field_name(), value(), dots()).prop_map(|(name, value, supersedes)| FieldWrite {
            name: name.into(),
            value,
            supersedes,
        }),
        0..4,
    )
}

pub(super) fn status_write() -> impl Strategy<Value = StatusWrite> {
    (dots(), vector()).prop_map(|(supersedes, seen)| StatusWrite { supersedes, seen })
}

/// Operations of every kind, with any ids and dots; mostly valid.
pub(super) fn operation() -> impl Strategy<Value = Operation> {
    let case = any::<[u8; 16]>().prop_map(CaseId);
    let entry = any::<[u8; 16]>().prop_map(EntryId);
    let change = prop_oneof![
        Just(StatusChange::Delete),
        Just(StatusChange::Archive),
        Just(StatusChange::Unarchive),
        Just(StatusChange::Restore)
    ];
    prop_oneof![
        (case.clone(), writes()).prop_map(|(case, fields)| Operation::CreateCase { case, fields: fields.into() }),
        (case.clone(), writes()).prop_map(|(case, fields)| Operation::SetFields { case, fields: fields.into() }),
        (case.clone(), change, status_write()).prop_map(|(case, change, write)| Operation::ChangeStatus {
            case,
            change,
            write
        }),
        (case.clone(), entry.clone(), writes()).prop_map(|(case, entry, fields)| Operation::AddEntry {
            case,
            entry,
            fields: fields.into()
        }),
        (case.clone(), entry.clone(), writes()).prop_map(|(case, entry, fields)| Operation::UpdateEntry {
            case,
            entry,
            fields: fields.into()
        }),
        (case, entry, status_write()).prop_map(|(case, entry, write)| Operation::RemoveEntry { case, entry, write }),
    ]
}

/// Event bytes as prost encodes them, with any header and body (mostly valid).
pub(super) fn event_bytes() -> impl Strategy<Value = Vec<u8>> {
    let id = |len: usize| proptest::collection::vec(any::<u8>(), len..=len);
    let size = |len: usize| prop_oneof![19 => Just(len), 1 => 0..len + 2];
    (
        (size(16).prop_flat_map(id), size(32).prop_flat_map(id), prop_oneof![Just(0u64), Just(1), seq()]),
        (prop_oneof![3 => Just(None), 1 => size(32).prop_flat_map(id).prop_map(Some)], any::<u64>()),
        (prop_oneof![Just(1i32), Just(2), any::<i32>()], proptest::collection::vec(any::<u8>(), 0..60)),
    )
        .prop_map(|((space, author, seq), (prev, hlc), (encoding, body))| {
            // A first event's prev is zero; a later one's any 32 bytes (or of a wrong size).
            let prev = prev.unwrap_or_else(|| if seq == 1 { vec![0; 32] } else { vec![seq as u8; 32] });
            pb::Event {
                space: space.into(),
                author: author.into(),
                seq,
                prev: prev.into(),
                hlc,
                encoding,
                body: body.into(),
            }
            .encode_to_vec()
        })
}

/// A field of any tag and wire type, with a short payload (its bytes need not be well formed).
pub(super) fn any_field() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![4 => 1u64..10, 1 => Just(0u64), 1 => 10u64..20, 1 => Just(1 << 29), 1 => any::<u64>()];
    (tag, 0u64..8, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(tag, wire_type, payload)| {
        let mut out = Vec::new();
        put_varint(tag.wrapping_shl(3) | wire_type, &mut out);
        match wire_type {
            0 => {
                put_varint(payload.iter().fold(0u64, |v, b| v.wrapping_mul(251).wrapping_add(u64::from(*b))), &mut out)
            }
            2 => {
                put_varint(payload.len() as u64, &mut out);
                out.extend_from_slice(&payload);
            }
            _ => out.extend_from_slice(&payload),
        }
        out
    })
}

pub(super) fn put_varint(value: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(value, out);
}

/// One change to a valid encoding: to its bytes blindly, or to its fields (read as a tree, see
/// [`Node`]) in ways that keep it well formed but may change its meaning or make it unusual.
#[derive(Clone, Debug)]
pub(super) enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    /// Copies a range of the bytes to another place (a field repeated, a length duplicated).
    Copy(prop::sample::Index, usize, prop::sample::Index),
    Cut(prop::sample::Index),
    Splice(prop::sample::Index, Vec<u8>),
    Join(Vec<u8>),
    /// A varint field's value replaced (a bool of 2, an enum past its values, a huge seq...).
    Value(prop::sample::Index, u64),
    /// A varint (key, length or value) written with redundant continuation bytes.
    Overlong(prop::sample::Index, usize),
    /// The first field of a message moved to its end.
    Rotate(prop::sample::Index),
}

pub(super) fn mutation(join: impl Strategy<Value = Vec<u8>> + 'static) -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>;
    let value = prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(0x7f),
        Just(0x80),
        Just(u64::from(u32::MAX) + 2),
        Just(u64::MAX),
        any::<u64>()
    ];
    prop_oneof![
        1 => (at(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => (at(), prop_oneof![Just(0u8), Just(0x7f), Just(0x80), Just(0xff), any::<u8>()])
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (at(), proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (at(), 1usize..6).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (at(), 1usize..40, at()).prop_map(|(i, n, to)| Mutation::Copy(i, n, to)),
        1 => at().prop_map(Mutation::Cut),
        1 => (at(), any_field()).prop_map(|(i, f)| Mutation::Splice(i, f)),
        1 => join.prop_map(Mutation::Join),
        3 => (at(), value).prop_map(|(i, v)| Mutation::Value(i, v)),
        2 => (at(), 1usize..4).prop_map(|(i, n)| Mutation::Overlong(i, n)),
        1 => at().prop_map(Mutation::Rotate),
    ]
}

/// The fields of encoded bytes as a tree: a length-delimited value whose bytes read as fields is
/// taken for a nested message (an id or a text may be read so by chance: a change there changes
/// the same bytes for both readers).
#[derive(Clone, Debug)]
pub(super) enum Node {
    Varint(u64),
    Bytes(Vec<u8>),
    Message(Vec<(u64, Node)>),
}

pub(super) fn tree(bytes: &[u8], depth: usize) -> Option<Vec<(u64, Node)>> {
    let fields = hand_fields(bytes)?;
    let node = |value| match value {
        Value::Varint(value) => Node::Varint(value),
        Value::Bytes(bytes) if depth < 6 && !bytes.is_empty() => match tree(&bytes, depth + 1) {
            Some(fields) => Node::Message(fields),
            None => Node::Bytes(bytes),
        },
        Value::Bytes(bytes) => Node::Bytes(bytes),
    };
    Some(fields.into_iter().map(|(tag, value)| (tag, node(value))).collect())
}

/// Every varint field value of a tree, depth first.
pub(super) fn varint_values<'a>(fields: &'a mut [(u64, Node)], out: &mut Vec<&'a mut u64>) {
    for (_, node) in fields {
        match node {
            Node::Varint(value) => out.push(value),
            Node::Message(fields) => varint_values(fields, out),
            Node::Bytes(_) => {}
        }
    }
}

/// Moves the first field of the `target`-th message of a tree (depth first) to its end.
pub(super) fn rotate(fields: &mut [(u64, Node)], target: usize, seen: &mut usize) {
    if *seen == target && !fields.is_empty() {
        fields.rotate_left(1);
    }
    *seen += 1;
    for (_, node) in fields {
        if let Node::Message(inner) = node {
            rotate(inner, target, seen);
        }
    }
}

/// Writes a tree as bytes; the varint written `overlong.0`-th (keys, lengths and values, in the
/// order written) gets `overlong.1` redundant continuation bytes (as many as fit in 10 bytes).
pub(super) struct TreeWriter {
    written: usize,
    overlong: Option<(usize, usize)>,
}

impl TreeWriter {
    fn varint(&mut self, value: u64, out: &mut Vec<u8>) {
        let start = out.len();
        put_varint(value, out);
        if let Some((_, extra)) = self.overlong.filter(|(at, _)| *at == self.written) {
            let extra = extra.min(10 - (out.len() - start));
            if extra > 0 {
                *out.last_mut().expect("a varint has a byte") |= 0x80;
                out.extend(std::iter::repeat_n(0x80, extra - 1));
                out.push(0);
            }
        }
        self.written += 1;
    }

    fn fields(&mut self, fields: &[(u64, Node)], out: &mut Vec<u8>) {
        for (tag, node) in fields {
            match node {
                Node::Varint(value) => {
                    self.varint(tag << 3, out);
                    self.varint(*value, out);
                }
                Node::Bytes(bytes) => {
                    self.varint(tag << 3 | 2, out);
                    self.varint(bytes.len() as u64, out);
                    out.extend_from_slice(bytes);
                }
                Node::Message(fields) => {
                    let mut inner = Vec::new();
                    self.fields(fields, &mut inner);
                    self.varint(tag << 3 | 2, out);
                    self.varint(inner.len() as u64, out);
                    out.extend_from_slice(&inner);
                }
            }
        }
    }
}

/// Changes the fields of `bytes` read as a tree and writes them back (nothing when they do not
/// read as fields).
pub(super) fn mutate_tree(bytes: &mut Vec<u8>, change: impl FnOnce(&mut Vec<(u64, Node)>, &mut TreeWriter)) {
    let Some(mut fields) = tree(bytes, 0) else { return };
    let mut writer = TreeWriter { written: 0, overlong: None };
    change(&mut fields, &mut writer);
    bytes.clear();
    writer.fields(&fields, bytes);
}

pub(super) fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        match mutation {
            Mutation::Flip(i, x) if len > 0 => bytes[i.index(len)] ^= x,
            Mutation::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
            Mutation::Insert(i, new) | Mutation::Splice(i, new) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Copy(i, n, to) if len > 0 => {
                let from = i.index(len);
                let copied = bytes[from..(from + n).min(len)].to_vec();
                let at = to.index(len + 1);
                bytes.splice(at..at, copied);
            }
            Mutation::Cut(i) => bytes.truncate(i.index(len + 1)),
            Mutation::Join(more) => bytes.extend_from_slice(more),
            Mutation::Value(i, new) => mutate_tree(&mut bytes, |fields, _| {
                let mut values = Vec::new();
                varint_values(fields, &mut values);
                if !values.is_empty() {
                    let pick = i.index(values.len());
                    *values[pick] = *new;
                }
            }),
            // Fewer varints are written than there are bytes (a field takes two bytes or more).
            Mutation::Overlong(i, extra) => {
                let at = i.index(len.max(1) / 2 + 1);
                mutate_tree(&mut bytes, |_, writer| writer.overlong = Some((at, *extra)));
            }
            Mutation::Rotate(i) => {
                let target = i.index(len.max(1) / 4 + 1);
                mutate_tree(&mut bytes, |fields, _| rotate(fields, target, &mut 0));
            }
            _ => {}
        }
    }
    bytes
}

/// Bytes of no structure, or a soup of fields of any tag and wire type.
pub(super) fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        proptest::collection::vec(any_field(), 0..8).prop_map(|fields| fields.concat()),
    ]
}

pub(super) fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    operation().prop_map(|operation| encode_operation(&operation))
}
