//! Typed columns: values the database keeps as text (addresses as lowercase 0x-hex, hashes as
//! 0x-hex, token amounts as decimal strings since a U256 does not fit an integer column, DIDs as
//! `did:op:...`), read and bound through [`Text`] so that rows are typed structs
//! (`sqlx::FromRow`) and never parsed column by column.

use std::str::FromStr;

use alloy_primitives::{Address, B256, U256};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::protocol::ddo::Did;

/// A value stored as text (see [`StoredText`] for each type's form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Text<T>(pub T);

/// How a type is written to, and read from, a text column.
pub trait StoredText: Sized {
    /// The stored form.
    fn to_text(&self) -> String;
    /// Parses the stored form.
    fn from_text(text: &str) -> Result<Self, BoxDynError>;
}

impl StoredText for Address {
    /// Lowercase 0x-hex (not the checksummed form: one spelling per address).
    fn to_text(&self) -> String {
        format!("{self:#x}")
    }

    fn from_text(text: &str) -> Result<Self, BoxDynError> {
        Ok(Address::from_str(text)?)
    }
}

impl StoredText for B256 {
    fn to_text(&self) -> String {
        self.to_string()
    }

    fn from_text(text: &str) -> Result<Self, BoxDynError> {
        Ok(B256::from_str(text)?)
    }
}

impl StoredText for U256 {
    /// Decimal.
    fn to_text(&self) -> String {
        self.to_string()
    }

    fn from_text(text: &str) -> Result<Self, BoxDynError> {
        Ok(U256::from_str_radix(text, 10)?)
    }
}

impl StoredText for Did {
    fn to_text(&self) -> String {
        self.to_string()
    }

    fn from_text(text: &str) -> Result<Self, BoxDynError> {
        Ok(text.parse()?)
    }
}

impl<T, DB: Database> Type<DB> for Text<T>
where
    String: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as Type<DB>>::compatible(ty)
    }
}

impl<'r, T: StoredText, DB: Database> Decode<'r, DB> for Text<T>
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Text(T::from_text(<&str as Decode<DB>>::decode(value)?)?))
    }
}

impl<'q, T: StoredText, DB: Database> Encode<'q, DB> for Text<T>
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut <DB as Database>::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        self.0.to_text().encode_by_ref(buf)
    }
}

/// A value stored as JSON text. (sqlx's own `Json` is PostgreSQL's `jsonb` there, and not a
/// type of the `Any` driver: the schema keeps JSON in `TEXT` columns on both engines.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonText<T>(pub T);

impl<T, DB: Database> Type<DB> for JsonText<T>
where
    String: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as Type<DB>>::compatible(ty)
    }
}

impl<'r, T: serde::de::DeserializeOwned, DB: Database> Decode<'r, DB> for JsonText<T>
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(JsonText(serde_json::from_str(<&str as Decode<DB>>::decode(value)?)?))
    }
}

impl<'q, T: serde::Serialize, DB: Database> Encode<'q, DB> for JsonText<T>
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut <DB as Database>::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        serde_json::to_string(&self.0)?.encode_by_ref(buf)
    }
}

/// Binds an optional value as text (NULL when absent).
pub fn opt<T: StoredText>(value: Option<T>) -> Option<Text<T>> {
    value.map(Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_their_stored_form() {
        let a = Address::repeat_byte(0xAB);
        assert_eq!(a.to_text(), format!("0x{}", "ab".repeat(20)), "lowercase, one spelling");
        assert_eq!(Address::from_text(&a.to_text()).unwrap(), a);
        let h = B256::repeat_byte(7);
        assert_eq!(B256::from_text(&h.to_text()).unwrap(), h);
        let n = U256::from(10).pow(U256::from(30));
        assert_eq!(n.to_text(), "1000000000000000000000000000000");
        assert_eq!(U256::from_text(&n.to_text()).unwrap(), n);
        let did = Did(h);
        assert_eq!(Did::from_text(&did.to_text()).unwrap(), did);
        assert!(U256::from_text("0x10").is_err(), "amounts are decimal");
    }
}
