//! Identifiers that travel between hospitals. Each is parsed once at the edge so that the rest of
//! the relay can rely on its shape (and on it being safe to log: none of them is patient data).

use std::fmt;

/// Defines a string newtype whose only constructor checks the shape.
macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks the shape and wraps the value, or says why it is not one.
            pub fn parse(value: &str) -> Result<Self, String> {
                let allowed: fn(char) -> bool = $allowed;
                if value.is_empty() {
                    return Err(format!("{} is empty", $what));
                }
                if value.len() > $max {
                    return Err(format!("{} is longer than {} characters", $what, $max));
                }
                if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
                    return Err(format!("{} contains the character {:?}", $what, bad));
                }
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

code_type!(
    /// A hospital's registry code, e.g. `HN-HH-001`: upper-case letters, digits and dashes.
    /// It is also the first word of the routing key the hospital publishes under.
    HospitalCode,
    "hospital code",
    32,
    |c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'
);

code_type!(
    /// The origin's idempotency key for a request, chosen by its HIS (often an order number).
    OriginRequestId,
    "request id",
    64,
    |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
);

code_type!(
    /// A reviewer pool's code, e.g. `xy-ecg`: it names the pool's queue lanes.
    PoolCode,
    "pool code",
    48,
    |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
);

code_type!(
    /// A reviewer's id (a licensed doctor at the reviewer hospital).
    ReviewerId,
    "reviewer id",
    64,
    |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hospital_code_accepts_registry_codes_and_refuses_routing_wildcards() {
        assert!(HospitalCode::parse("HN-HH-001").is_ok());
        assert!(HospitalCode::parse("HN.HH").is_err());
        assert!(HospitalCode::parse("HN#").is_err());
        assert!(HospitalCode::parse("").is_err());
        assert!(HospitalCode::parse(&"A".repeat(33)).is_err());
    }

    #[test]
    fn request_id_refuses_spaces_and_overlong_values() {
        assert!(OriginRequestId::parse("ECG-2026-000123").is_ok());
        assert!(OriginRequestId::parse("a b").is_err());
        assert!(OriginRequestId::parse(&"x".repeat(65)).is_err());
    }
}
