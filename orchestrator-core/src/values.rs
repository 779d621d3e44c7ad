//! Validated values: each is built only by parsing, so holding one proves it obeys its rule.
//!
//! Limits are the product's field rules (docs/API.md). A broken rule is a [`ValidationError`] naming the field.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

/// A field that breaks one of the domain's rules (HTTP 400 `VALIDATION_ERROR`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ValidationError {
    /// The field's name as the API spells it (`feature_id`, `metadata`, …).
    pub field: &'static str,
    /// The rule it breaks, as a lowercase sentence fragment.
    pub rule: String,
}

impl ValidationError {
    /// A broken `rule` on `field`.
    pub fn new(field: &'static str, rule: impl Into<String>) -> Self {
        ValidationError {
            field,
            rule: rule.into(),
        }
    }
}

/// Defines a string newtype that can only be built through `parse`, with `Display`, `FromStr`,
/// `AsRef<str>` and serde that re-validates on the way in.
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
        pub struct $name(String);

        impl $name {
            /// Parses `value`, or says which rule it breaks.
            pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                $check(&value).map_err(|rule| ValidationError::new($field, rule))?;
                Ok($name(value))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

validated_string!(
    /// A feature's identifier: 1–128 characters of `A-Z a-z 0-9 . _ -`, starting with a letter
    /// or digit (`008-services-architecture`). Safe to put in a URL path as it is.
    FeatureId,
    "feature_id",
    check_feature_id
);

validated_string!(
    /// What the feature is: not blank, at most 10 000 characters.
    Description,
    "description",
    check_description
);

validated_string!(
    /// Who triggered a transition: at most 128 characters.
    Actor,
    "actor",
    check_actor
);

impl Actor {
    /// The name the orchestrator records as the actor of its own decisions (a gate's expiry),
    /// with `actor_kind: system`.
    pub fn system() -> Self {
        Actor("system".to_owned())
    }

    /// Parses a name given now (a request's `actor`, a principal's name): the rule of
    /// [`Actor::parse`], and not blank, so that naming nobody is never taken for naming
    /// someone (a blank approver would count toward a gate's distinct approvals). White
    /// space around the name is dropped, so `"alice "` is alice — as the board's sign-in
    /// has it — and not a second person who may approve alice's work or approve twice. Nor
    /// is it `system` in any letter case, the orchestrator's own name ([`Actor::system`]).
    /// Stored names are read back with [`Actor::parse`], so a blank one an earlier version
    /// kept still reads.
    pub fn parse_name(value: impl Into<String>) -> Result<Self, ValidationError> {
        // The rule holds for the name as given (no control character, a tab included; at most
        // 128 characters), then the spaces around it go.
        let given = Actor::parse(value)?;
        // White space as JSON Schema's `\s` has it (the OpenAPI rule): Rust's, and U+FEFF.
        let name = given
            .as_str()
            .trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if name.is_empty() {
            return Err(ValidationError::new("actor", "must not be blank"));
        }
        // `alice` and `alice` with a zero-width space would be two people who look like one.
        if name.chars().any(is_invisible) {
            return Err(ValidationError::new(
                "actor",
                "must not contain invisible characters (zero-width, joiners, direction marks, soft hyphen)",
            ));
        }
        let name = if name.len() == given.as_str().len() {
            given
        } else {
            Actor::parse(name)?
        };
        // Nobody's decision may read as the orchestrator's own (a gate's expiry).
        // By letter case alone, as the API's document can state it (a pattern): a name that
        // only looks like it through another encoding (full-width letters) is not refused.
        if case_folded(name.as_str()).eq(case_folded("system")) {
            return Err(ValidationError::new(
                "actor",
                "must not be system (in any letter case): the name is kept for the orchestrator's own decisions",
            ));
        }
        Ok(name)
    }

    /// Whether two names are one person's: equal but for letter case (`alice`, `Alice`;
    /// `Straße`, `STRASSE`; a final `ς` and `Σ`) and for how Unicode spells a letter (a
    /// precomposed `é` and `e` with a combining accent; the ligature `ﬁ` and `fi`; full-width
    /// `ａ` and `a`: compatibility decomposition, NFKD). The gate's rules compare names this
    /// way, so neither a case slip nor another encoding of one name (as tools that decompose
    /// accents write it) lets an author approve their own work or counts one reviewer twice.
    pub fn same_person(&self, other: &Actor) -> bool {
        self.0 == other.0 || folded(&self.0).eq(folded(&other.0))
    }

    /// The name as [`Actor::same_person`] compares it: two names are one person's exactly
    /// when their `person` is equal (a key for whatever is counted per person).
    pub fn person(&self) -> String {
        folded(&self.0).collect()
    }
}

/// Decomposed (NFKD), then lower case, then upper case, letter by letter: the encodings of
/// one letter meet in its decomposition, both spellings of a letter whose lower case depends
/// on its place (σ, ς) meet in one upper case, and so do letters whose upper case is two
/// (ß, SS).
fn folded(name: &str) -> impl Iterator<Item = char> + '_ {
    name.nfkd()
        .flat_map(char::to_lowercase)
        .flat_map(char::to_uppercase)
}

