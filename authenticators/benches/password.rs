//! The raw argon2id rate: the ceiling for password logins per core, to compare the server's
//! login rate against (BENCHMARKS.md).

use criterion::{Criterion, criterion_group, criterion_main};
use idflow_authenticators::{PasswordHasher, PasswordPolicy, Scratch};

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("argon2id verify");
    group.sample_size(30);
    for (name, policy) in [
        ("idflow default m=19MiB t=2 p=1", PasswordPolicy::default()),
        (
            "Keycloak's m=7MiB t=5 p=1",
            PasswordPolicy {
                memory_kib: 7168,
                iterations: 5,
                ..PasswordPolicy::default()
            },
        ),
    ] {
        let hasher = PasswordHasher::new(policy).expect("valid parameters");
        let hash = hasher.hash("correct horse battery").expect("hash");
        group.bench_function(name, |b| {
            b.iter(|| assert!(hasher.verify("correct horse battery", &hash)))
        });
        // The server's path: one buffer reused across verifications.
        let mut scratch = Scratch::default();
        group.bench_function(format!("{name}, reused memory"), |b| {
            b.iter(|| assert!(hasher.verify_in("correct horse battery", &hash, &mut scratch)))
        });
    }
    group.finish();
}

// criterion's macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, verify);
}
use group::benches;
criterion_main!(benches);
