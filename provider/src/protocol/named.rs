//! Enums whose values have fixed names (on the wire, in storage, in DDOs): one macro declares
//! the enum with its list of values, its names, `Display` and `FromStr`, so that no name is
//! written twice and every such enum parses the same way.

/// A name that is none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not {what}")]
pub struct UnknownName {
    /// What was expected (`a condition of the compute template`...).
    pub what: &'static str,
    /// The name given.
    pub name: String,
}

/// Declares a fieldless enum whose values are named: `ALL`, `as_str`, `Display`, `FromStr`
/// (failing with [`UnknownName`]). Attributes (derives, serde renames) pass through; a test
/// per enum checks that serde spells the values as `as_str` does.
macro_rules! named_enum {
    (
        $(#[$attr:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vattr:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$attr])*
        $vis enum $name {
            $( $(#[$vattr])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value's name, as the wire and storage spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::protocol::named::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::protocol::named::UnknownName { what: $what, name: s.to_string() })
            }
        }
    };
}

pub(crate) use named_enum;
