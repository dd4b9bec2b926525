//! Method parameters: every method's `params` is an object decoded into a struct that refuses
//! unknown fields (`#[serde(deny_unknown_fields)]`), so that a misspelt optional field is an
//! error instead of silently ignored. The decoder's message names the offending field only when
//! it is a plain short word ([`safe_detail`]): nothing unbounded or unchecked from the request is
//! sent back.

use posguard_proto::local_api::{ApiError, ErrorCode, safe_detail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes `value` (absent: `{}`) into `T`; anything but an object is `bad_params`.
pub(crate) fn params<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    let value = match value {
        Value::Null => Value::Object(serde_json::Map::new()),
        object @ Value::Object(_) => object,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadParams,
                "params must be a JSON object",
            ));
        }
    };
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(ErrorCode::BadParams, safe_detail(&e.to_string())))
}

/// The parameters of a method that takes none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Token {
        token: String,
    }

    #[test]
    fn objects_only_unknown_fields_refused_nothing_unchecked_echoed() {
        params::<NoParams>(Value::Null).unwrap();
        params::<NoParams>(json!({})).unwrap();
        let e = params::<NoParams>(json!({"extra": 1})).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadParams);
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);
        let e = params::<Token>(json!(["abc"])).unwrap_err();
        assert_eq!(e.message, "params must be a JSON object");
        let e = params::<Token>(json!({"token": 4_111_111_111_111_111u64})).unwrap_err();
        assert!(!e.message.contains("4111"), "{}", e.message);
    }
}
