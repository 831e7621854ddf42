//! Property tests (idflow's fuzzing, on the stable toolchain): SAML messages as the IdP (and the
//! SP of an upstream IdP) receives them never panic a parser, a DOCTYPE never reaches one, and
//! nothing but the message its sender signed is ever accepted as signed.
//!
//! Inputs: arbitrary bytes and text in the HTTP-POST (base64) and HTTP-Redirect (base64 of raw
//! DEFLATE) bindings; XML-ish token soup; and real messages (an AuthnRequest unsigned and
//! signed, a LogoutRequest, a LogoutResponse, a signed Response, SP metadata) with random
//! edits: attributes dropped, duplicated or rewritten, elements repeated, DOCTYPE and ENTITY
//! declarations, entity references, deep nesting, signature-wrapping envelopes, and the text
//! re-encoded as UTF-16 or UTF-7. Redirect-binding queries signed by the SP are edited too.
//!
//! `IDFLOW_FUZZ_CASES=N` runs N cases per property (a longer run); failures are not persisted
//! to `proptest-regressions/`: a failure found becomes a named `regression_` test here.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use idflow_saml::idp::{AssertionSpec, Signing, signed_response};
use idflow_saml::request::{Request, parse_authn_request};
use idflow_saml::sp::{Expected, Verified, verify_response};
use idflow_saml::{Credential, SamlError, binding, logout, metadata, signature, uri};
use proptest::prelude::*;

/// Cases per property: `IDFLOW_FUZZ_CASES` when set, else `default` (which keeps this file to
/// some seconds in a debug build). No failure file: a failure becomes a named test.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("IDFLOW_FUZZ_CASES")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const NOW: u64 = 1_800_000_000;
const SP: &str = "https://sp.test/metadata";
const ACS: &str = "https://sp.test/acs";
const IDP: &str = "https://idp.test/saml2/metadata";
const SSO: &str = "https://idp.test/saml2/sso";

fn authn_request(id: &str, signature: &str) -> String {
    format!(
        concat!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" "#,
            r#"xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" "#,
            r#"IssueInstant="2027-01-15T08:00:00Z" Destination="{sso}" "#,
            r#"AssertionConsumerServiceURL="{acs}" ProtocolBinding="{post}" ForceAuthn="true">"#,
            r#"<saml:Issuer>{sp}</saml:Issuer>{signature}"#,
            r#"<samlp:NameIDPolicy Format="{persistent}" AllowCreate="true"/>"#,
            r#"<samlp:RequestedAuthnContext Comparison="exact">"#,
            r#"<saml:AuthnContextClassRef>{password}</saml:AuthnContextClassRef>"#,
            r#"</samlp:RequestedAuthnContext></samlp:AuthnRequest>"#,
        ),
        id = id,
        sso = SSO,
        acs = ACS,
        post = uri::POST,
        sp = SP,
        signature = signature,
        persistent = uri::PERSISTENT,
        password = uri::AC_PASSWORD,
    )
}

/// The messages the edits start from, the keys that sign them, and what the signed ones say.
struct Fixtures {
    /// The SP's key and certificates: it signs the AuthnRequest and the Redirect-binding
    /// queries.
    sp: Credential,
    sp_certificates: Vec<Vec<u8>>,
    /// The upstream IdP's key: it signs the Response.
    idp_certificates: Vec<Vec<u8>>,
    /// Messages as their senders made them; `signed_request` and `signed_response` are signed.
    seeds: Vec<String>,
    /// The signed AuthnRequest, and what it says.
    signed_request: String,
    signed_request_read: Request,
    /// The signed Response, and what it says.
    signed_response_read: Verified,
    /// Redirect-binding queries signed by the SP: with a RelayState, and without one.
    signed_queries: Vec<String>,
}

fn expected(certificates: &[Vec<u8>]) -> Expected<'_> {
    Expected {
        entity_id: SP,
        acs_url: ACS,
        idp_entity_id: IDP,
        idp_certificates: certificates,
        request_id: "_req1",
        skew: 60,
        now: NOW + 1,
    }
}

