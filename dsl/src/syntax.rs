//! The `.flow` front end: a pest grammar (`flow.pest`) and a builder from its parse tree into
//! the same [`FlowDoc`] the YAML form produces.

use pest::Parser;
use pest::error::InputLocation;
use pest::iterators::Pair;

use crate::ast::{
    Action, AuthRef, Entries, FlowDoc, Invariant, JitCreate, JitPrompt, JitRule, LockUser, Next,
    ProvisioningTrigger, Register, StateDef, Step,
};
use crate::diagnostic::{Code, Diagnostic};
use crate::span::{Span, Spanned};

mod grammar {
    #![allow(missing_docs)]
    //! The parser pest generates from `flow.pest`.
    use pest_derive::Parser;

    #[derive(Parser)]
    #[grammar = "flow.pest"]
    pub struct FlowParser;
}

use grammar::{FlowParser, Rule};

/// Parses the `.flow` form. Syntax errors stop the parse (one diagnostic); errors found while
/// building (a number too large, an unknown prompt) are collected and returned beside the AST.
pub fn parse(text: &str) -> Result<(FlowDoc, Vec<Diagnostic>), Diagnostic> {
    let mut pairs = FlowParser::parse(Rule::file, text).map_err(|error| {
        let span = match error.location {
            InputLocation::Pos(p) => Span::new(p, p),
            InputLocation::Span((s, e)) => Span::new(s, e),
        };
        Diagnostic::error(Code::Syntax, span, syntax_message(&error.variant))
    })?;
    let mut builder = Builder::default();
    let flow = pairs
        .next()
        .and_then(|file| file.into_inner().find(|p| p.as_rule() == Rule::flow))
        .ok_or_else(|| Diagnostic::error(Code::Syntax, None, "expected `flow NAME { ... }`"))?;
    let doc = builder.flow(flow);
    Ok((doc, builder.diagnostics))
}

fn syntax_message(variant: &pest::error::ErrorVariant<Rule>) -> String {
    match variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut expected: Vec<String> = positives.iter().map(|r| describe(*r)).collect();
            expected.sort();
            expected.dedup();
            match expected.len() {
                0 => "unexpected input".to_string(),
                1 => format!("expected {}", expected[0]),
                _ => {
                    let last = expected.pop().unwrap_or_default();
                    format!("expected {} or {}", expected.join(", "), last)
                }
            }
        }
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    }
}

fn describe(rule: Rule) -> String {
    let name = format!("{rule:?}");
    if let Some(keyword) = name.strip_prefix("kw_") {
        return format!("`{keyword}`");
    }
    match rule {
        Rule::id => "a name".into(),
        Rule::number => "a number".into(),
        Rule::string => "a \"string\"".into(),
        Rule::script => "a `script`".into(),
        Rule::duration => "a duration such as 15m".into(),
        Rule::EOI => "end of file".into(),
        Rule::open => "`{`".into(),
        Rule::close => "`}`".into(),
        Rule::auth_ref => "an authenticator".into(),
        Rule::label_map | Rule::label_arrow => "`label -> state`".into(),
        _ => format!("`{}`", name.replace('_', " ")),
    }
}

#[derive(Default)]
struct Builder {
    diagnostics: Vec<Diagnostic>,
}

fn span_of(pair: &Pair<Rule>) -> Span {
    Span::new(pair.as_span().start(), pair.as_span().end())
}

fn text(pair: &Pair<Rule>) -> Spanned<String> {
    Spanned::new(pair.as_str().to_string(), span_of(pair))
}

/// The inner pairs that carry meaning (keywords are atomic tokens we skip).
fn parts<'a>(pair: Pair<'a, Rule>) -> impl Iterator<Item = Pair<'a, Rule>> {
    pair.into_inner().filter(|p| {
        !matches!(p.as_rule(), Rule::open | Rule::close)
            && !format!("{:?}", p.as_rule()).starts_with("kw_")
    })
}

/// The text of a script or string token, without its delimiters.
fn body(pair: &Pair<Rule>) -> Spanned<String> {
    match pair.clone().into_inner().next() {
        Some(inner) => Spanned::new(unescape(pair.as_rule(), inner.as_str()), span_of(pair)),
        None => Spanned::new(String::new(), span_of(pair)),
    }
}

