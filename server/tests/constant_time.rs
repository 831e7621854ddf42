//! Secrets are compared in constant time (DESIGN.md, "Security rules"): a comparison that
//! stops at the first differing byte answers a little sooner the less of a guess is right, and
//! an attacker who can time enough requests learns a secret byte by byte. Timing one
//! comparison from a test is far too noisy to prove anything, so these tests read the source:
//!
//! - [`constant_time_eq_is_built_on_subtle`]: `crypto::constant_time_eq` compares with
//!   `subtle`'s `ConstantTimeEq`, after hashing both sides so that lengths leak nothing, and
//!   has no `==` of its own.
//! - [`every_secret_check_compares_in_constant_time`]: each function that checks a secret a
//!   caller presents ([`SECRET_CHECKS`]: client secrets, CSRF tokens, the browser binding of a
//!   login, the PKCE verifier, emailed codes, recovery codes, the argon2id output of a
//!   password) still calls `constant_time_eq` (or `subtle`'s `ct_eq`).
//! - [`each_secret_check_rewritten_with_eq_is_caught`]: each of those checks, rewritten with
//!   `==` in memory, fails one of the two tests above.
//! - [`no_secret_is_compared_with_eq`]: in the non-test code of the server, the authenticators,
//!   SAML and SCIM, no value with a secret's name is compared with `==`, `!=` or a comparing
//!   method, except the comparisons in [`REVIEWED`], each of which says why it checks no secret.
//!
//! **The heuristic, and what it cannot see.** The scan strips comments, string and character
//! literals and `#[cfg(test)]` modules with a small lexer (enough for this code base, not a
//! Rust parser), then looks at every `==` and `!=` and every `.eq(`, `.ne(`, `.contains(`,
//! `.starts_with(` and `.ends_with(`. Each operand is the text up to the nearest delimiter at
//! its nesting level (a comma, semicolon, opening bracket, `||`, `&&`, `=` or a keyword such as
//! `if`); the comparison is flagged when an identifier of an operand has a `_`-separated word
//! from [`SECRET_WORDS`] (`csrf`, `secret`, `verifier`, `code`, `hash`, ...). So:
//!
//! - a secret held under another name (`a == b`) is not seen. [`SECRET_CHECKS`] covers the
//!   known checks whatever their variables are called, but a *new* secret check with innocent
//!   names is caught by neither test: review new checks against this list.
//! - comparisons other than the ones above are not seen: `match` on a secret, `Ord`, sorting,
//!   searching a sorted list, `assert_eq!` outside tests.
//! - lengths are not flagged (`code.len() != 6`): every token or code of a kind has the same
//!   length, so its length gives nothing away.
//! - looking a record up by the SHA-256 of a secret (`store.code(&token_key(code))`) is not a
//!   comparison of the secret: the time it takes depends on the hash of the guess, which an
//!   attacker cannot steer towards the stored value. Store keys named `key` are not in
//!   [`SECRET_WORDS`] for that reason (and because `key` names map keys everywhere).
//! - libraries are trusted, not scanned: `password-hash` (its `Output` compares in constant
//!   time), TOTP (`totp-rs` compares tokens with `constant_time_eq`), passkeys (`webauthn-rs`),
//!   and JWT and SAML signatures (`aws-lc-rs`). Admin and SCIM bearer tokens are JWTs: they are
//!   verified by signature, with no secret to compare.

use std::path::{Path, PathBuf};

/// Where the scan looks (non-test code only), relative to the repository root.
const SOURCES: &[&str] = &["server/src", "authenticators/src", "saml/src", "scim/src"];

/// Words that mark an identifier as naming a secret, or something derived from one that a
/// caller presents to be checked.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "secrets",
    "csrf",
    "verifier",
    "challenge",
    "code",
    "codes",
    "otp",
    "password",
    "token",
    "refresh",
    "cookie",
    "handle",
    "browser",
    "hash",
    "hashes",
    "digest",
    "nonce",
    "signature",
    "mac",
    "seed",
];

/// A function that checks a secret a caller presents, and what it checks.
struct SecretCheck {
    file: &'static str,
    function: &'static str,
    what: &'static str,
}