/// Lower case, then upper case, letter by letter (as [`folded`], without the decomposition).
fn case_folded(name: &str) -> impl Iterator<Item = char> + '_ {
    name.chars()
        .flat_map(char::to_lowercase)
        .flat_map(char::to_uppercase)
}

/// Characters that show nothing (inclusive ranges): the soft hyphen, zero-width spaces and
/// joiners, direction marks and overrides, invisible operators, fillers, the blank Braille
/// pattern, variation selectors, the byte-order mark — Unicode's default-ignorable characters
/// of the Basic Multilingual Plane, U+2800, and the interlinear annotation marks
/// U+FFF9–U+FFFB with the unassigned U+FFF0–U+FFF8 before them (format characters that most
/// fonts draw as nothing). Names given now may not hold them; text made only of them and white
/// space is blank. Not a guard against every look-alike: letters of
/// different scripts that look alike (a Cyrillic `а`, a Latin `a`) are different names, and
/// the planes beyond the first are not checked (the API's document states the rule as a
/// pattern, which spells characters of the first plane only).
pub const INVISIBLE: &[(char, char)] = &[
    ('\u{00ad}', '\u{00ad}'),
    ('\u{034f}', '\u{034f}'),
    ('\u{061c}', '\u{061c}'),
    ('\u{115f}', '\u{1160}'),
    ('\u{17b4}', '\u{17b5}'),
    ('\u{180b}', '\u{180f}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{206f}'),
    ('\u{2800}', '\u{2800}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{fe00}', '\u{fe0f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{ffa0}', '\u{ffa0}'),
    ('\u{fff0}', '\u{fffb}'),
];

/// Whether `c` is one of the [`INVISIBLE`] characters.
pub fn is_invisible(c: char) -> bool {
    INVISIBLE.iter().any(|&(from, to)| (from..=to).contains(&c))
}

/// Whether `text` says nothing: only white space and [`INVISIBLE`] characters (a reason
/// of a zero-width space is no reason).
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || is_invisible(c))
}

validated_string!(
    /// Why a transition was triggered: at most 10 000 characters.
    Reason,
    "reason",
    check_reason
);

validated_string!(
    /// The expert area a question is routed to (`architecture`, `security`, …): 1–64
    /// characters of `a-z A-Z 0-9 _ -`, so it can stand in a URL path as it is. Whether the
    /// Agent Hub knows the topic is the hub's to say.
    Topic,
    "topic",
    check_topic
);

validated_string!(
    /// A question for the Agent Hub's experts: 10–10 000 characters (at least 10 besides
    /// surrounding whitespace), free text.
    Question,
    "question",
    check_question
);

/// Longest topic, in characters.
pub const TOPIC_MAX_CHARS: usize = 64;
/// Shortest question the hub accepts, in characters.
pub const QUESTION_MIN_CHARS: usize = 10;
/// Longest question, in characters.
pub const QUESTION_MAX_CHARS: usize = 10_000;

