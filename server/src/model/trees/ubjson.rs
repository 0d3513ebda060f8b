//! A decoder for Universal Binary JSON (the UBJSON specification, draft 12),
//! the binary form XGBoost saves models in (`.ubj`), into the same
//! `Document` its JSON form parses to, so one reader serves both.
//! Numbers are big-endian; containers may declare a count (`#`) and a
//! single element type (`$`). Input is untrusted: nesting is bounded and a
//! declared count larger than the bytes left is refused before allocating.

use super::document::{ArrayBuilder, Document};

/// The deepest nesting accepted (XGBoost's models nest about 6 deep).
const MAX_DEPTH: usize = 64;

/// Decodes one UBJSON value filling all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Document, String> {
    let mut reader = Reader { bytes, at: 0 };
    let marker = reader.byte()?;
    let value = reader.value(marker, 0)?;
    if reader.at != bytes.len() {
        return Err(format!("{} bytes follow the UBJSON value", bytes.len() - reader.at));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(count).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("truncated UBJSON: {count} bytes wanted at offset {}", self.at));
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// An integer after its marker (lengths and counts).
    fn int(&mut self, marker: u8) -> Result<i64, String> {
        Ok(match marker {
            b'i' => i64::from(i8::from_be_bytes(self.array()?)),
            b'U' => i64::from(self.byte()?),
            b'I' => i64::from(i16::from_be_bytes(self.array()?)),
            b'l' => i64::from(i32::from_be_bytes(self.array()?)),
            b'L' => i64::from_be_bytes(self.array()?),
            other => {
                return Err(format!("expected an integer marker, found {:?} at offset {}", other as char, self.at - 1));
            }
        })
    }

    /// A length or count: a non-negative integer no larger than the bytes left.
    fn length(&mut self) -> Result<usize, String> {
        let marker = self.byte()?;
        let length = self.int(marker)?;
        let left = self.bytes.len() - self.at;
        usize::try_from(length)
            .ok()
            .filter(|&length| length <= left)
            .ok_or_else(|| format!("UBJSON length {length} at offset {} exceeds the {left} bytes left", self.at))
    }

    fn string(&mut self) -> Result<String, String> {
        let length = self.length()?;
        String::from_utf8(self.take(length)?.to_vec()).map_err(|e| format!("UBJSON string is not UTF-8: {e}"))
    }

    fn value(&mut self, marker: u8, depth: usize) -> Result<Document, String> {
        Ok(match marker {
            b'Z' => Document::Null,
            b'T' => Document::Bool(true),
            b'F' => Document::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Document::Number(self.int(marker)? as f64),
            b'd' => float(f64::from(f32::from_be_bytes(self.array()?)))?,
            b'D' => float(f64::from_be_bytes(self.array()?))?,
            b'C' => Document::String((self.byte()? as char).to_string()),
            b'S' | b'H' => Document::String(self.string()?),
            b'[' | b'{' if depth >= MAX_DEPTH => return Err(format!("UBJSON nests deeper than {MAX_DEPTH}")),
            b'[' => {
                let (kind, count) = self.header()?;
                let mut items = ArrayBuilder::with_capacity(count.unwrap_or(0));
                loop {
                    let marker = match (kind, count) {
                        (_, Some(count)) if items.len() == count => break,
                        (Some(kind), _) => kind,
                        (None, _) => match self.byte()? {
                            b']' if count.is_none() => break,
                            b'N' => continue,
                            marker => marker,
                        },
                    };
                    items.push(self.value(marker, depth + 1)?);
                }
                items.finish()
            }
            b'{' => {
                let (kind, count) = self.header()?;
                let mut members = Vec::new();
                let mut read = 0;
                loop {
                    if count == Some(read) {
                        break;
                    }
                    if count.is_none() && self.bytes.get(self.at) == Some(&b'}') {
                        self.at += 1;
                        break;
                    }
                    let key = self.string()?;
                    let marker = match kind {
                        Some(kind) => kind,
                        None => self.byte()?,
                    };
                    members.push((key, self.value(marker, depth + 1)?));
                    read += 1;
                }
                Document::Object(members)
            }
            other => return Err(format!("unknown UBJSON marker {:?} at offset {}", other as char, self.at - 1)),
        })
    }

    /// A container's optional `$type` and `#count`.
    fn header(&mut self) -> Result<(Option<u8>, Option<usize>), String> {
        let mut kind = None;
        if self.bytes.get(self.at) == Some(&b'$') {
            self.at += 1;
            kind = Some(self.byte()?);
            if self.bytes.get(self.at) != Some(&b'#') {
                return Err("a UBJSON container with a `$` type must give a `#` count".into());
            }
        }
        if self.bytes.get(self.at) == Some(&b'#') {
            self.at += 1;
            return Ok((kind, Some(self.length()?)));
        }
        Ok((kind, None))
    }
}

fn float(value: f64) -> Result<Document, String> {
    if !value.is_finite() {
        return Err(format!("UBJSON holds a non-finite number ({value})"));
    }
    Ok(Document::Number(value))
}

#[cfg(test)]
mod tests {
    use super::super::document::Document;
    use super::decode;

    #[test]
    fn decodes_typed_counted_and_plain_containers() {
        // {"a": [1, 2.5], "b": "hi", "c": typed float32 array [1.0, -2.0]}
        let mut bytes = b"{".to_vec();
        bytes.extend(b"U\x01a[U\x01d\x40\x20\x00\x00]");
        bytes.extend(b"U\x01bSU\x02hi");
        bytes.extend(b"U\x01c[$d#U\x02\x3f\x80\x00\x00\xc0\x00\x00\x00");
        bytes.extend(b"}");
        let json: Document = serde_json::from_str(r#"{"a": [1, 2.5], "b": "hi", "c": [1.0, -2.0]}"#).unwrap();
        assert_eq!(decode(&bytes).unwrap(), json);
    }

    #[test]
    fn refuses_counts_beyond_the_input_and_deep_nesting() {
        assert!(decode(b"[$d#L\x7f\xff\xff\xff\xff\xff\xff\xff").unwrap_err().contains("exceeds"));
        assert!(decode(&[b'['; 100]).unwrap_err().contains("deeper"));
        assert!(decode(b"[U\x01").unwrap_err().contains("truncated"));
    }
}
