//! Types every shadowtap stage shares.
//!
//! The capture stage produces [`Exchange`] records; every stage after it reads them back from
//! Parquet. This crate owns the record ([`exchange`]), its Arrow schema and schema version
//! ([`schema`]), stable identifiers ([`id`]) and the rolling
//! Parquet writer every stage writes through ([`sink`]), reading recordings back ([`read`]), the
//! `replays` table ([`replays`]), and the selection both capture and
//! replay apply: match criteria ([`criteria`]) and deterministic sampling ([`sampling`]), and
//! the names secrets live under ([`secrets`]) and the keyed redaction of them ([`redact`]),
//! which capture and the proxy apply before anything is written.
//!
//! ```
//! use shadowtap_core::schema::{exchanges_schema, EXCHANGES_SCHEMA_VERSION};
//! let schema = exchanges_schema();
//! assert!(schema.field_with_name("exchange_id").is_ok());
//! assert_eq!(EXCHANGES_SCHEMA_VERSION, 4);
//! ```

pub mod criteria;
pub mod exchange;
pub mod id;
pub mod read;
pub mod redact;
pub mod replays;
pub mod sampling;
pub mod schema;
pub mod secrets;
pub mod sink;
pub mod splitmix;
pub mod units;

pub use exchange::{Body, CompactString, Exchange, ExchangeFlags, GrpcCall, Header};