static FIXTURES: LazyLock<Fixtures> = LazyLock::new(|| {
    let sp = Credential::generate("sp.test").expect("sp key");
    let idp = Credential::generate("idp.test").expect("idp key");
    let sp_certificates = vec![sp.certificate_der().to_vec()];
    let idp_certificates = vec![idp.certificate_der().to_vec()];
    let unsigned_request = authn_request("_r1", "");
    let template = signature::template("_s1", &sp.certificate_base64());
    let signed_request = sp
        .sign_xml(&authn_request("_s1", &template))
        .expect("signed request");
    let signed_request_read =
        parse_authn_request(&signed_request, Some(&sp_certificates)).expect("the signed request");
    let logout_request = logout::logout_request(
        "_l1",
        SP,
        "https://idp.test/saml2/slo",
        "ann",
        uri::PERSISTENT,
        "_s1",
        NOW,
        NOW + 300,
    );
    let logout_response = logout::logout_response(
        "_l2",
        SP,
        "https://idp.test/saml2/slo",
        "_l0",
        (uri::SUCCESS, Some(uri::PARTIAL_LOGOUT)),
        NOW,
    );
    let attributes = vec![idflow_saml::idp::Attribute {
        name: "email".into(),
        name_format: uri::ATTRNAME_BASIC.into(),
        friendly_name: Some("mail".into()),
        values: vec!["ann@acme.example".into()],
    }];
    let spec = AssertionSpec {
        issuer: IDP,
        audience: SP,
        destination: ACS,
        in_response_to: Some("_req1"),
        name_id: "ann",
        name_id_format: uri::PERSISTENT,
        session_index: "_s1",
        authn_instant: NOW - 5,
        authn_context: uri::AC_PASSWORD,
        attributes: &attributes,
        now: NOW,
        lifetime: 300,
        session_ends: Some(NOW + 3600),
    };
    let signing = Signing {
        assertion: true,
        response: true,
    };
    let signed = signed_response(&idp, &spec, signing).expect("signed response");
    let signed_response_read =
        verify_response(&signed, &expected(&idp_certificates)).expect("the signed response");
    let sp_metadata = metadata::sp_metadata(SP, ACS, &sp.certificate_base64());
    let query = |relay_state: Option<&str>| {
        let url = binding::redirect_url(
            SSO,
            "SAMLRequest",
            &unsigned_request,
            relay_state,
            Some(&sp),
        )
        .expect("signed query");
        url.split_once('?').expect("a query").1.to_string()
    };
    let signed_queries = vec![query(Some("state 1")), query(None)];
    Fixtures {
        sp,
        seeds: vec![
            unsigned_request,
            signed_request.clone(),
            logout_request,
            logout_response,
            signed,
            sp_metadata,
        ],
        sp_certificates,
        idp_certificates,
        signed_request,
        signed_request_read,
        signed_response_read,
        signed_queries,
    }
});

/// Whether a parser that honoured this UTF-8 text would meet a DOCTYPE or an entity
/// declaration in it.
fn declares_doctype(xml: &str) -> bool {
    let lower = xml.to_ascii_lowercase();
    lower.contains("<!doctype") || lower.contains("<!entity")
}

/// Every reader of a decoded message, with the properties each must keep: a DOCTYPE is always
/// refused as one; a request or response is accepted as signed only if it is exactly what its
/// sender signed; what is read has an id and an issuer.
fn check_xml(xml: &str) -> Result<(), TestCaseError> {
    let f = &*FIXTURES;
    let unsigned = parse_authn_request(xml, None);
    let signed = parse_authn_request(xml, Some(&f.sp_certificates));
    let logout_request = logout::parse_logout_request(xml);
    let logout_response = logout::parse_logout_response(xml);
    let sp_metadata = metadata::parse_sp(xml);
    let idp_metadata = metadata::parse_idp(xml);
    let response = verify_response(xml, &expected(&f.idp_certificates));
    if declares_doctype(xml) {
        let doctype = Some(&SamlError::Doctype);
        prop_assert_eq!(unsigned.as_ref().err(), doctype);
        prop_assert_eq!(signed.as_ref().err(), doctype);
        prop_assert_eq!(logout_request.as_ref().err(), doctype);
        prop_assert_eq!(logout_response.as_ref().err(), doctype);
        prop_assert_eq!(sp_metadata.as_ref().err(), doctype);
        prop_assert_eq!(idp_metadata.as_ref().err(), doctype);
        prop_assert_eq!(response.as_ref().err(), doctype);
    }
    if let Ok(request) = &unsigned {
        prop_assert!(!request.id.trim().is_empty(), "{:?}", request);
        prop_assert!(!request.issuer.is_empty() && request.issuer.trim() == request.issuer);
    }
    if let Ok(request) = &signed {
        prop_assert_eq!(
            request,
            &f.signed_request_read,
            "accepted as signed:\n{}",
            xml
        );
    }
    if let Ok(verified) = &response {
        prop_assert_eq!(
            verified,
            &f.signed_response_read,
            "accepted as signed:\n{}",
            xml
        );
    }
    if let Ok(request) = &logout_request {
        prop_assert!(!request.id.trim().is_empty(), "{:?}", request);
    }
    Ok(())
}