fn unescape(rule: Rule, raw: &str) -> String {
    if rule != Rule::string {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Builder {
    /// Records `item`'s kind in `seen`; a second field of one kind is an error (as a repeated
    /// key is in YAML) and returns false.
    fn once(&mut self, seen: &mut Vec<Rule>, item: &Pair<Rule>) -> bool {
        let rule = item.as_rule();
        if seen.contains(&rule) {
            let keyword = item.as_str().split_whitespace().next().unwrap_or_default();
            self.diagnostics.push(Diagnostic::error(
                Code::Shape,
                span_of(item),
                format!("`{keyword}` is given twice"),
            ));
            return false;
        }
        seen.push(rule);
        true
    }

    fn number(&mut self, pair: &Pair<Rule>) -> Spanned<u32> {
        let value = pair.as_str().parse::<u32>().unwrap_or_else(|_| {
            self.diagnostics.push(Diagnostic::error(
                Code::OutOfRange,
                span_of(pair),
                format!("{} is too large", pair.as_str()),
            ));
            1
        });
        Spanned::new(value, span_of(pair))
    }

    fn flow(&mut self, pair: Pair<Rule>) -> FlowDoc {
        let mut items = parts(pair);
        let flow = items
            .next()
            .map(|p| text(&p))
            .unwrap_or_else(|| Spanned::new(String::new(), Span::default()));
        let mut doc = FlowDoc {
            flow,
            description: None,
            applies_to: Vec::new(),
            default: false,
            steps: None,
            start: None,
            states: None,
            on_success: Vec::new(),
            on_failure: Vec::new(),
            require: Vec::new(),
            jit: Vec::new(),
            provisioning: Vec::new(),
        };
        let mut seen = Vec::new();
        for item in items {
            let single = matches!(
                item.as_rule(),
                Rule::applies_to | Rule::default_flag | Rule::start
            );
            if single && !self.once(&mut seen, &item) {
                continue;
            }
            match item.as_rule() {
                Rule::string => doc.description = Some(body(&item).value),
                Rule::applies_to => doc.applies_to.extend(parts(item).map(|p| text(&p))),
                Rule::default_flag => doc.default = true,
                Rule::start => doc.start = parts(item).next().map(|p| text(&p)),
                Rule::step => {
                    let step = self.step(item);
                    doc.steps.get_or_insert_with(Vec::new).push(step);
                }
                Rule::state => {
                    let (id, state) = self.state(item);
                    doc.states
                        .get_or_insert_with(Entries::default)
                        .0
                        .push((id, state));
                }
                Rule::on_success => doc.on_success.extend(parts(item).map(|p| self.action(p))),
                Rule::on_failure => doc.on_failure.extend(parts(item).map(|p| self.action(p))),
                Rule::require => {
                    let span = span_of(&item);
                    let options = parts(item).map(|p| auth_ref(p)).collect();
                    doc.require
                        .push(Spanned::new(Invariant::PassesOneOf(options), span));
                }
                Rule::jit => doc.jit.push(self.jit(item)),
                Rule::provisioning => {
                    let mut names: Vec<Spanned<String>> = parts(item).map(|p| text(&p)).collect();
                    if let Some(to) = names.pop() {
                        doc.provisioning.push(ProvisioningTrigger { on: names, to });
                    }
                }
                _ => {}
            }
        }
        doc
    }

    fn step(&mut self, pair: Pair<Rule>) -> Step {
        let mut items = parts(pair);
        let id = items
            .next()
            .map(|p| text(&p))
            .unwrap_or_else(|| Spanned::new(String::new(), Span::default()));
        let mut step = Step {
            id,
            when: None,
            authenticate: Vec::new(),
            enroll: Vec::new(),
            register: None,
            attempts: None,
        };
        let mut seen = Vec::new();
        for item in items {
            if !self.once(&mut seen, &item) {
                continue;
            }
            match item.as_rule() {
                Rule::when => step.when = parts(item).next().map(|p| body(&p)),
                Rule::authenticate => step.authenticate.extend(parts(item).map(auth_ref)),
                Rule::enroll => step.enroll.extend(parts(item).map(auth_ref)),
                Rule::register => step.register = Some(self.register(item)),
                Rule::attempts => step.attempts = parts(item).next().map(|p| self.number(&p)),
                _ => {}
            }
        }
        step
    }

    fn state(&mut self, pair: Pair<Rule>) -> (Spanned<String>, StateDef) {
        let mut items = parts(pair);
        let id = items
            .next()
            .map(|p| text(&p))
            .unwrap_or_else(|| Spanned::new(String::new(), Span::default()));
        let mut state = StateDef::default();
        let mut seen = Vec::new();
        for item in items {
            if !self.once(&mut seen, &item) {
                continue;
            }
            let span = span_of(&item);
            match item.as_rule() {
                Rule::authenticate => state
                    .authenticate
                    .get_or_insert_with(Vec::new)
                    .extend(parts(item).map(auth_ref)),
                Rule::enroll => state
                    .enroll
                    .get_or_insert_with(Vec::new)
                    .extend(parts(item).map(auth_ref)),
                Rule::register => state.register = Some(self.register(item)),
                Rule::attempts => state.attempts = parts(item).next().map(|p| self.number(&p)),
                Rule::decide => state.decide = parts(item).next().map(|p| body(&p)),
                Rule::do_block => {
                    let actions: Vec<_> = parts(item).map(|p| self.action(p)).collect();
                    state.actions.get_or_insert_with(Vec::new).extend(actions);
                }
                Rule::deny => state.deny = parts(item).next().map(|p| body(&p)),
                Rule::next => {
                    let Some(target) = parts(item).next() else {
                        continue;
                    };
                    let next = if target.as_rule() == Rule::label_map {
                        let entries = parts(target)
                            .filter_map(|arrow| {
                                let mut ids = parts(arrow);
                                let label = text(&ids.next()?);
                                let to = ids.next()?.as_str().to_string();
                                Some((label, to))
                            })
                            .collect();
                        Next::ByLabel(Entries(entries))
                    } else {
                        Next::To(target.as_str().to_string())
                    };
                    state.next = Some(Spanned::new(next, span));
                }
                Rule::fail => state.fail = parts(item).next().map(|p| text(&p)),
                Rule::visits => state.visits = parts(item).next().map(|p| self.number(&p)),
                _ => {}
            }
        }
        (id, state)
    }

    fn action(&mut self, pair: Pair<Rule>) -> Spanned<Action> {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut items = parts(pair);
        let first = items.next();
        let name = || {
            first
                .as_ref()
                .map(text)
                .unwrap_or_else(|| Spanned::new(String::new(), span))
        };
        let action = match rule {
            Rule::provision => Action::Provision(name()),
            Rule::jit_action => Action::Jit(name()),
            Rule::set_claim => {
                let script = items
                    .next()
                    .map(|p| body(&p))
                    .unwrap_or_else(|| Spanned::new(String::new(), span));
                Action::SetClaim(Entries(vec![(name(), script)]))
            }
            _ => {
                let after = first
                    .as_ref()
                    .map(|p| self.number(p))
                    .unwrap_or_else(|| Spanned::new(0, span));
                let duration = items
                    .next()
                    .map(|p| text(&p))
                    .unwrap_or_else(|| Spanned::new(String::new(), span));
                Action::LockUser(LockUser { after, duration })
            }
        };
        Spanned::new(action, span)
    }

    fn jit(&mut self, pair: Pair<Rule>) -> JitRule {
        let mut items = parts(pair);
        let idp = items
            .next()
            .map(|p| text(&p))
            .unwrap_or_else(|| Spanned::new(String::new(), Span::default()));
        let mut rule = JitRule {
            idp,
            when: None,
            match_on: None,
            create: None,
            prompt: Vec::new(),
        };
        let mut seen = Vec::new();
        for item in items {
            if item.as_rule() != Rule::prompt && !self.once(&mut seen, &item) {
                continue;
            }
            match item.as_rule() {
                Rule::when => rule.when = parts(item).next().map(|p| body(&p)),
                Rule::jit_match => rule.match_on = parts(item).next().map(|p| text(&p)),
                Rule::create => rule.create = Some(self.create(item)),
                Rule::prompt => {
                    for p in parts(item) {
                        match prompt_kind(p.as_str()) {
                            Some(kind) => rule.prompt.push(Spanned::new(kind, span_of(&p))),
                            None => self.diagnostics.push(
                                Diagnostic::error(
                                    Code::Shape,
                                    span_of(&p),
                                    format!("unknown prompt `{}`", p.as_str()),
                                )
                                .with_hint("prompts are consent, username and password"),
                            ),
                        }
                    }
                }
                _ => {}
            }
        }
        rule
    }

    fn create(&mut self, pair: Pair<Rule>) -> JitCreate {
        let span = span_of(&pair);
        let mut create = JitCreate {
            username: Spanned::new(String::new(), span),
            attributes: Entries::default(),
            roles: Vec::new(),
        };
        let mut seen = Vec::new();
        for item in parts(pair) {
            if item.as_rule() == Rule::username && !self.once(&mut seen, &item) {
                continue;
            }
            match item.as_rule() {
                Rule::username => {
                    if let Some(p) = parts(item).next() {
                        create.username = body(&p);
                    }
                }
                Rule::attribute => {
                    let mut ps = parts(item);
                    if let (Some(name), Some(script)) = (ps.next(), ps.next()) {
                        create.attributes.0.push((text(&name), body(&script)));
                    }
                }
                Rule::roles => create.roles.extend(parts(item).map(|p| text(&p))),
                _ => {}
            }
        }
        create
    }

    fn register(&mut self, pair: Pair<Rule>) -> Spanned<Register> {
        let span = span_of(&pair);
        let mut register = Register::default();
        let mut seen = Vec::new();
        for item in parts(pair) {
            if !self.once(&mut seen, &item) {
                continue;
            }
            match item.as_rule() {
                Rule::attributes => register.attributes.extend(parts(item).map(|p| text(&p))),
                Rule::verify_email => register.verify_email = true,
                Rule::approval => register.approval = true,
                Rule::roles => register.roles.extend(parts(item).map(|p| text(&p))),
                _ => {}
            }
        }
        Spanned::new(register, span)
    }
}

fn auth_ref(pair: Pair<Rule>) -> Spanned<AuthRef> {
    let span = span_of(&pair);
    let inner = parts(pair).next();
    let value = match inner {
        Some(p) if p.as_rule() == Rule::federated => AuthRef::Federated {
            federated: parts(p)
                .next()
                .map(|i| i.as_str().to_string())
                .unwrap_or_default(),
        },
        Some(p) => AuthRef::Builtin(p.as_str().to_string()),
        None => AuthRef::Builtin(String::new()),
    };
    Spanned::new(value, span)
}

fn prompt_kind(name: &str) -> Option<JitPrompt> {
    [JitPrompt::Consent, JitPrompt::Username, JitPrompt::Password]
        .into_iter()
        .find(|p| p.as_str() == name)
}
