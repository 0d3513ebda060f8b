//! `candela.v1.Rows`, coded by hand (the generated code refers to this type
//! through `extern_path`): the message every batch of feature values travels
//! in. prost decodes a packed `repeated float` one value at a time through
//! the `Buf` trait; for a 1,000-row StreamPredict message that loop was a
//! quarter of the server's CPU (perf). Here the values are copied in bulk.
//! The wire format is the .proto's exactly: values are written packed, and
//! read packed or unpacked (as proto3 requires); anything malformed goes to
//! prost's own decoder, so the errors are prost's. The category columns
//! (`text`) are prost's generated messages, coded by prost.

use crate::v1::TextColumn;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

/// A batch of rows: `feature_count` values per row, row-major.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct Rows {
    /// Features per row; must equal the model's feature count.
    pub feature_count: u32,
    /// Row-major feature values, `feature_count` per row.
    pub values: Vec<f32>,
    /// Category features sent as strings; their slots in `values` are ignored.
    pub text: Vec<TextColumn>,
}

const FEATURE_COUNT: u32 = 1;
const VALUES: u32 = 2;
const TEXT: u32 = 3;

/// Bytes converted per step, on the stack.
const STEP: usize = 4096;

impl Rows {
    /// The values' packed payload length in bytes.
    fn packed_len(&self) -> usize {
        self.values.len() * 4
    }
}

impl prost::Message for Rows {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.feature_count != 0 {
            encoding::uint32::encode(FEATURE_COUNT, &self.feature_count, buf);
        }
        if !self.values.is_empty() {
            encoding::encode_key(VALUES, WireType::LengthDelimited, buf);
            encoding::encode_varint(self.packed_len() as u64, buf);
            let mut scratch = [0u8; STEP];
            for chunk in self.values.chunks(STEP / 4) {
                for (bytes, value) in scratch.chunks_exact_mut(4).zip(chunk) {
                    bytes.copy_from_slice(&value.to_le_bytes());
                }
                buf.put_slice(&scratch[..chunk.len() * 4]);
            }
        }
        for column in &self.text {
            encoding::message::encode(TEXT, column, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            FEATURE_COUNT => encoding::uint32::merge(wire_type, &mut self.feature_count, buf, ctx),
            VALUES if wire_type == WireType::LengthDelimited => match packed_payload(buf) {
                Some((header, len)) => {
                    buf.advance(header);
                    self.values.reserve(len / 4);
                    let mut scratch = [0u8; STEP];
                    let mut left = len;
                    while left > 0 {
                        let step = left.min(STEP);
                        buf.copy_to_slice(&mut scratch[..step]);
                        self.values.extend(
                            scratch[..step].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        );
                        left -= step;
                    }
                    Ok(())
                }
                None => encoding::float::merge_repeated(wire_type, &mut self.values, buf, ctx),
            },
            VALUES => encoding::float::merge_repeated(wire_type, &mut self.values, buf, ctx),
            TEXT => encoding::message::merge_repeated(wire_type, &mut self.text, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let count =
            if self.feature_count != 0 { encoding::uint32::encoded_len(FEATURE_COUNT, &self.feature_count) } else { 0 };
        let values = if self.values.is_empty() {
            0
        } else {
            encoding::key_len(VALUES) + encoding::encoded_len_varint(self.packed_len() as u64) + self.packed_len()
        };
        count + values + encoding::message::encoded_len_repeated(TEXT, &self.text)
    }

    fn clear(&mut self) {
        *self = Rows::default();
    }
}

/// The length prefix's size and the payload's length of a packed field at
/// the front of `buf`, when the prefix can be read without consuming it and
/// the payload is whole floats that are all there; `None` otherwise.
fn packed_payload(buf: &impl Buf) -> Option<(usize, usize)> {
    let mut front = buf.chunk();
    let before = front.len();
    let len = usize::try_from(encoding::decode_varint(&mut front).ok()?).ok()?;
    let header = before - front.len();
    (len % 4 == 0 && len <= buf.remaining() - header).then_some((header, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// What prost generates for the same .proto, to check the wire format against.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(uint32, tag = "1")]
        feature_count: u32,
        #[prost(float, repeated, tag = "2")]
        values: Vec<f32>,
        #[prost(message, repeated, tag = "3")]
        text: Vec<TextColumn>,
    }

    /// Unpacked encoding of the same values (a proto2-style sender).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Unpacked {
        #[prost(uint32, tag = "1")]
        feature_count: u32,
        #[prost(float, repeated, packed = "false", tag = "2")]
        values: Vec<f32>,
    }

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 0.37 - 11.0).collect()
    }

    #[test]
    fn encodes_byte_for_byte_as_prost_does() {
        let text = vec![TextColumn {
            feature: 2,
            values: vec!["grocery".into(), String::new(), "travel".into()],
            missing: vec![1],
        }];
        for n in [0, 1, 3, 1023, 1024, 1025, 30_000] {
            let ours = Rows { feature_count: 30, values: values(n), text: text.clone() };
            let generated = Generated { feature_count: 30, values: values(n), text: text.clone() };
            assert_eq!(ours.encode_to_vec(), generated.encode_to_vec(), "{n} values");
            assert_eq!(ours.encoded_len(), generated.encoded_len());
            assert_eq!(Rows::decode(&generated.encode_to_vec()[..]).unwrap(), ours);
        }
    }

    #[test]
    fn decodes_packed_unpacked_split_and_repeated_fields() {
        let generated = Generated { feature_count: 7, values: values(5000), text: Vec::new() };
        let bytes = generated.encode_to_vec();
        assert_eq!(Rows::decode(&bytes[..]).unwrap().values, generated.values);
        // A buffer in two pieces, split inside the values.
        let split = bytes[..777].chain(&bytes[777..]);
        assert_eq!(Rows::decode(split).unwrap().values, generated.values);
        let unpacked = Unpacked { feature_count: 7, values: values(10) }.encode_to_vec();
        assert_eq!(Rows::decode(&unpacked[..]).unwrap().values, values(10));
        // Two packed runs of the same field are concatenated.
        let twice = [bytes.clone(), bytes].concat();
        assert_eq!(Rows::decode(&twice[..]).unwrap().values.len(), 10_000);
    }

    #[test]
    fn refuses_what_prost_refuses() {
        let bytes = Generated { feature_count: 7, values: values(10), text: Vec::new() }.encode_to_vec();
        // Truncated payload, and a payload of 39 bytes (not whole floats).
        assert!(Rows::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Generated::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut ragged = bytes.clone();
        let at = ragged.iter().position(|b| *b == (VALUES << 3 | 2) as u8).unwrap();
        ragged[at + 1] -= 1;
        ragged.pop();
        assert!(Rows::decode(&ragged[..]).is_err());
        assert!(Generated::decode(&ragged[..]).is_err());
    }
}
