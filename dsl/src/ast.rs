//! The one AST both front ends produce. Its types double as the YAML form's serde model and the
//! source of the JSON Schema (`idflow flow schema`), so the schema cannot drift from the parser.
//!
//! Every name and script carries a [`Spanned`] position so that later stages can point at it.
//! The AST is a faithful picture of what was written: no defaults are filled in and nothing is
//! validated beyond the shape; that is `lower`'s job.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::span::Spanned;

/// A whole flow file (the root of the YAML form, and of a `.flow` file).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "idflow flow",
    description = "An idflow login flow (YAML form)."
)]
pub struct FlowDoc {
    /// The flow's id: lowercase letters, digits, `_`, `-` and `.`.
    pub flow: Spanned<String>,
    /// What the flow is for, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Application ids whose logins this flow runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applies_to: Vec<Spanned<String>>,
    /// The flow for applications that no flow claims. At most one flow may be the default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// Step form: authentication steps run in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step>>,
    /// State form: the state to begin in (default: the first state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Spanned<String>>,
    /// State form: named states and their transitions. `success` and `deny` are the terminals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub states: Option<Entries<StateDef>>,
    /// Actions run when the flow succeeds, before the login completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<Spanned<Action>>,
    /// Actions run when the flow denies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Spanned<Action>>,
    /// Invariants every path to success must satisfy, checked by `flow check`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<Spanned<Invariant>>,
    /// Just-in-time provisioning rules for users arriving from federated identity providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jit: Vec<JitRule>,
    /// Outbound provisioning triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisioning: Vec<ProvisioningTrigger>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One step of the step form: authenticate with one of several options.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's id, unique in the flow.
    pub id: Spanned<String>,
    /// A Rhai condition; when it is false the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Spanned<String>>,
    /// The options the user may choose from; any one of them passes the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authenticate: Vec<Spanned<AuthRef>>,
    /// Instead of `authenticate`: have the identified user enroll one of these factors now
    /// (`totp`, `passkey`), proving it with a first use, like a required action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enroll: Vec<Spanned<AuthRef>>,
    /// Instead of `authenticate`: let a person who has no account create one (self sign-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<Spanned<Register>>,
    /// How many tries the user gets before the step fails (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Spanned<u32>>,
}

/// What a `register` step asks and does. The page always asks for a username, an email
/// address and a password (checked against the password policy); these settings add to that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Profile attributes the page asks for as well, all required (e.g. `name`, `given_name`,
    /// `family_name`, `phone_number`); stored as the user's attributes, `name` as the display
    /// name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Spanned<String>>,
    /// Email a code to the address and create the account only once it is typed back; the
    /// address is then stored as verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verify_email: bool,
    /// Create the account disabled: the person cannot sign in until an administrator enables
    /// it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub approval: bool,
    /// Roles the new account gets. A role that grants privileges is refused at run time: a
    /// stranger must never be able to sign themselves up into one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Spanned<String>>,
}

/// One state of the state form. Exactly one of `authenticate`, `enroll`, `register`, `decide`,
/// `do` and `deny`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateDef {
    /// Authenticate with one of these options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticate: Option<Vec<Spanned<AuthRef>>>,
    /// Have the identified user enroll one of these factors (`totp`, `passkey`) now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enroll: Option<Vec<Spanned<AuthRef>>>,
    /// Let a person who has no account create one (self sign-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<Spanned<Register>>,
    /// For `authenticate`, `enroll` and `register`: how many tries before `fail` (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Spanned<u32>>,
    /// A Rhai script returning a label (a string, or a bool read as "true"/"false").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide: Option<Spanned<String>>,
    /// Actions to run, then go to `next`.
    #[serde(default, rename = "do", skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Spanned<Action>>>,
    /// Deny the login with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Spanned<String>>,
    /// How many times one login may enter this state; bounds cycles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visits: Option<Spanned<u32>>,
    /// Where to go next: a state id, or for `decide` a map from label to state id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Spanned<Next>>,
    /// For `authenticate`, `enroll` and `register`: where to go when the attempts are used up
    /// (default `deny`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<Spanned<String>>,
}

/// The `next` of a state: one target, or one target per label of a `decide`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Next {
    /// Go to this state.
    To(String),
    /// Go to the state named for the label the script returned.
    ByLabel(Entries<String>),
}