/// Every function that compares a secret a caller presents with the expected value.
const SECRET_CHECKS: &[SecretCheck] = &[
    SecretCheck {
        file: "server/src/http/client_auth.rs",
        function: "authenticate",
        what: "a client secret (Basic or form)",
    },
    SecretCheck {
        file: "server/src/http/login/mod.rs",
        function: "load",
        what: "the browser binding of a login (its cookie against the login's record)",
    },
    SecretCheck {
        file: "server/src/http/login/mod.rs",
        function: "submit",
        what: "the CSRF token of the login form",
    },
    SecretCheck {
        file: "server/src/http/account.rs",
        function: "authorized",
        what: "the CSRF token of every account-page form",
    },
    SecretCheck {
        file: "server/src/http/logout.rs",
        function: "logout",
        what: "the CSRF token of the sign-out confirmation",
    },
    SecretCheck {
        file: "server/src/http/token.rs",
        function: "authorization_code",
        what: "the PKCE verifier against the code's challenge",
    },
    SecretCheck {
        file: "authenticators/src/email_code.rs",
        function: "verify",
        what: "an emailed code (sign-in and sign-up)",
    },
    SecretCheck {
        file: "server/src/mfa/recovery.rs",
        function: "check",
        what: "a recovery code",
    },
    SecretCheck {
        file: "authenticators/src/password.rs",
        function: "verify_in",
        what: "a password's argon2id output against the stored hash",
    },
];

/// A comparison the scan flags that was reviewed and compares no secret a caller presents.
struct Reviewed {
    file: &'static str,
    /// The comparison as the scan prints it: `left OP right`, whitespace collapsed.
    comparison: &'static str,
    why: &'static str,
}

