//! What the generated modules are made of: the [`Command`] and [`EventData`] traits, the built-in `QType` enum,
//! and the macros that turn one line per enum value, union branch or alternate branch into serde code that
//! keeps what it does not know (unknown enum values, discriminator values, JSON types and members).

pub use serde::{Deserialize, Serialize};
pub use serde_json::{Map, Number, Value};

use serde::de::DeserializeOwned;
use serde::Deserializer;

/// The result of a command that returns nothing: QEMU's `{}`, kept as a map so that any member a newer QEMU
/// adds survives.
pub type Empty = Map<String, Value>;

/// A QMP or guest-agent command: the implementing struct holds its arguments.
pub trait Command: Serialize {
    /// The wire name, for example `"query-version"`.
    const NAME: &'static str;
    /// Whether QEMU allows it out of band (in any release that has it).
    const ALLOW_OOB: bool;
    /// `false` for commands that never reply on success (`guest-shutdown`, `guest-suspend-*`).
    const SUCCESS_RESPONSE: bool;
    /// The result.
    type Ok: DeserializeOwned + Serialize;
}

/// The `data` of one QMP event.
pub trait EventData: DeserializeOwned + Serialize {
    /// The event's wire name, for example `"STOP"`.
    const NAME: &'static str;
    /// Whether the schema gives the event any member (QEMU omits `data` for an event without members).
    const HAS_MEMBERS: bool;
}

/// Reads a member that is present (even as `null`) as `Some`: used for optional members whose type admits
/// `null` (`any`, `null`, alternates with a `null` branch), so that `null` and absent stay apart.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Deserializes a value from a JSON object's members.
pub fn from_map<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, serde_json::Error> {
    serde_json::from_value(Value::Object(map))
}

/// Whether a JSON value is of one of QAPI's alternate kinds (`string`, `integer`, `number`, `boolean`, `null`,
/// `object`, `array`).
pub fn is_kind(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => false,
    }
}

/// A union's discriminator member, required (`E`) or optional (`Option<E>`, when a release lacks it).
pub trait Discriminator {
    /// The enum.
    type Enum;
    /// The value, if any.
    fn value(&self) -> Option<&Self::Enum>;
}

impl<E: Discriminator<Enum = E>> Discriminator for Option<E> {
    type Enum = E;
    fn value(&self) -> Option<&E> {
        self.as_ref()
    }
}

/// An enum whose unknown values are kept (`Other`): decoding never fails on a new value.
macro_rules! qapi_enum {
    ($(#[$m:meta])* pub enum $name:ident { $( $(#[$vm:meta])* $var:ident = $wire:literal, )* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vm])* $var, )*
            /// A value this schema does not know (a newer QEMU's), kept as sent.
            Other(String),
        }

        impl $name {
            /// Every value the schema knows, as sent on the wire.
            pub const VALUES: &'static [&'static str] = &[$($wire),*];

            /// The value as sent on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$var => $wire, )*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $wire => Self::$var, )*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::support::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::support::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::from(&*s))
            }
        }

        impl $crate::support::Discriminator for $name {
            type Enum = $name;
            fn value(&self) -> Option<&$name> {
                Some(self)
            }
        }
    };
}

/// A union's serde code: the base members, then the branch chosen by the discriminator (unknown values and
/// values without branch members keep the remaining members in `Other`).
macro_rules! qapi_union {
    ($name:ident, $base:ident, $branch:ident, $disc:ident, $enum:ident { $($var:ident),* }) => {
        impl<'de> $crate::support::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use ::serde::de::Error as _;
                let mut base = $base::deserialize(d)?;
                let rest = ::std::mem::take(&mut base.extra_members);
                #[allow(unreachable_patterns)]
                let branch = match $crate::support::Discriminator::value(&base.$disc) {
                    $( Some($enum::$var) => {
                        $branch::$var($crate::support::from_map(rest).map_err(D::Error::custom)?)
                    } )*
                    _ => $branch::Other(rest),
                };
                Ok($name { base, branch })
            }
        }

        impl $crate::support::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                #[derive(::serde::Serialize)]
                #[serde(crate = "::serde")]
                struct Both<'a> {
                    #[serde(flatten)]
                    base: &'a $base,
                    #[serde(flatten)]
                    branch: &'a $branch,
                }
                Both { base: &self.base, branch: &self.branch }.serialize(s)
            }
        }
    };
}

/// An alternate's serde code: the branch is chosen by the JSON type; a JSON type no branch takes is `Other`.
macro_rules! qapi_alternate {
    ($name:ident { $($var:ident : $kind:ident),* }) => {
        impl $crate::support::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( Self::$var(v) => v.serialize(s), )*
                    Self::Other(v) => v.serialize(s),
                }
            }
        }

        impl<'de> $crate::support::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use ::serde::de::Error as _;
                let value = $crate::support::Value::deserialize(d)?;
                $( if $crate::support::is_kind(&value, stringify!($kind)) {
                    return ::serde_json::from_value(value).map(Self::$var).map_err(D::Error::custom);
                } )*
                Ok(Self::Other(value))
            }
        }
    };
}

/// The event enum: one variant per known event, `Other` for the rest.
macro_rules! qapi_events {
    ($(#[$m:meta])* pub enum $name:ident { $( $(#[$vm:meta])* $var:ident($ty:ty), )* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq)]
        pub enum $name {
            $( $(#[$vm])* $var($ty), )*
            /// An event this schema does not know (a newer QEMU's), with its `data` as sent.
            Other {
                /// The event's name.
                name: String,
                /// Its `data`, if it had any.
                data: Option<$crate::support::Value>,
            },
        }

        impl $name {
            /// Decodes an event from its name and its `data` member's JSON text (`None`: no `data`).
            pub fn decode(name: &str, data: Option<&str>) -> Result<Self, ::serde_json::Error> {
                $( if name == <$ty as $crate::support::EventData>::NAME {
                    return ::serde_json::from_str(data.unwrap_or("{}")).map(Self::$var);
                } )*
                Ok(Self::Other {
                    name: name.to_owned(),
                    data: data.map(::serde_json::from_str).transpose()?,
                })
            }

            /// The event's wire name.
            pub fn name(&self) -> &str {
                match self {
                    $( Self::$var(_) => <$ty as $crate::support::EventData>::NAME, )*
                    Self::Other { name, .. } => name,
                }
            }

            /// The `data` member as QEMU sends it: `None` for an event without members (unless a newer QEMU's
            /// members were kept).
            pub fn data(&self) -> Result<Option<$crate::support::Value>, ::serde_json::Error> {
                match self {
                    $( Self::$var(d) => {
                        let value = ::serde_json::to_value(d)?;
                        let empty = value.as_object().is_some_and(|m| m.is_empty());
                        Ok(if empty && !<$ty as $crate::support::EventData>::HAS_MEMBERS { None } else { Some(value) })
                    } )*
                    Self::Other { data, .. } => Ok(data.clone()),
                }
            }
        }
    };
}

qapi_enum! {
    /// QAPI's built-in enum `QType`: the JSON type of a value (used by `query-qmp-schema`'s alternates).
    pub enum QType {
        /// `none`
        None = "none",
        /// `qnull`
        Qnull = "qnull",
        /// `qnum`
        Qnum = "qnum",
        /// `qstring`
        Qstring = "qstring",
        /// `qdict`
        Qdict = "qdict",
        /// `qlist`
        Qlist = "qlist",
        /// `qbool`
        Qbool = "qbool",
    }
}