/// Longest feature id, in characters.
pub const FEATURE_ID_MAX_CHARS: usize = 128;
/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
/// Longest actor, in characters.
pub const ACTOR_MAX_CHARS: usize = 128;
/// Longest reason, in characters.
pub const REASON_MAX_CHARS: usize = 10_000;
/// Largest metadata object, in bytes of compact JSON.
pub const METADATA_MAX_BYTES: usize = 64 * 1024;
/// How deep metadata given now may nest (the object itself is level 1): answers carry it a
/// few levels deeper, and JSON readers commonly stop at 128 levels (serde_json does).
pub const METADATA_MAX_DEPTH: usize = 32;

fn check_feature_id(value: &str) -> Result<(), String> {
    let rule = || {
        format!(
            "must be 1-{FEATURE_ID_MAX_CHARS} characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    };
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    // All accepted characters are ASCII, so the byte length is the character count.
    if first_ok && all_ok && value.len() <= FEATURE_ID_MAX_CHARS {
        Ok(())
    } else {
        Err(rule())
    }
}

fn check_topic(value: &str) -> Result<(), String> {
    let ok = (1..=TOPIC_MAX_CHARS).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 1-{TOPIC_MAX_CHARS} characters of a-z A-Z 0-9 _ -"
        ))
    }
}

fn check_question(value: &str) -> Result<(), String> {
    let chars = value.chars().count();
    if value.trim().chars().count() < QUESTION_MIN_CHARS || chars > QUESTION_MAX_CHARS {
        return Err(format!(
            "must be {QUESTION_MIN_CHARS}-{QUESTION_MAX_CHARS} characters"
        ));
    }
    check_text(value, QUESTION_MAX_CHARS)
}

fn check_description(value: &str) -> Result<(), String> {
    if is_blank(value) {
        return Err("must not be blank".to_owned());
    }
    check_text(value, DESCRIPTION_MAX_CHARS)
}

fn check_actor(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    check_max_chars(value, ACTOR_MAX_CHARS)
}

fn check_reason(value: &str) -> Result<(), String> {
    check_text(value, REASON_MAX_CHARS)
}

/// The rule of free text (descriptions, reasons, questions): at most `max` characters, and no
/// control characters but tab, line feed and carriage return. NUL in particular: PostgreSQL
/// cannot store it in text, so no back end may accept it.
pub fn check_text(value: &str, max: usize) -> Result<(), String> {
    if value.chars().any(is_forbidden_control) {
        return Err(
            "must not contain control characters other than tab, line feed and carriage return"
                .to_owned(),
        );
    }
    check_max_chars(value, max)
}