/// The reviewed comparisons. An entry that no longer matches anything fails the test, so the
/// list cannot keep excusing a comparison that has changed.
const REVIEWED: &[Reviewed] = &[
    Reviewed {
        file: "server/src/http/admin/mod.rs",
        comparison: "self.code == \"\"",
        why: "the error code of an admin API answer, not a secret",
    },
    Reviewed {
        file: "server/src/http/login/register.rs",
        comparison: "password != repeated",
        why: "a new password against its confirmation, both typed in the same request",
    },
    Reviewed {
        file: "server/src/http/login/new_account.rs",
        comparison: "password != repeated",
        why: "a new password against its confirmation, both typed in the same request",
    },
    Reviewed {
        file: "server/src/store/tables.rs",
        comparison: "user.password_hash.as_deref() == Some(old.as_str())",
        why: "a rehash replaces the stored hash only if it is still the one verified: both \
              sides are stored hashes, nothing a caller presents",
    },
    Reviewed {
        file: "server/src/store/tables.rs",
        comparison: "*h != hash",
        why: "striking a recovery code from the store once `mfa::recovery::check` has matched \
              it in constant time",
    },
    Reviewed {
        file: "server/src/http/introspect.rs",
        comparison: "refresh.client_id == client.client_id",
        why: "the client a refresh token (found by its hash) was issued to: client ids are public",
    },
    Reviewed {
        file: "server/src/http/revoke.rs",
        comparison: "refresh.client_id == client.client_id",
        why: "the client a refresh token (found by its hash) was issued to: client ids are public",
    },
    Reviewed {
        file: "server/src/store/tables.rs",
        comparison: "token.authentication.user == user",
        why: "the user a refresh token was issued to, when ending that user's sessions",
    },
    Reviewed {
        file: "server/src/store/postgres.rs",
        comparison: "*code == SqlState::T_R_SERIALIZATION_FAILURE",
        why: "a PostgreSQL error code",
    },
    Reviewed {
        file: "server/src/store/postgres.rs",
        comparison: "*code == SqlState::T_R_DEADLOCK_DETECTED",
        why: "a PostgreSQL error code",
    },
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The `.rs` files under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `source` without comments, with every string literal emptied (`""`) and every character
/// literal blanked (`' '`), newlines kept so that line numbers still hold.
fn strip_comments_and_literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    // Pushes the newlines of chars[from..to], so a removed span keeps its line count.
    let newlines = |out: &mut String, from: usize, to: usize| {
        for _ in chars[from..to].iter().filter(|c| **c == '\n') {
            out.push('\n');
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let word_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let start = i;
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            newlines(&mut out, start, i);
        } else if !word_before
            && (c == 'r' || (c == 'b' && next == Some('r')))
            && matches!(chars.get(i + usize::from(c == 'b') + 1), Some('"' | '#'))
        {
            // A raw string: r"..", r#".."#, br"..".
            let start = i;
            i += usize::from(c == 'b') + 1;
            let mut hashes = 0;
            while chars.get(i) == Some(&'#') {
                hashes += 1;
                i += 1;
            }
            if chars.get(i) != Some(&'"') {
                // `r#ident`, a raw identifier.
                out.extend(&chars[start..i]);
                continue;
            }
            i += 1;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
            newlines(&mut out, start, i);
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
            newlines(&mut out, start, i.min(chars.len()));
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The index just past the brace that closes the one opening at `open`.
fn matching_brace(text: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, b) in text.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// Stripped `source` with each `#[cfg(test)]` item (a test module, a test helper) blanked,
/// newlines kept.
fn without_tests(stripped: &str) -> String {
    let mut text = stripped.as_bytes().to_vec();
    let mut from = 0;
    while let Some(at) = find(&text, b"#[cfg(test)]", from) {
        let open = text[at..]
            .iter()
            .position(|b| *b == b'{' || *b == b';')
            .map(|p| at + p);
        let end = match open {
            Some(p) if text[p] == b'{' => matching_brace(&text, p),
            Some(p) => p + 1,
            None => text.len(),
        };
        for b in &mut text[at..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        from = end;
    }
    String::from_utf8(text).expect("blanking ASCII keeps UTF-8")
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Keywords that end an operand when scanning leftwards (`if a == b`, `return a == b`).
const KEYWORDS: &[&str] = &[
    "if", "return", "match", "while", "let", "else", "in", "move",
];

/// The operand that ends just before `end`.
fn left_operand(text: &[u8], end: usize) -> String {
    let mut depth = 0usize;
    let mut start = end;
    while start > 0 {
        let b = text[start - 1];
        match b {
            // A block ends before a new statement (`if a { .. } b == c`): no operand of ours.
            b'}' if depth == 0 => break,
            b')' | b']' | b'}' => depth += 1,
            b'(' | b'[' | b'{' if depth == 0 => break,
            b'(' | b'[' | b'{' => depth -= 1,
            b',' | b';' | b'|' | b'&' | b'=' | b'<' | b'>' if depth == 0 => break,
            _ if depth == 0 && is_word(b) && (start < 2 || !is_word(text[start - 2])) => {
                let word_end = (start - 1..end).find(|&i| !is_word(text[i])).unwrap_or(end);
                let word = std::str::from_utf8(&text[start - 1..word_end]).unwrap_or("");
                if KEYWORDS.contains(&word) {
                    start = word_end;
                    break;
                }
            }
            _ => {}
        }
        start -= 1;
    }
    collapse(&text[start..end])
}

/// The operand that starts at `begin`.
fn right_operand(text: &[u8], begin: usize) -> String {
    let mut depth = 0usize;
    let mut end = begin;
    while end < text.len() {
        let b = text[end];
        match b {
            b'{' if depth == 0
                && end > begin
                && text[begin..end].iter().any(|c| !c.is_ascii_whitespace()) =>
            {
                break;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth == 0 => break,
            b')' | b']' | b'}' => depth -= 1,
            b',' | b';' | b'|' | b'=' if depth == 0 => break,
            b'&' if depth == 0 && text.get(end + 1) == Some(&b'&') => break,
            _ => {}
        }
        end += 1;
    }
    collapse(&text[begin..end])
}

fn collapse(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `operand` names a secret: one of its identifiers has a word of [`SECRET_WORDS`].
/// A length or emptiness is no secret.
fn names_a_secret(operand: &str) -> bool {
    let operand = operand.trim_end_matches('?');
    if [".len()", ".is_empty()", ".count()"]
        .iter()
        .any(|s| operand.ends_with(s))
    {
        return false;
    }
    operand
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|ident| ident.starts_with(|c: char| c.is_ascii_lowercase() || c == '_'))
        .any(|ident| ident.split('_').any(|word| SECRET_WORDS.contains(&word)))
}

/// A comparison the scan found.
#[derive(Debug)]
struct Finding {
    file: String,
    line: usize,
    comparison: String,
}

/// The comparisons of stripped, test-free `text` with an operand that names a secret.
fn secret_comparisons(file: &str, text: &str) -> Vec<Finding> {
    let bytes = text.as_bytes();
    let line_of = |at: usize| bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
    let mut found = Vec::new();
    for at in 0..bytes.len().saturating_sub(1) {
        let op = &bytes[at..at + 2];
        let is_eq = op == b"=="
            && !matches!(
                bytes.get(at.wrapping_sub(1)),
                Some(b'=' | b'!' | b'<' | b'>')
            )
            && bytes.get(at + 2) != Some(&b'=');
        let is_ne = op == b"!=" && bytes.get(at + 2) != Some(&b'=');
        if is_eq || is_ne {
            let left = left_operand(bytes, at);
            let right = right_operand(bytes, at + 2);
            if names_a_secret(&left) || names_a_secret(&right) {
                let op = if is_eq { "==" } else { "!=" };
                found.push(Finding {
                    file: file.to_string(),
                    line: line_of(at),
                    comparison: format!("{left} {op} {right}"),
                });
            }
        }
    }
    for method in [".eq(", ".ne(", ".contains(", ".starts_with(", ".ends_with("] {
        let mut from = 0;
        while let Some(at) = find(bytes, method.as_bytes(), from) {
            from = at + method.len();
            let receiver = left_operand(bytes, at);
            let open = at + method.len() - 1;
            let close = matching_paren(bytes, open);
            let argument = collapse(&bytes[open + 1..close.saturating_sub(1)]);
            if names_a_secret(&receiver) || names_a_secret(&argument) {
                found.push(Finding {
                    file: file.to_string(),
                    line: line_of(at),
                    comparison: format!("{receiver}{method}{argument})"),
                });
            }
        }
    }
    found
}

/// The index just past the parenthesis that closes the one at `open`.
fn matching_paren(text: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, b) in text.iter().enumerate().skip(open) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The body of `fn name` in stripped `text`, if it is defined there.
fn function_body<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = find(bytes, format!("fn {name}").as_bytes(), from) {
        from = at + 3;
        let after = at + 3 + name.len();
        if at > 0 && is_word(bytes[at - 1]) || bytes.get(after).is_some_and(|b| is_word(*b)) {
            continue;
        }
        let open = find(bytes, b"{", after)?;
        return Some(&text[open..matching_brace(bytes, open)]);
    }
    None
}

#[test]
fn constant_time_eq_is_built_on_subtle() {
    let source = read("server/src/crypto.rs");
    assert!(
        source.contains("use subtle::ConstantTimeEq;"),
        "crypto.rs no longer imports subtle's ConstantTimeEq"
    );
    let stripped = strip_comments_and_literals(&source);
    let body =
        function_body(&stripped, "constant_time_eq").expect("crypto.rs defines constant_time_eq");
    assert!(
        body.contains(".ct_eq("),
        "constant_time_eq must compare with subtle's ct_eq:\n{body}"
    );
    assert!(
        body.contains("Sha256::digest(a)") && body.contains("Sha256::digest(b)"),
        "constant_time_eq must hash both sides first, so unequal lengths take the same time:\n{body}"
    );
    for early_exit in ["==", "!=", "return", "len()", "for ", "while ", "?"] {
        assert!(
            !body.contains(early_exit),
            "constant_time_eq must not use `{early_exit}`: it could answer early:\n{body}"
        );
    }
    let manifest = read("server/Cargo.toml");
    assert!(
        manifest
            .lines()
            .any(|l| l.trim_start().starts_with("subtle")),
        "server/Cargo.toml no longer depends on subtle"
    );
    // And it answers right, whatever the lengths.
    use idflow::crypto::constant_time_eq;
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"a secret", b"a secret"));
    assert!(!constant_time_eq(b"a secret", b"a secreT"));
    assert!(!constant_time_eq(b"a secret", b"a secret and more"));
    assert!(!constant_time_eq(b"", b"a secret"));
}

#[test]
fn every_secret_check_compares_in_constant_time() {
    let mut problems = Vec::new();
    for check in SECRET_CHECKS {
        let stripped = strip_comments_and_literals(&read(check.file));
        let Some(body) = function_body(&stripped, check.function) else {
            problems.push(format!(
                "{}: no `fn {}` (it checks {}): update SECRET_CHECKS",
                check.file, check.function, check.what
            ));
            continue;
        };
        if !body.contains("constant_time_eq(") && !body.contains(".ct_eq(") {
            problems.push(format!(
                "{}: `fn {}` checks {} without constant_time_eq",
                check.file, check.function, check.what
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_secret_is_compared_with_eq() {
    let mut files = Vec::new();
    for dir in SOURCES {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 50, "only {} source files found", files.len());
    let mut findings = Vec::new();
    for path in &files {
        let file = path
            .strip_prefix(root())
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        let source = std::fs::read_to_string(path).expect("readable");
        let text = without_tests(&strip_comments_and_literals(&source));
        findings.extend(secret_comparisons(&file, &text));
    }
    let mut used = vec![false; REVIEWED.len()];
    let mut unreviewed = Vec::new();
    for finding in &findings {
        match REVIEWED
            .iter()
            .position(|r| r.file == finding.file && r.comparison == finding.comparison)
        {
            Some(index) => used[index] = true,
            None => unreviewed.push(format!(
                "{}:{}: `{}`",
                finding.file, finding.line, finding.comparison
            )),
        }
    }
    assert!(
        unreviewed.is_empty(),
        "secret-named values compared without constant_time_eq (use crate::crypto::constant_time_eq, \
         or add the comparison to REVIEWED with why it checks no secret):\n{}",
        unreviewed.join("\n")
    );
    let stale: Vec<String> = REVIEWED
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(r, _)| format!("{}: `{}` ({})", r.file, r.comparison, r.why))
        .collect();
    assert!(
        stale.is_empty(),
        "REVIEWED lists comparisons the scan no longer finds; remove them:\n{}",
        stale.join("\n")
    );
}

/// The scan itself: it finds the comparisons it must, and not the ones it must not.
#[test]
fn the_scan_sees_secret_comparisons_through_comments_strings_and_tests() {
    let source = r#"
fn check(params: &Params, session: &Session) -> bool {
    // a comment: csrf == session.csrf
    let note = "csrf == session.csrf";
    let ok = params.get("csrf") == Some(session.csrf.as_str());
    let c = '"';
    if code.len() != 6 || typed_code != stored { return false; }
    f.code_hashes.contains(&hash) && status == 200 && x.kind != Kind::RecoveryCodes
}
#[cfg(test)]
mod tests {
    fn t() { assert!(refresh_token == other); }
}
"#;
    let text = without_tests(&strip_comments_and_literals(source));
    let found: Vec<String> = secret_comparisons("x.rs", &text)
        .into_iter()
        .map(|f| format!("{}: {}", f.line, f.comparison))
        .collect();
    assert_eq!(
        found,
        [
            "5: params.get(\"\") == Some(session.csrf.as_str())",
            "7: typed_code != stored",
            "8: f.code_hashes.contains(&hash)",
        ]
    );
    let body = function_body(&text, "check").expect("found");
    assert!(body.starts_with('{') && body.ends_with('}') && body.contains("contains"));
}

/// Each known secret check, rewritten with `==` in memory, is caught: by the scan where its
/// operands have secret names, by [`SECRET_CHECKS`] where they do not.
#[test]
fn each_secret_check_rewritten_with_eq_is_caught() {
    let mutations = [
        (
            "server/src/http/client_auth.rs",
            "constant_time_eq(expected.as_bytes(), given.as_bytes())",
            "*expected == given",
        ),
        (
            "server/src/http/login/mod.rs",
            "constant_time_eq(token_key(&cookie).as_bytes(), login.browser.as_bytes())",
            "token_key(&cookie) == login.browser",
        ),
        (
            "server/src/http/login/mod.rs",
            "constant_time_eq(csrf.as_bytes(), login.csrf.as_bytes())",
            "csrf == login.csrf",
        ),
        (
            "server/src/http/account.rs",
            "constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes())",
            "csrf == session.csrf",
        ),
        (
            "server/src/http/logout.rs",
            "constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes())",
            "csrf == session.csrf",
        ),
        (
            "server/src/http/token.rs",
            "!constant_time_eq(pkce_s256(verifier).as_bytes(), challenge.as_bytes())",
            "pkce_s256(verifier) != *challenge",
        ),
        (
            "authenticators/src/email_code.rs",
            "bool::from(hash(&typed, salt).as_bytes().ct_eq(stored.as_bytes()))",
            "hash(&typed, salt) == stored",
        ),
        (
            "server/src/mfa/recovery.rs",
            ".any(|stored| constant_time_eq(stored.as_bytes(), hash.as_bytes()))",
            ".any(|stored| *stored == hash)",
        ),
        (
            "authenticators/src/password.rs",
            "bool::from(output.as_slice().ct_eq(expected.as_bytes()))",
            "output.as_slice() == expected.as_bytes()",
        ),
    ];
    for (file, constant_time, with_eq) in mutations {
        let source = read(file);
        assert!(
            source.contains(constant_time),
            "{file} no longer has `{constant_time}`: update this test"
        );
        let mutated = without_tests(&strip_comments_and_literals(&source.replacen(
            constant_time,
            with_eq,
            1,
        )));
        let scanned = secret_comparisons(file, &mutated)
            .iter()
            .any(|f| with_eq.contains(f.comparison.as_str()));
        let checked = SECRET_CHECKS.iter().filter(|c| c.file == file).any(|c| {
            function_body(&mutated, c.function)
                .is_some_and(|b| !b.contains("constant_time_eq(") && !b.contains(".ct_eq("))
        });
        assert!(
            scanned || checked,
            "{file}: `{with_eq}` instead of `{constant_time}` goes unnoticed"
        );
    }
}