/// Garbage is an error for every reader, not a message.
fn refused_by_every_reader(xml: &str) -> Result<(), TestCaseError> {
    let f = &*FIXTURES;
    prop_assert!(parse_authn_request(xml, None).is_err());
    prop_assert!(parse_authn_request(xml, Some(&f.sp_certificates)).is_err());
    prop_assert!(logout::parse_logout_request(xml).is_err());
    prop_assert!(logout::parse_logout_response(xml).is_err());
    prop_assert!(metadata::parse_sp(xml).is_err());
    prop_assert!(metadata::parse_idp(xml).is_err());
    prop_assert!(verify_response(xml, &expected(&f.idp_certificates)).is_err());
    Ok(())
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory")
}

/// `bytes` sent over both bindings: both decode it the same way, and whatever decodes goes
/// through every reader.
fn check_message(bytes: &[u8]) -> Result<(), TestCaseError> {
    let posted = binding::decode_post(&STANDARD.encode(bytes));
    let redirected = binding::decode_redirect(&STANDARD.encode(deflate(bytes)));
    prop_assert_eq!(&posted, &redirected);
    if let Ok(xml) = &posted {
        check_xml(xml)?;
    }
    Ok(())
}

/// Text as an attacker would hide a DOCTYPE from a check that reads UTF-8.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16LeDeclared,
    Utf16BeDeclared,
    Utf7Declared,
}

fn utf16(text: &str, little_endian: bool) -> Vec<u8> {
    text.encode_utf16()
        .flat_map(|unit| {
            if little_endian {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            }
        })
        .collect()
}