/// An authenticator option: a built-in name, or a federated identity provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum AuthRef {
    /// A built-in authenticator: password, totp, passkey, email_otp, identifier_first, recovery_code.
    Builtin(String),
    /// Log in at an upstream identity provider declared in the configuration.
    Federated {
        /// The identity provider's name.
        federated: String,
    },
}

impl fmt::Display for AuthRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthRef::Builtin(name) => f.write_str(name),
            AuthRef::Federated { federated } => write!(f, "federated({federated})"),
        }
    }
}

/// Something a flow does besides authenticating.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send the user to this provisioning target.
    Provision(Spanned<String>),
    /// Lock the user after this many consecutive failed logins.
    LockUser(LockUser),
    /// Set claims of the login from Rhai expressions.
    SetClaim(Entries<Spanned<String>>),
    /// Apply the flow's JIT rules for this identity provider now.
    Jit(Spanned<String>),
}

/// Parameters of `lock_user`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockUser {
    /// Consecutive failures that lock the user.
    pub after: Spanned<u32>,
    /// For how long, e.g. `15m`, `1h`, `30s`, `1d`.
    #[serde(rename = "for")]
    pub duration: Spanned<String>,
}

/// A property every path to success must have.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Invariant {
    /// Every path to success passes a step whose options are all among these.
    PassesOneOf(Vec<Spanned<AuthRef>>),
}

/// A just-in-time provisioning rule for users of one identity provider.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JitRule {
    /// The identity provider whose users this rule handles.
    pub idp: Spanned<String>,
    /// A Rhai condition over `claims`; the rule applies only when it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Spanned<String>>,
    /// Link to an existing local user whose attribute of this name equals the claim's.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_on: Option<Spanned<String>>,
    /// Create a local user when none matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<JitCreate>,
    /// What to ask the user before creating the account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt: Vec<Spanned<JitPrompt>>,
}

/// How a JIT rule creates a user.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JitCreate {
    /// A Rhai expression giving the username.
    pub username: Spanned<String>,
    /// User attributes, each from a Rhai expression.
    #[serde(default, skip_serializing_if = "Entries::is_empty")]
    pub attributes: Entries<Spanned<String>>,
    /// Roles the new user gets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Spanned<String>>,
}

/// A question put to a user before a JIT account is created.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JitPrompt {
    /// Ask the user to consent to the account.
    Consent,
    /// Let the user choose the username.
    Username,
    /// Let the user set a local password.
    Password,
}

impl JitPrompt {
    /// The keyword, as written in both forms.
    pub fn as_str(self) -> &'static str {
        match self {
            JitPrompt::Consent => "consent",
            JitPrompt::Username => "username",
            JitPrompt::Password => "password",
        }
    }
}

/// Outbound provisioning: on these events, send the user to this target.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningTrigger {
    /// Events, e.g. `user.created`, `role.assigned`.
    pub on: Vec<Spanned<String>>,
    /// A provisioning target declared in the configuration.
    pub to: Spanned<String>,
}

/// A YAML mapping read as an ordered list of entries, keeping duplicate keys (so that
/// `flow check` can report them with both positions instead of silently keeping one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entries<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<V> Entries<V> {
    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in written order.
    pub fn iter(&self) -> impl Iterator<Item = &(Spanned<String>, V)> {
        self.0.iter()
    }
}

/// Written by hand rather than derived as untagged: serde buffers untagged enums, which would
/// lose the positions of the labels.
impl<'de> Deserialize<'de> for Next {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NextVisitor;
        impl<'de> Visitor<'de> for NextVisitor {
            type Value = Next;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a state id, or a map from label to state id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Next, E> {
                Ok(Next::To(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Next, A::Error> {
                read_entries(map).map(Next::ByLabel)
            }
        }
        deserializer.deserialize_any(NextVisitor)
    }
}

fn read_entries<'de, V: Deserialize<'de>, A: MapAccess<'de>>(
    mut map: A,
) -> Result<Entries<V>, A::Error> {
    let mut entries = Vec::new();
    while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
        entries.push((Spanned::new(key.value.0, key.span), map.next_value::<V>()?));
    }
    Ok(Entries(entries))
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                read_entries(map)
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

impl<V: Serialize> Serialize for Entries<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(&key.value, value)?;
        }
        map.end()
    }
}

impl<V: JsonSchema> JsonSchema for Entries<V> {
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<V>();
        json_schema!({ "type": "object", "additionalProperties": value })
    }
}

/// A mapping key read as text even when YAML types it (`true:`, `1:`), so that the labels of a
/// boolean `decide` can be written unquoted.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}
