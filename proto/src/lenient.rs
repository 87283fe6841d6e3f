//! Decoders that accept the shapes real CSPs send (csp-api.md §4.11): numbers as strings,
//! booleans as strings, string lists as one comma-joined string. Emission stays canonical.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

fn number_from(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                // 1e3 is an integer; 1e19 would saturate to i64::MAX, so it is refused.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| format!("{n} is not an integer")),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("'{s}' is not an integer")),
        other => Err(format!("expected an integer, found {other}")),
    }
}

/// An optional integer given as a JSON number or a decimal string.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    number_from(&Value::deserialize(d)?).map_err(de::Error::custom)
}

/// An optional non-negative integer (sizes, byte counts) given as a number or a string.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match number_from(&Value::deserialize(d)?).map_err(de::Error::custom)? {
        None => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u64)),
        Some(n) => Err(de::Error::custom(format!("{n} is negative"))),
    }
}

/// An optional boolean given as `true`/`false` or the strings `"true"`/`"false"`.
/// A number or decimal string; `null` reads as 0.
pub fn u64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(opt_u64(d)?.unwrap_or(0))
}

pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            "" => Ok(None),
            _ => Err(de::Error::custom(format!("'{s}' is not a boolean"))),
        },
        other => Err(de::Error::custom(format!(
            "expected a boolean, found {other}"
        ))),
    }
}

/// A list of names given as an array or a single string; every element is split on `,`,
/// trimmed, and empties are dropped (one name per element after decoding).
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw: Vec<String> = match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(Ok(s)),
                Value::Null => None,
                other => Some(Err(de::Error::custom(format!(
                    "expected a string, found {other}"
                )))),
            })
            .collect::<Result<_, D::Error>>()?,
        other => {
            return Err(de::Error::custom(format!(
                "expected a list of strings, found {other}"
            )))
        }
    };
    Ok(split_names(raw.iter().map(String::as_str)))
}

/// Splits comma-joined names, trims them and drops empties.
pub fn split_names<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    items
        .into_iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A string that some CSPs send as a number (`target_port`).
pub fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(de::Error::custom(format!(
            "expected a string or number, found {other}"
        ))),
    }
}

/// Distinguishes an absent key (`None`) from an explicit `null` (`Some(None)`), which PUT
/// bodies give different meanings (csp-api.md B20, B21).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "opt_u64")]
        size: Option<u64>,
        #[serde(default, deserialize_with = "opt_bool")]
        flag: Option<bool>,
        #[serde(default, deserialize_with = "string_list")]
        names: Vec<String>,
        #[serde(default, deserialize_with = "present")]
        group: Option<Option<String>>,
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn numbers_and_strings_both_decode() {
        assert_eq!(probe(r#"{"size":1073741824}"#).size, Some(1 << 30));
        assert_eq!(probe(r#"{"size":"1073741824"}"#).size, Some(1 << 30));
        assert_eq!(probe(r#"{"size":null}"#).size, None);
        assert!(serde_json::from_str::<Probe>(r#"{"size":-1}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"size":"12Zi"}"#).is_err());
        assert_eq!(probe(r#"{"size":1e3}"#).size, Some(1000));
        assert!(serde_json::from_str::<Probe>(r#"{"size":1e19}"#).is_err());
    }

    #[test]
    fn booleans_accept_strings() {
        assert_eq!(probe(r#"{"flag":"true"}"#).flag, Some(true));
        assert_eq!(probe(r#"{"flag":false}"#).flag, Some(false));
        assert!(serde_json::from_str::<Probe>(r#"{"flag":"yes"}"#).is_err());
    }

    #[test]
    fn name_lists_are_split_on_commas() {
        let p = probe(r#"{"names":["iqn.a, iqn.b",""," iqn.c "]}"#);
        assert_eq!(p.names, ["iqn.a", "iqn.b", "iqn.c"]);
        assert_eq!(probe(r#"{"names":"x,y"}"#).names, ["x", "y"]);
        assert!(probe(r#"{"names":""}"#).names.is_empty());
        assert!(probe("{}").names.is_empty());
    }

    #[test]
    fn null_differs_from_absent() {
        assert_eq!(probe("{}").group, None);
        assert_eq!(probe(r#"{"group":null}"#).group, Some(None));
        assert_eq!(probe(r#"{"group":"g"}"#).group, Some(Some("g".into())));
    }
}
