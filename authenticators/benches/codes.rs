//! The cost of checking second-factor codes: a TOTP code (three HMAC-SHA1 candidates in the
//! worst case, a wrong code) and an emailed code. Both are far below a password check, so a
//! second factor adds little to a login's cost (BENCHMARKS.md).

use criterion::{Criterion, criterion_group, criterion_main};
use idflow_authenticators::{email_code, totp};

fn codes(c: &mut Criterion) {
    let secret = [7u8; totp::SECRET_BYTES];
    let now = 1_800_000_000;
    let right = totp::code_at(&secret, now).expect("code");
    let mut group = c.benchmark_group("second-factor codes");
    group.bench_function("totp verify, right code", |b| {
        b.iter(|| totp::verify(&secret, &right, now, 0).expect("passes"))
    });
    group.bench_function("totp verify, wrong code (whole window)", |b| {
        b.iter(|| totp::verify(&secret, "000000", now, 0).expect_err("refused"))
    });
    let stored = email_code::hash("123456", "challenge");
    group.bench_function("email code verify", |b| {
        b.iter(|| email_code::verify("123456", "challenge", &stored).expect("passes"))
    });
    group.finish();
}

// criterion's macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, codes);
}
use group::benches;
criterion_main!(benches);
