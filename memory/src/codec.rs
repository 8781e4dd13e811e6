//! The one place that knows the binary encoding of everything we store or
//! send (Raft log entries, state-machine records, wire messages).
//!
//! It wraps `bincode` 2.0.1 in its serde mode with the standard
//! configuration and a hard size limit. Swapping the format means changing
//! this file only. `bincode` 3.0.0 on crates.io is a deliberate
//! `compile_error!` tombstone, hence the exact pin in the workspace.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest value this codec encodes or decodes (64 MiB): a corrupt or
/// hostile length prefix cannot make us allocate more.
pub const MAX_ENCODED_BYTES: usize = 64 * 1024 * 1024;

const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_ENCODED_BYTES>,
> = bincode::config::standard().with_limit::<MAX_ENCODED_BYTES>();

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded (too large, or a type the format cannot carry).
    #[error("cannot encode {type_name}: {message}")]
    Encode {
        /// The Rust type being encoded.
        type_name: &'static str,
        /// What the encoder said.
        message: String,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode {type_name} from {len} bytes: {message}")]
    Decode {
        /// The Rust type expected.
        type_name: &'static str,
        /// How many bytes were offered.
        len: usize,
        /// What the decoder said.
        message: String,
    },
}

/// Encodes `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, CONFIG).map_err(|error| CodecError::Encode {
        type_name: std::any::type_name::<T>(),
        message: error.to_string(),
    })
}

/// How many bytes [`encode`] would produce for `value`, without allocating
/// them: callers check a size cap before building a message or a log entry.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let mut writer = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut writer, CONFIG).map_err(|error| {
        CodecError::Encode {
            type_name: std::any::type_name::<T>(),
            message: error.to_string(),
        }
    })?;
    Ok(writer.bytes_written)
}

/// Decodes a `T` that must span all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let decode_error = |message: String| CodecError::Decode {
        type_name: std::any::type_name::<T>(),
        len: bytes.len(),
        message,
    };
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, CONFIG)
        .map_err(|error| decode_error(error.to_string()))?;
    if used != bytes.len() {
        return Err(decode_error(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Sample {
        Unit,
        Record {
            id: u64,
            name: String,
            tags: BTreeMap<String, String>,
            payload: Option<Vec<u8>>,
        },
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&7u64).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<u64>(&bytes),
            Err(CodecError::Decode { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Sample>(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode::<Sample>(&[]).is_err());
    }

    proptest! {
        #[test]
        fn values_round_trip(
            id in any::<u64>(),
            name in ".{0,40}",
            tags in proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..6),
            payload in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        ) {
            let value = Sample::Record { id, name, tags, payload };
            let bytes = encode(&value).unwrap();
            prop_assert_eq!(encoded_len(&value).unwrap(), bytes.len());
            prop_assert_eq!(decode::<Sample>(&bytes).unwrap(), value);
            prop_assert_eq!(decode::<Sample>(&encode(&Sample::Unit).unwrap()).unwrap(), Sample::Unit);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode::<Sample>(&bytes);
        }
    }
}