/// UTF-7 as libxml2 reads it (through iconv): `<!` and anything outside ASCII shifted into
/// modified base64, everything else as is. ASCII bytes throughout, so valid UTF-8 too.
fn utf7(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let shifted = (c == '<' && chars.peek() == Some(&'!')) || !c.is_ascii() || c == '+';
        if shifted {
            let mut run = c.to_string();
            if c == '<' {
                run.push(chars.next().unwrap_or('!'));
            }
            let units: Vec<u8> = utf16(&run, false);
            out.push('+');
            out.push_str(&STANDARD_NO_PAD.encode(units));
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}

fn encode(text: &str, encoding: Encoding) -> Vec<u8> {
    let declared =
        |name: &str, body: &str| format!(r#"<?xml version="1.0" encoding="{name}"?>{body}"#);
    match encoding {
        Encoding::Utf8 => text.as_bytes().to_vec(),
        Encoding::Utf8Bom => format!("\u{feff}{text}").into_bytes(),
        Encoding::Utf16Le => utf16(text, true),
        Encoding::Utf16LeDeclared => utf16(&declared("UTF-16", text), true),
        Encoding::Utf16BeDeclared => utf16(&declared("UTF-16", text), false),
        Encoding::Utf7Declared => declared("UTF-7", &utf7(text)).into_bytes(),
    }
}

/// Markup an edit inserts: declarations, entity references, comments, wrapped copies.
const XML_TOKENS: &[&str] = &[
    "<!DOCTYPE r [<!ENTITY x \"y\">]>",
    "<!DOCTYPE r SYSTEM \"file:///etc/passwd\">",
    "<!doctype r>",
    "<!ENTITY x SYSTEM \"http://evil.test/\">",
    "<!DOCTYPE",
    "&x;",
    "&amp;",
    "&#0;",
    "&#x3C;",
    "&lt;!DOCTYPE",
    "<!-- c -->",
    "<![CDATA[<!DOCTYPE x>]]>",
    "<?xml version=\"1.0\"?>",
    "<?xml version=\"1.0\" encoding=\"UTF-7\"?>",
    "<?pi x?>",
    " ID=\"_evil\"",
    " ID=\"\"",
    " Version=\"1.1\"",
    " xmlns=\"urn:x\"",
    " xmlns:samlp=\"urn:x\"",
    "<saml:Issuer>https://evil.test</saml:Issuer>",
    "<saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">x</saml:Issuer>",
    "<samlp:SessionIndex>evil</samlp:SessionIndex>",
    "<saml:Assertion>",
    "</saml:Assertion>",
    "<ds:Signature/>",
    "<",
    ">",
    "/>",
    "\"",
    "'",
    "=",
    ":",
    "\u{0}",
    "\u{feff}",
    "é",
    " ",
    "\n",
];

/// One edit of message text.
#[derive(Debug, Clone)]
enum Edit {
    /// Insert a token at a character position.
    Insert(prop::sample::Index, &'static str),
    /// Insert a token before the nth occurrence of a character (or at the end): at a tag or
    /// a parameter boundary rather than anywhere.
    Before(char, prop::sample::Index, &'static str),
    /// Delete some characters.
    Cut(prop::sample::Index, usize),
    /// Repeat a slice of the text right after itself.
    Repeat(prop::sample::Index, usize),
    /// Drop the nth attribute (` name="value"`).
    DropAttribute(prop::sample::Index),
    /// Repeat the nth attribute, with its value or another.
    DuplicateAttribute(prop::sample::Index, Option<String>),
    /// Give the nth attribute another value (raw: quotes and ampersands included).
    SetAttribute(prop::sample::Index, String),
    /// Put `depth` nested elements inside the root element.
    Nest(usize, &'static str),
    /// Put the message inside `depth` nested elements.
    Wrap(usize),
    /// Signature wrapping: the message inside an unsigned copy of itself with another issuer.
    Envelope,
    /// Replace every occurrence of one string by another.
    Replace(&'static str, &'static str),
}

/// The byte ranges of ` name="value"` attributes in `xml`.
fn attributes(xml: &str) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(at) = xml[from..].find("=\"").map(|i| i + from) {
        let start = xml[..at].rfind(' ').unwrap_or(at);
        let Some(end) = xml[at + 2..].find('"').map(|i| i + at + 3) else {
            break;
        };
        spans.push(start..end);
        from = end;
    }
    spans
}

/// The character boundary at `index` among `text`'s boundaries.
fn boundary(text: &str, index: &prop::sample::Index) -> usize {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    boundaries[index.index(boundaries.len())]
}

/// The first position after the root element's start tag, if there is one.
fn inside_root(xml: &str) -> Option<usize> {
    let start = xml.find('<')?;
    xml[start..].find('>').map(|i| i + start + 1)
}

fn apply(mut xml: String, edit: &Edit) -> String {
    match edit {
        Edit::Insert(at, token) => {
            let at = boundary(&xml, at);
            xml.insert_str(at, token);
        }
        Edit::Before(separator, nth, token) => {
            let positions: Vec<usize> = xml
                .match_indices(*separator)
                .map(|(i, _)| i)
                .chain([xml.len()])
                .collect();
            xml.insert_str(positions[nth.index(positions.len())], token);
        }
        Edit::Cut(at, len) => {
            let from = boundary(&xml, at);
            let to = xml[from..]
                .char_indices()
                .nth(*len)
                .map_or(xml.len(), |(i, _)| i + from);
            xml.replace_range(from..to, "");
        }
        Edit::Repeat(at, len) => {
            let from = boundary(&xml, at);
            let to = xml[from..]
                .char_indices()
                .nth(*len)
                .map_or(xml.len(), |(i, _)| i + from);
            let slice = xml[from..to].to_string();
            xml.insert_str(to, &slice);
        }
        Edit::DropAttribute(nth) => {
            let spans = attributes(&xml);
            if !spans.is_empty() {
                let span = spans[nth.index(spans.len())].clone();
                xml.replace_range(span, "");
            }
        }
        Edit::DuplicateAttribute(nth, value) => {
            let spans = attributes(&xml);
            if !spans.is_empty() {
                let span = spans[nth.index(spans.len())].clone();
                let original = xml[span.clone()].to_string();
                let copy = match value {
                    Some(value) => match original.split_once("=\"") {
                        Some((name, _)) => format!("{name}=\"{value}\""),
                        None => original,
                    },
                    None => original,
                };
                xml.insert_str(span.end, &copy);
            }
        }
        Edit::SetAttribute(nth, value) => {
            let spans = attributes(&xml);
            if !spans.is_empty() {
                let span = spans[nth.index(spans.len())].clone();
                if let Some((name, _)) = xml[span.clone()].split_once("=\"") {
                    let replacement = format!("{name}=\"{value}\"");
                    xml.replace_range(span, &replacement);
                }
            }
        }
        Edit::Nest(depth, name) => {
            if let Some(at) = inside_root(&xml) {
                let nested = format!(
                    "{}{}",
                    format!("<{name}>").repeat(*depth),
                    format!("</{name}>").repeat(*depth)
                );
                xml.insert_str(at, &nested);
            }
        }
        Edit::Wrap(depth) => {
            xml = format!("{}{xml}{}", "<w>".repeat(*depth), "</w>".repeat(*depth));
        }
        Edit::Envelope => {
            let evil = xml
                .replace(SP, "https://evil.test")
                .replace(IDP, "https://evil.test")
                .replace("\"_", "\"_evil");
            xml = match inside_root(&evil) {
                Some(at) => format!("{}{xml}{}", &evil[..at], &evil[at..]),
                None => xml,
            };
        }
        Edit::Replace(from, to) => xml = xml.replace(from, to),
    }
    xml
}

fn edit() -> impl Strategy<Value = Edit> {
    let value = prop_oneof![
        "[a-zA-Z0-9_:/.-]{0,12}",
        "\\PC{0,8}",
        prop::sample::select(&["\"", "&", "&x;", "<", "&#34;", "2.0", "_s1", " "][..])
            .prop_map(String::from),
    ];
    prop_oneof![
        2 => (any::<prop::sample::Index>(), prop::sample::select(XML_TOKENS))
            .prop_map(|(at, token)| Edit::Insert(at, token)),
        4 => (any::<prop::sample::Index>(), prop::sample::select(XML_TOKENS))
            .prop_map(|(at, token)| Edit::Before('<', at, token)),
        2 => (any::<prop::sample::Index>(), 0usize..40).prop_map(|(at, len)| Edit::Cut(at, len)),
        2 => (any::<prop::sample::Index>(), 0usize..60)
            .prop_map(|(at, len)| Edit::Repeat(at, len)),
        3 => any::<prop::sample::Index>().prop_map(Edit::DropAttribute),
        3 => (any::<prop::sample::Index>(), prop::option::of(value.clone()))
            .prop_map(|(nth, value)| Edit::DuplicateAttribute(nth, value)),
        3 => (any::<prop::sample::Index>(), value).prop_map(|(nth, value)| Edit::SetAttribute(nth, value)),
        1 => (
            prop_oneof![1usize..10, Just(300usize), Just(5_000), Just(18_000)],
            prop::sample::select(&["x", "saml:Issuer", "samlp:Extensions", "saml:Assertion"][..])
        )
            .prop_map(|(depth, name)| Edit::Nest(depth, name)),
        1 => prop_oneof![1usize..4, Just(300usize), Just(18_000)].prop_map(Edit::Wrap),
        1 => Just(Edit::Envelope),
        2 => prop::sample::select(&[
            ("ID=", "id="),
            ("saml:", ""),
            ("samlp:", "saml:"),
            ("\"2.0\"", "\"1.1\""),
            ("https://sp.test", "https://evil.test"),
            ("_s1", "_evil"),
            ("Z\"", "\""),
            ("\"", "'"),
            (" ", "\n\t"),
            ("urn:oasis:names:tc:SAML:2.0:protocol", "urn:x"),
        ][..])
        .prop_map(|(from, to)| Edit::Replace(from, to)),
    ]
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        12 => Just(Encoding::Utf8),
        1 => Just(Encoding::Utf8Bom),
        1 => Just(Encoding::Utf16Le),
        1 => Just(Encoding::Utf16LeDeclared),
        1 => Just(Encoding::Utf16BeDeclared),
        2 => Just(Encoding::Utf7Declared),
    ]
}

/// An SP's or an upstream IdP's endpoint, as configuration or metadata gives it.
fn endpoint() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "https://sp.test/slo",
                "https://sp.test/slo?tenant=a",
                "https://sp.test/slo?",
                "https://sp.test",
                "https://sp.test/slo#top",
                "https://sp.test/sl\u{f6}",
                "https://sp.test/a b",
                "https://sp.test/\ta",
                "https://xn--sp-fka.test/",
                "https://sp\u{e9}.test/",
                "not a url",
                "",
            ][..]
        )
        .prop_map(String::from),
        "https://sp\\.test/\\PC{0,16}",
        "\\PC{0,24}",
    ]
}

