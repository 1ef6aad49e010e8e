//! Encoding and decoding, both bounded. The framing around them is `shroud_net::frame_codec`.

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Size limits of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame accepted or sent, in bytes.
    pub max_frame: usize,
}

impl Default for Limits {
    /// 64 MiB: a batch of 256 paths of 20 buckets of 4 KiB, with room.
    fn default() -> Self {
        Limits {
            max_frame: 64 << 20,
        }
    }
}

/// A message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a message (or have bytes after one).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message is larger than the frame limit.
    #[error("message of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
}

fn options(limit: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(limit as u64)
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// Decodes one message from a frame already capped at `limits.max_frame`.
pub fn decode<T: DeserializeOwned>(frame: &[u8], limits: Limits) -> Result<T, CodecError> {
    if frame.len() > limits.max_frame {
        return Err(CodecError::TooLarge(frame.len()));
    }
    options(frame.len())
        .deserialize(frame)
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Encodes one message, refusing one larger than a frame.
pub fn encode<T: Serialize>(msg: &T, limits: Limits) -> Result<Vec<u8>, CodecError> {
    let len = options(limits.max_frame)
        .serialized_size(msg)
        .map_err(|_| CodecError::TooLarge(limits.max_frame + 1))? as usize;
    if len > limits.max_frame {
        return Err(CodecError::TooLarge(len));
    }
    options(limits.max_frame)
        .serialize(msg)
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, BatchOp, Capability, Grant, Hello, ReadResult, Request, Response, StoreId};
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits { max_frame: 1 << 20 }
    }

    #[test]
    fn round_trip() {
        let req = Request::Batch(Batch {
            grants: vec![Grant {
                store: StoreId([1; 16]),
                capability: Capability([2; 32]),
            }],
            ops: vec![
                BatchOp::Read {
                    grant: 0,
                    bucket: 9,
                },
                BatchOp::Write {
                    grant: 0,
                    bucket: 3,
                    data: vec![5; 40],
                },
            ],
        });
        let bytes = encode(&req, limits()).unwrap();
        assert_eq!(decode::<Request>(&bytes, limits()).unwrap(), req);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            decode::<Request>(&longer, limits()).is_err(),
            "trailing bytes"
        );
        assert!(
            decode::<Request>(&bytes[..bytes.len() - 1], limits()).is_err(),
            "truncated"
        );
    }

    /// Sizes depend on the kind and counts only, never on the values.
    #[test]
    fn sizes_are_value_independent() {
        let mk = |bucket: u64, byte: u8, present: bool| {
            let req = Request::Batch(Batch {
                grants: vec![Grant {
                    store: StoreId([byte; 16]),
                    capability: Capability([byte; 32]),
                }],
                ops: vec![
                    BatchOp::Read { grant: 0, bucket },
                    BatchOp::Write {
                        grant: 0,
                        bucket,
                        data: vec![byte; 100],
                    },
                ],
            });
            let resp = Response::Batch(crate::BatchReply {
                refused: Vec::new(),
                reads: vec![ReadResult {
                    present,
                    data: vec![byte; 100],
                }],
            });
            (
                encode(&req, limits()).unwrap().len(),
                encode(&resp, limits()).unwrap().len(),
            )
        };
        assert_eq!(mk(0, 0, false), mk(u64::MAX, 255, true));
        assert_eq!(
            encode(&Request::Hello(Hello::current()), limits())
                .unwrap()
                .len(),
            encode(
                &Request::Hello(Hello {
                    magic: [0; 8],
                    version: u32::MAX
                }),
                limits()
            )
            .unwrap()
            .len()
        );
    }

    #[test]
    fn hostile_length_prefix_is_refused() {
        // A Batch whose grants vector claims 2^60 entries.
        let mut bytes = vec![3, 0, 0, 0];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            decode::<Request>(&bytes, limits()),
            Err(CodecError::Malformed(_))
        ));
        // A write claiming 2^40 bytes of data.
        let mut w = vec![3, 0, 0, 0];
        w.extend_from_slice(&0u64.to_le_bytes());
        w.extend_from_slice(&1u64.to_le_bytes());
        w.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        w.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<Request>(&w, limits()).is_err());
    }

    #[test]
    fn oversized_encode_is_refused() {
        let big = Response::Batch(crate::BatchReply {
            refused: Vec::new(),
            reads: vec![ReadResult {
                present: true,
                data: vec![0; 2 << 20],
            }],
        });
        assert!(matches!(
            encode(&big, limits()),
            Err(CodecError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes, limits());
            let _ = decode::<Response>(&bytes, limits());
        }

        #[test]
        fn decoding_mutated_messages_never_panics(flip in 0usize..200, byte in any::<u8>()) {
            let req = Request::Batch(Batch {
                grants: vec![Grant { store: StoreId([1; 16]), capability: Capability([2; 32]) }],
                ops: vec![BatchOp::Write { grant: 0, bucket: 3, data: vec![5; 40] }, BatchOp::Read { grant: 0, bucket: 1 }],
            });
            let mut bytes = encode(&req, limits()).unwrap();
            let at = flip % bytes.len();
            bytes[at] = byte;
            let _ = decode::<Request>(&bytes, limits());
        }
    }
}
