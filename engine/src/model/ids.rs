//! Fixed-size identifiers: spaces, cases, entries and events, with hex and short display forms.

use std::fmt;

use crate::model::error::ParseIdError;

macro_rules! fixed_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The id from exactly `LEN` bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, ParseIdError> {
                let array: [u8; $len] = bytes.try_into().map_err(|_| ParseIdError::Length {
                    kind: stringify!($name),
                    expected: $len,
                    got: bytes.len(),
                })?;
                Ok(Self(array))
            }

            /// The id from its full hex form.
            pub fn from_hex(text: &str) -> Result<Self, ParseIdError> {
                let bytes = hex::decode(text.trim()).map_err(|_| ParseIdError::NotHex {
                    kind: stringify!($name),
                })?;
                Self::from_slice(&bytes)
            }

            /// The full lowercase hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, for logs and tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }
    };
}

fixed_id!(
    /// A space: one practice's log. A node may hold several.
    SpaceId,
    16
);
fixed_id!(
    /// A case, chosen at random (128 bits) by the device that creates it.
    CaseId,
    16
);
fixed_id!(
    /// An entry of a case (a session note, an appointment, a document's metadata).
    EntryId,
    16
);
fixed_id!(
    /// An event's id: blake3 of its exact encoded bytes.
    EventId,
    32
);
fixed_id!(
    /// A space data key's id: 16 bytes derived from the key with blake3, so a wrap that opens
    /// to another key is detected.
    KeyId,
    16
);

fixed_id!(
    /// A device's ed25519 public key: the author of its events.
    AuthorId,
    32
);

impl EventId {
    /// The `prev` of every seq 1 event.
    pub const ZERO: EventId = EventId([0; 32]);

    /// blake3 of the exact bytes.
    pub fn of(bytes: &[u8]) -> EventId {
        EventId(*blake3::hash(bytes).as_bytes())
    }
}

impl AuthorId {
    /// A short printable device id: `d-` and the first 12 hex digits of the key.
    pub fn device_id(&self) -> String {
        format!("d-{}", hex::encode(&self.0[..6]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let id = CaseId([7; 16]);
        assert_eq!(CaseId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(matches!(CaseId::from_hex("zz"), Err(ParseIdError::NotHex { .. })));
        assert!(matches!(CaseId::from_hex("abcd"), Err(ParseIdError::Length { got: 2, .. })));
        assert_eq!(format!("{id:?}"), "CaseId(07070707)");
    }
}