/// Tokens of XML-ish soup.
const SOUP: &[&str] = &[
    "<",
    ">",
    "</",
    "/>",
    "=",
    "\"",
    "'",
    " ",
    "samlp:AuthnRequest",
    "saml:Issuer",
    "samlp:LogoutRequest",
    "samlp:LogoutResponse",
    "samlp:Response",
    "saml:Assertion",
    "xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"",
    "xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"",
    "ID=\"_1\"",
    "Version=\"2.0\"",
    "IssueInstant=\"2027-01-15T08:00:00Z\"",
    "https://sp.test/metadata",
    "<!DOCTYPE",
    "<!ENTITY",
    "&x;",
    "&amp;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?xml",
    "?>",
    "encoding=\"UTF-16\"",
    "\u{0}",
    "é",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic_and_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        check_message(&bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        check_xml(&text)?;
        refused_by_every_reader(&text)?;
    }

    #[test]
    fn arbitrary_form_values_never_panic(value in "[A-Za-z0-9+/=%\\s]{0,400}|\\PC{0,200}") {
        let decoded = [binding::decode_post(&value), binding::decode_redirect(&value)];
        for xml in decoded.into_iter().flatten() {
            check_xml(&xml)?;
        }
        let _ = binding::has_query_signature(&value);
        let f = &*FIXTURES;
        prop_assert!(binding::verify_query_signature(&value, "SAMLRequest", &f.sp_certificates).is_err());
    }

    #[test]
    fn xml_soup_never_panics_and_is_refused(
        tokens in prop::collection::vec(prop::sample::select(SOUP), 0..60),
        encoding in encoding(),
    ) {
        let text = tokens.concat();
        check_message(&encode(&text, encoding))?;
        check_xml(&text)?;
        refused_by_every_reader(&text)?;
    }

    #[test]
    fn edited_messages_never_panic_and_are_never_taken_for_signed(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..5),
        encoding in encoding(),
    ) {
        let seeds = &FIXTURES.seeds;
        let mut xml = seeds[seed.index(seeds.len())].clone();
        for edit in &edits {
            xml = apply(xml, edit);
        }
        let bytes = encode(&xml, encoding);
        check_message(&bytes)?;
        let doctype = declares_doctype(&xml);
        match encoding {
            Encoding::Utf8 | Encoding::Utf8Bom => {
                if doctype {
                    let decoded = binding::decode_post(&STANDARD.encode(&bytes));
                    prop_assert!(
                        matches!(decoded, Err(SamlError::Doctype | SamlError::TooLarge(_))),
                        "{:?}",
                        decoded
                    );
                }
            }
            // Not UTF-8 as it claims or as its bytes say: never read (the DOCTYPE a parser would
            // decode from it cannot be seen by a check of the UTF-8 text).
            _ => {
                let decoded = binding::decode_post(&STANDARD.encode(&bytes));
                prop_assert!(decoded.is_err(), "{:?} accepted: {:?}", encoding, decoded);
            }
        }
    }

    #[test]
    fn redirect_urls_are_locations_that_carry_the_message(
        endpoint in endpoint(),
        xml in "\\PC{0,60}",
        relay_state in prop::option::of(any::<String>()),
        signed in prop::bool::weighted(0.2),
    ) {
        let f = &*FIXTURES;
        let signer = signed.then_some(&f.sp);
        let url = binding::redirect_url(&endpoint, "SAMLRequest", &xml, relay_state.as_deref(), signer);
        let Ok(url) = url else {
            prop_assert!(url::Url::parse(&endpoint).is_err(), "`{}` refused", endpoint);
            return Ok(());
        };
        // What the server puts in a Location header: visible ASCII (axum's `Redirect` panics
        // on anything else), and a URL.
        prop_assert!(url.bytes().all(|b| b.is_ascii_graphic()), "{}", url);
        let parsed = url::Url::parse(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        let query = parsed.query().unwrap_or_default();
        prop_assert_eq!(read(query, "RelayState"), relay_state.into_iter().collect::<Vec<_>>());
        let sent = read(query, "SAMLRequest");
        prop_assert_eq!(sent.len(), 1);
        if idflow_saml::xml::refuse_doctype(&xml).is_ok() {
            prop_assert_eq!(binding::decode_redirect(&sent[0]), Ok(xml.clone()));
        }
        if signed {
            let own = query.split('&').filter(|p| {
                ["SAMLRequest", "RelayState", "SigAlg", "Signature"]
                    .iter()
                    .any(|n| p.starts_with(&format!("{n}=")))
            });
            let own = own.collect::<Vec<_>>().join("&");
            prop_assert!(
                binding::verify_query_signature(&own, "SAMLRequest", &f.sp_certificates).is_ok(),
                "{}",
                url
            );
        }
    }

    #[test]
    fn edited_signed_queries_verify_only_what_was_signed(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(query_edit(), 1..4),
    ) {
        let f = &*FIXTURES;
        let original = &f.signed_queries[which.index(f.signed_queries.len())];
        let mut query = original.clone();
        for edit in &edits {
            query = apply(query, edit);
        }
        let _ = binding::has_query_signature(&query);
        if binding::verify_query_signature(&query, "SAMLRequest", &f.sp_certificates).is_ok() {
            for name in ["SAMLRequest", "RelayState", "SigAlg"] {
                prop_assert_eq!(
                    read(&query, name),
                    read(original, name),
                    "`{}` verified, but reads another {} than `{}`",
                    query,
                    name,
                    original
                );
            }
        }
    }
}

