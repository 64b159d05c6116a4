//! Avro single-object framing for every Kafka record value.
//!
//! A record value is `C3 01` ‖ the writer schema's 8-byte CRC-64-AVRO (Rabin) fingerprint,
//! little-endian ‖ the Avro binary encoding of the event. The reader looks the fingerprint up
//! among the schemas it knows — the current one and the earlier versions kept in
//! `schemas/history/` — and resolves writer → reader schema (fields added since get their
//! defaults, fields removed are skipped), so a consumer reads what an older producer wrote
//! during a rolling upgrade, and can tell a record written with a schema it does not know (and
//! say which fingerprint) from a corrupt one, without a registry.
//!
//! Decoding never allocates more than [`MAX_ALLOCATION_BYTES`] for one string, byte array or
//! collection, so a tiny record that claims a huge array is an error, not an abort.

use apache_avro::Schema;
use serde::{Serialize, de::DeserializeOwned};

/// The two marker bytes that open every single-object encoded value.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;
/// The most a decoded length (of a string, bytes, array or map) may claim: 1 MiB, a Kafka
/// record's default size limit. Set once for the process (apache-avro keeps it globally).
pub const MAX_ALLOCATION_BYTES: usize = 1024 * 1024;

/// What can go wrong encoding or decoding an event.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The value is shorter than the header or does not start with `C3 01`.
    #[error("not an Avro single-object encoded value ({0})")]
    NotSingleObject(&'static str),
    /// The value was written with a schema this build does not know.
    #[error("unknown writer schema, fingerprint {0:016x}")]
    UnknownWriterSchema(u64),
    /// The body does not decode with the writer schema, or the value does not fit the schema.
    #[error("avro: {0}")]
    Avro(#[from] apache_avro::Error),
}

impl SchemaError {
    /// Whether the record may become readable with a newer build (its writer schema is unknown
    /// here), as opposed to being corrupt for good.
    pub fn is_unknown_schema(&self) -> bool {
        matches!(self, SchemaError::UnknownWriterSchema(_))
    }
}

/// A parsed schema and its fingerprint.
#[derive(Debug)]
pub struct EventSchema {
    /// The parsed schema.
    pub schema: Schema,
    /// CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, as it appears on the
    /// wire (little-endian): what any Avro library computes from the `.avsc`.
    pub fingerprint: [u8; 8],
    /// The fingerprint Herald wrote before 2026-11-30, over apache-avro's canonical form (which
    /// keeps a primitive with a logical type as `{"type":"long"}` where the specification
    /// says `"long"`): still read, never written.
    pub legacy_fingerprint: [u8; 8],
}

/// The schema's Parsing Canonical Form as the Avro specification defines it: apache-avro's,
/// with primitives it leaves wrapped (`{"type":"long"}`, from a field with a logical type)
/// written as the bare name.
pub fn parsing_canonical_form(schema: &Schema) -> String {
    let mut form = schema.canonical_form();
    for primitive in [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ] {
        form = form.replace(
            &format!("{{\"type\":\"{primitive}\"}}"),
            &format!("\"{primitive}\""),
        );
    }
    form
}

/// The CRC-64-AVRO (Rabin) fingerprint of `data`, little-endian, as the specification defines it.
pub fn crc64_avro(data: &[u8]) -> [u8; 8] {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    const TABLE: [u64; 256] = {
        let mut table = [0u64; 256];
        let mut i = 0;
        while i < 256 {
            let mut fp = i as u64;
            let mut j = 0;
            while j < 8 {
                fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
                j += 1;
            }
            table[i] = fp;
            i += 1;
        }
        table
    };
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp.to_le_bytes()
}

impl EventSchema {
    /// `schema` with its fingerprints.
    fn of(schema: Schema) -> EventSchema {
        let fingerprint = crc64_avro(parsing_canonical_form(&schema).as_bytes());
        let legacy_fingerprint = crc64_avro(schema.canonical_form().as_bytes());
        EventSchema {
            schema,
            fingerprint,
            legacy_fingerprint,
        }
    }

    /// Whether a record carrying `fingerprint` was written with this schema.
    pub fn wrote(&self, fingerprint: &[u8]) -> bool {
        fingerprint == self.fingerprint || fingerprint == self.legacy_fingerprint
    }
}

impl EventSchema {
    /// Parses a schema embedded in this crate. The files are compiled in and every one is parsed
    /// by the tests, so a failure here is a build defect, not a runtime condition.
    #[allow(clippy::expect_used)]
    pub(crate) fn parse_or_abort(json: &str) -> EventSchema {
        EventSchema::of(Schema::parse_str(json).expect("embedded Avro schema must parse"))
    }
}

/// An event type with its Avro schema.
pub trait Event: Serialize + DeserializeOwned {
    /// The `.avsc` text.
    const SCHEMA_JSON: &'static str;
    /// The `.avsc` texts of earlier versions, oldest first (`schemas/history/`).
    const PREVIOUS: &'static [&'static str];
    /// The parsed schema, parsed once.
    fn schema() -> &'static EventSchema;
    /// The parsed earlier versions, parsed once.
    fn history() -> &'static [EventSchema];
}

/// Encodes `event` as a single-object encoded Avro value.
pub fn encode<E: Event>(event: &E) -> Result<Vec<u8>, SchemaError> {
    let schema = E::schema();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&schema.fingerprint);
    // Serialises straight into the buffer, schema-aware, without an intermediate Value tree.
    apache_avro::write_avro_datum_ref(&schema.schema, event, &mut out)?;
    Ok(out)
}

/// Decodes a single-object encoded value into `E`, written with `E`'s schema or any earlier
/// version of it.
pub fn decode<E: Event>(bytes: &[u8]) -> Result<E, SchemaError> {
    decode_with::<E>(bytes, E::history())
}

/// Decodes a value written with `E`'s schema or one of `known` (resolved to `E`'s schema).
pub fn decode_with<E: Event>(bytes: &[u8], known: &[EventSchema]) -> Result<E, SchemaError> {
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    if bytes.len() < HEADER_LEN {
        return Err(SchemaError::NotSingleObject(
            "shorter than the 10-byte header",
        ));
    }
    if bytes[..2] != MAGIC {
        return Err(SchemaError::NotSingleObject("missing C3 01 marker"));
    }
    let reader = E::schema();
    let fingerprint = &bytes[2..HEADER_LEN];
    let mut body = &bytes[HEADER_LEN..];
    let value = if reader.wrote(fingerprint) {
        apache_avro::from_avro_datum(&reader.schema, &mut body, None)?
    } else {
        let Some(writer) = known.iter().find(|s| s.wrote(fingerprint)) else {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(fingerprint);
            return Err(SchemaError::UnknownWriterSchema(u64::from_le_bytes(raw)));
        };
        apache_avro::from_avro_datum(&writer.schema, &mut body, Some(&reader.schema))?
    };
    Ok(apache_avro::from_value(&value)?)
}

/// Parses a schema given at run time (tests; future schema versions).
pub fn parse_schema(json: &str) -> Result<EventSchema, SchemaError> {
    Ok(EventSchema::of(Schema::parse_str(json)?))
}

/// Frames an Avro `value` written with `writer` (tests: records of older or newer producers).
pub fn encode_value(
    writer: &EventSchema,
    value: apache_avro::types::Value,
) -> Result<Vec<u8>, SchemaError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&writer.fingerprint);
    out.extend_from_slice(&apache_avro::to_avro_datum(&writer.schema, value)?);
    Ok(out)
}

#[cfg(test)]
mod tests;