/// A control character free text may not hold (all but `\t`, `\n`, `\r`).
fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Text from elsewhere (the Agent Hub's answers) made fit to keep: each control character
/// [`check_text`] refuses becomes U+FFFD, so a NUL cannot make the text unstorable.
pub fn scrub_text(text: String) -> String {
    if text.chars().any(is_forbidden_control) {
        text.chars()
            .map(|c| {
                if is_forbidden_control(c) {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect()
    } else {
        text
    }
}

fn check_max_chars(value: &str, max: usize) -> Result<(), String> {
    // Cheap byte check first: a string of at most `max` bytes has at most `max` characters.
    if value.len() <= max || value.chars().count() <= max {
        Ok(())
    } else {
        Err(format!("must be at most {max} characters"))
    }
}

/// How much of a value given a refusal quotes back: enough to recognise it, not a whole body.
const SHOWN_CHARS: usize = 64;

/// `value` as an error quotes it: its first 64 characters, and `…` when there were more.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// Free-form data attached to a workflow or a transition: a JSON object of at most 64 KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = Object))]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// Parses a JSON value: it must be an object of at most 64 KiB serialised. `null` is the
    /// empty object, so an explicit `"metadata": null` means "none".
    pub fn parse(value: Value) -> Result<Self, ValidationError> {
        let map = match value {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return Err(ValidationError::new("metadata", "must be a JSON object")),
        };
        let size = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > METADATA_MAX_BYTES {
            return Err(ValidationError::new(
                "metadata",
                format!("must be at most {METADATA_MAX_BYTES} bytes serialised, is {size}"),
            ));
        }
        Ok(Metadata(map))
    }

    /// Parses metadata given now (a request's): the rule of [`Metadata::parse`], and nested at
    /// most [`METADATA_MAX_DEPTH`] levels. Metadata kept earlier is read with
    /// [`Metadata::parse`], so a deeper object an earlier version kept still reads.
    pub fn parse_given(value: Value) -> Result<Self, ValidationError> {
        let metadata = Metadata::parse(value)?;
        metadata.check_given()?;
        Ok(metadata)
    }

    /// Whether this metadata may be given now: nested at most [`METADATA_MAX_DEPTH`] levels
    /// (the orchestrator checks metadata a command carries so, however it was made).
    pub fn check_given(&self) -> Result<(), ValidationError> {
        let depth = 1 + self.0.values().map(depth).max().unwrap_or(0);
        if depth > METADATA_MAX_DEPTH {
            return Err(ValidationError::new(
                "metadata",
                format!("must nest at most {METADATA_MAX_DEPTH} levels, nests {depth}"),
            ));
        }
        Ok(())
    }

    /// The object's entries.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Whether the object has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How many levels of objects and arrays `value` nests (0 for a scalar).
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl TryFrom<Value> for Metadata {
    type Error = ValidationError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Metadata::parse(value)
    }
}

impl From<Metadata> for Value {
    fn from(value: Metadata) -> Value {
        Value::Object(value.0)
    }
}

/// Parses an optional text field: absent stays absent, present must obey the rule.
pub fn parse_optional<T>(
    value: Option<String>,
    parse: impl FnOnce(String) -> Result<T, ValidationError>,
) -> Result<Option<T>, ValidationError> {
    value.map(parse).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_persons_names_have_one_person_key() {
        let names = [
            "alice",
            "Alice",
            "ALICE",
            "Straße",
            "STRASSE",
            "ΟΔΥΣΣΕΥΣ",
            "οδυσσευς",
            "bob",
        ];
        for a in names {
            for b in names {
                let (a, b) = (Actor::parse(a).unwrap(), Actor::parse(b).unwrap());
                assert_eq!(a.same_person(&b), a.person() == b.person(), "{a:?} {b:?}");
            }
        }
        let alice = Actor::parse("alice").unwrap();
        assert_eq!(alice.person(), Actor::parse("ALICE").unwrap().person());
    }
    use serde_json::json;

    #[test]
    fn a_typical_feature_id_is_accepted() {
        for id in [
            "008-services-architecture",
            "a",
            "A.b_c-9",
            &"x".repeat(128),
        ] {
            assert_eq!(FeatureId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn a_feature_id_breaking_a_rule_is_rejected_naming_the_field() {
        let too_long = "x".repeat(129);
        for id in [
            "",
            "-abc",
            ".abc",
            "_abc",
            "a b",
            "a/b",
            "é",
            too_long.as_str(),
            "a\n",
        ] {
            let err = FeatureId::parse(id).unwrap_err();
            assert_eq!(err.field, "feature_id", "{id:?}");
        }
    }

    #[test]
    fn a_blank_description_is_rejected() {
        assert_eq!(
            Description::parse("  \n\t").unwrap_err().field,
            "description"
        );
        assert!(Description::parse("").is_err());
    }

    #[test]
    fn a_description_is_limited_to_ten_thousand_characters_not_bytes() {
        assert!(Description::parse("é".repeat(10_000)).is_ok());
        assert!(Description::parse("é".repeat(10_001)).is_err());
    }

    #[test]
    fn actor_and_reason_have_their_own_limits() {
        let same = |a: &str, b: &str| {
            Actor::parse(a)
                .unwrap()
                .same_person(&Actor::parse(b).unwrap())
        };
        assert!(same("Alice", "alice"));
        assert!(same("ΟΔΥΣΣΕΑΣ", "οδυσσεας"));
        assert!(same("Straße", "STRASSE"));
        assert!(!same("alice", "alicia"));
        assert!(Actor::parse("a".repeat(128)).is_ok());
        assert_eq!(Actor::parse("a".repeat(129)).unwrap_err().field, "actor");
        assert!(Reason::parse("r".repeat(10_000)).is_ok());
        assert_eq!(
            Reason::parse("r".repeat(10_001)).unwrap_err().field,
            "reason"
        );
    }

    #[test]
    fn a_name_given_now_must_not_be_blank() {
        for blank in ["", " ", "\u{a0}", "\u{feff}", "\u{3000} "] {
            assert_eq!(
                Actor::parse_name(blank).unwrap_err().rule,
                "must not be blank"
            );
            assert!(Actor::parse(blank).is_ok(), "stored names still read");
        }
        assert_eq!(Actor::parse_name("alice").unwrap().as_str(), "alice");
        assert_eq!(
            Actor::parse_name(" alice\u{feff}\u{3000}")
                .unwrap()
                .as_str(),
            "alice"
        );
        // A control character is refused, around the name too; the length is the given one's.
        assert!(Actor::parse_name("alice\t").is_err());
        assert!(Actor::parse_name(format!(" {}", "a".repeat(128))).is_err());
        assert_eq!(
            Actor::parse_name("Alice Smith").unwrap().as_str(),
            "Alice Smith"
        );
        assert!(Actor::parse_name("a".repeat(129)).is_err());
        // Nobody's decision reads as the orchestrator's own; a stored one still reads.
        for taken in ["system", "System", " SYSTEM "] {
            assert!(
                Actor::parse_name(taken)
                    .unwrap_err()
                    .rule
                    .contains("kept for the orchestrator's own decisions"),
                "{taken}"
            );
        }
        assert_eq!(Actor::parse_name("systems").unwrap().as_str(), "systems");
        // By case alone, as the API's document states it: ſ is an s in upper case; full-width
        // letters are another encoding, which the document's pattern cannot name.
        assert!(Actor::parse_name("ſyſtem").is_err());
        assert!(Actor::parse_name("\u{ff53}ystem").is_ok());
        assert!(Actor::parse("system").is_ok());
        // Invisible characters in a name would make a second person who looks like the first.
        for hidden in [
            "alice\u{200b}",
            "\u{200d}alice",
            "al\u{feff}ice",
            "\u{202e}ecila",
            "a\u{ad}lice",
        ] {
            assert!(
                Actor::parse_name(hidden)
                    .unwrap_err()
                    .rule
                    .contains("invisible"),
                "{hidden:?}"
            );
            assert!(Actor::parse(hidden).is_ok(), "stored names still read");
        }
        assert_eq!(
            Actor::parse_name("\u{200b}").unwrap_err().rule,
            "must not contain invisible characters (zero-width, joiners, direction marks, soft hyphen)"
        );
    }

    #[test]
    fn names_are_one_person_whatever_their_case_and_encoding() {
        let name = |n: &str| Actor::parse(n).unwrap();
        assert!(name("alice").same_person(&name("Alice")));
        assert!(name("ÉLODIE").same_person(&name("élodie")));
        assert!(!name("alice").same_person(&name("alicia")));
        assert!(!name("alice").same_person(&name("alice ")));
        // One name, encoded another way: precomposed or with a combining accent (as tools
        // that decompose accents write it), a ligature, full-width letters.
        for (one, other) in [
            ("jos\u{e9}", "jose\u{301}"),
            ("JOSE\u{301}", "jos\u{e9}"),
            ("\u{fb01}ona", "fiona"),
            ("\u{ff41}lice", "alice"),
        ] {
            assert!(name(one).same_person(&name(other)), "{one} {other}");
            assert_eq!(name(one).person(), name(other).person());
        }
        assert!(!name("jose").same_person(&name("jos\u{e9}")));
        assert!(
            !name("\u{430}lice").same_person(&name("alice")),
            "Cyrillic а"
        );
    }

    #[test]
    fn scrubbed_text_holds_no_control_character_text_may_not() {
        assert_eq!(
            scrub_text("a\0b\u{7}c\td\r\ne".to_owned()),
            "a\u{fffd}b\u{fffd}c\td\r\ne"
        );
        let clean = "nothing to do: é\n".to_owned();
        assert_eq!(scrub_text(clean.clone()), clean);
        assert!(check_text(&scrub_text("\0\u{85}".to_owned()), 10).is_ok());
    }

    #[test]
    fn blank_text_is_white_space_and_invisible_characters() {
        for blank in [
            "",
            " \n",
            "\u{200b}",
            "\u{feff}\u{2060} ",
            "\u{ad}",
            "\u{fe0f}",
            "\u{2800}",
            "\u{fff9}\u{fffb}",
            "\u{fff0}",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in ["no", " \u{200b}x", "é"] {
            assert!(!is_blank(text), "{text:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_in_text_and_names() {
        for bad in ["a\0b", "nul\u{0}", "bell\u{7}", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(Description::parse(bad).unwrap_err().field, "description");
            assert_eq!(Reason::parse(bad).unwrap_err().field, "reason");
            assert_eq!(Actor::parse(bad).unwrap_err().field, "actor");
        }
        assert!(Description::parse("line one\n\tline two\r\n").is_ok());
        assert!(Reason::parse("tab\there").is_ok());
        assert!(Actor::parse("tab\there").is_err());
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(Metadata::parse(json!({"k": [1, 2]})).is_ok());
        assert!(Metadata::parse(Value::Null).unwrap().is_empty());
        for bad in [json!([1]), json!("x"), json!(3), json!(true)] {
            assert_eq!(Metadata::parse(bad).unwrap_err().field, "metadata");
        }
    }

    #[test]
    fn metadata_is_limited_to_sixty_four_kibibytes_serialised() {
        // {"k":"…"} is 8 bytes of framing around the string.
        let fits = json!({ "k": "x".repeat(METADATA_MAX_BYTES - 8) });
        let over = json!({ "k": "x".repeat(METADATA_MAX_BYTES - 7) });
        assert!(Metadata::parse(fits).is_ok());
        assert!(Metadata::parse(over).is_err());
    }

    #[test]
    fn a_refusal_quotes_at_most_sixty_four_characters_of_a_value() {
        assert_eq!(shown("cancel"), "cancel");
        assert_eq!(shown(&"é".repeat(64)), "é".repeat(64));
        assert_eq!(shown(&"é".repeat(65)), format!("{}…", "é".repeat(64)));
        let refused = "x".repeat(100_000).parse::<crate::Trigger>().unwrap_err();
        assert!(refused.to_string().len() < 200, "{refused}");
    }

    #[test]
    fn metadata_given_now_nests_at_most_thirty_two_levels() {
        let nested = |levels: usize| {
            let mut value = json!(1);
            for _ in 0..levels {
                value = json!({ "k": value });
            }
            value
        };
        assert!(Metadata::parse_given(nested(METADATA_MAX_DEPTH)).is_ok());
        let deep = Metadata::parse_given(nested(METADATA_MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(deep.field, "metadata");
        assert!(deep.rule.contains("nests 33"), "{}", deep.rule);
        // An array is a level too.
        let in_array = json!({ "k": [nested(METADATA_MAX_DEPTH - 1)] });
        assert!(Metadata::parse_given(in_array).is_err());
        // Kept earlier, a deeper object still reads.
        assert!(Metadata::parse(nested(METADATA_MAX_DEPTH + 10)).is_ok());
    }

    #[test]
    fn deserialising_a_value_checks_its_rule() {
        assert!(serde_json::from_str::<FeatureId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<FeatureId>("\"not ok\"").is_err());
        assert!(serde_json::from_str::<Metadata>("[]").is_err());
    }
}