/// Every value a form decoder reads for `name` in `query` (names decoded too).
fn read(query: &str, name: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// Edits of a Redirect-binding query: its separators, names and encodings.
fn query_edit() -> impl Strategy<Value = Edit> {
    let tokens = prop::sample::select(
        &[
            "&",
            "=",
            "%",
            "+",
            "%2B",
            "%3D",
            "%26",
            "&RelayState=evil",
            "&Relay%53tate=evil",
            "&relaystate=evil",
            "&SAMLRequest=",
            "&SAML%52equest=fVLLbsIwEPwVy3eIE6CAlSBRUFUkWiJIe%2BjNxEtwldiu1ynt",
            "&SigAlg=http%3A%2F%2Fwww.w3.org%2F2000%2F09%2Fxmldsig%23rsa-sha1",
            "&Sig%41lg=x",
            "&Signature=",
            "&Sign%61ture=AAAA",
            "?",
            "#",
        ][..],
    );
    prop_oneof![
        2 => (any::<prop::sample::Index>(), tokens.clone())
            .prop_map(|(at, token)| Edit::Insert(at, token)),
        4 => (any::<prop::sample::Index>(), tokens)
            .prop_map(|(at, token)| Edit::Before('&', at, token)),
        1 => (any::<prop::sample::Index>(), 0usize..20).prop_map(|(at, len)| Edit::Cut(at, len)),
        1 => (any::<prop::sample::Index>(), 0usize..40).prop_map(|(at, len)| Edit::Repeat(at, len)),
        1 => prop::sample::select(&[
            ("RelayState=", "Relay%53tate="),
            ("SAMLRequest=", "SAML%52equest="),
            ("%20", "+"),
            ("+", "%20"),
            ("%3A", "%3a"),
        ][..])
        .prop_map(|(from, to)| Edit::Replace(from, to)),
    ]
}

#[test]
fn the_fixtures_are_what_they_claim() {
    let f = &*FIXTURES;
    assert_eq!(f.signed_request_read.issuer, SP);
    assert!(parse_authn_request(&f.seeds[0], Some(&f.sp_certificates)).is_err());
    assert!(parse_authn_request(&f.seeds[0], None).is_ok());
    assert!(logout::parse_logout_request(&f.seeds[2]).is_ok());
    assert!(logout::parse_logout_response(&f.seeds[3]).is_ok());
    assert!(metadata::parse_sp(&f.seeds[5]).is_ok());
    for query in &f.signed_queries {
        binding::verify_query_signature(query, "SAMLRequest", &f.sp_certificates)
            .expect("the signed query verifies");
    }
    assert_eq!(
        parse_authn_request(&f.signed_request, Some(&f.sp_certificates)).as_ref(),
        Ok(&f.signed_request_read)
    );
    // The encodings say what they should: libxml2 would read the original text from each.
    assert_eq!(
        encode("<a/>", Encoding::Utf7Declared),
        br#"<?xml version="1.0" encoding="UTF-7"?><a/>"#
    );
    assert_eq!(
        utf7("<!DOCTYPE x>"),
        "+ADwAIQ-DOCTYPE x>",
        "`<!` shifted into base64"
    );
}

#[test]
fn deep_nesting_is_refused_or_read_without_overflowing_the_stack() {
    let f = &*FIXTURES;
    for seed in &f.seeds {
        for depth in [1_000, 18_000] {
            for edit in [
                Edit::Nest(depth, "x"),
                Edit::Nest(depth, "saml:Issuer"),
                Edit::Wrap(depth),
            ] {
                let xml = apply(seed.clone(), &edit);
                check_message(xml.as_bytes()).unwrap_or_else(|e| panic!("{edit:?}: {e}"));
            }
        }
    }
    let past_the_limit = apply(f.seeds[0].clone(), &Edit::Wrap(40_000));
    assert_eq!(
        binding::decode_post(&STANDARD.encode(&past_the_limit)),
        Err(SamlError::TooLarge(binding::MAX_MESSAGE))
    );
}

/// Found by `edited_messages_never_panic_and_are_never_taken_for_signed`: a message in UTF-16
/// (or declared UTF-7) is valid UTF-8 in which the DOCTYPE check finds no `<!DOCTYPE`, while
/// libxml2, which verifies signatures, decodes it and parses its DOCTYPE.
#[test]
fn regression_messages_that_are_not_utf8_are_refused() {
    let request = authn_request("_r1", "");
    for encoding in [
        Encoding::Utf16Le,
        Encoding::Utf16LeDeclared,
        Encoding::Utf16BeDeclared,
        Encoding::Utf7Declared,
    ] {
        let bytes = encode(&request, encoding);
        let posted = binding::decode_post(&STANDARD.encode(&bytes));
        assert!(
            matches!(posted, Err(SamlError::Malformed(_))),
            "{encoding:?}: {posted:?}"
        );
    }
    let hidden = format!("{}{request}", utf7("<!DOCTYPE r [<!ENTITY e \"x\">]>"));
    let bytes = encode(&hidden, Encoding::Utf7Declared);
    let xml = String::from_utf8(bytes).expect("UTF-7 is ASCII");
    let f = &*FIXTURES;
    assert!(parse_authn_request(&xml, Some(&f.sp_certificates)).is_err());
    assert!(matches!(
        verify_response(&xml, &expected(&f.idp_certificates)),
        Err(SamlError::Malformed(_))
    ));
}

/// Found by `edited_signed_queries_verify_only_what_was_signed`: a RelayState added to a
/// signed query, repeated or with its name percent-encoded, verified and was read.
#[test]
fn regression_a_signed_query_verifies_only_with_the_relay_state_it_signed() {
    let f = &*FIXTURES;
    let (with, without) = (&f.signed_queries[0], &f.signed_queries[1]);
    // The minimal case: `Before('&', Index(1 << 62), "&RelayState=evil")`, before `&SigAlg`.
    let repeated = with.replace("&SigAlg", "&RelayState=evil&SigAlg");
    assert_eq!(read(&repeated, "RelayState"), ["state 1", "evil"]);
    assert!(binding::verify_query_signature(&repeated, "SAMLRequest", &f.sp_certificates).is_err());
    let smuggled = format!("{without}&Relay%53tate=evil");
    assert_eq!(read(&smuggled, "RelayState"), ["evil"]);
    assert!(binding::verify_query_signature(&smuggled, "SAMLRequest", &f.sp_certificates).is_err());
}
