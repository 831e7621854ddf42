//! Password verification (and the hashing of passwords people choose without signing in: a
//! sign-up, a JIT prompt) on a fixed set of threads, each keeping its argon2 memory between
//! logins. Bounds both concurrency (a burst of attempts queues instead of starting hundreds of
//! 19 MiB hashes) and memory (threads × `memory_kib`, steady, instead of what the allocator
//! keeps after every thread of the blocking pool has hashed once).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use idflow_authenticators::{PasswordError, PasswordHasher, Scratch};
use tokio::sync::oneshot;

enum Job {
    Verify {
        password: String,
        /// The stored hash; `None` verifies against the decoy (no such user, or the account
        /// may not log in).
        hash: Option<String>,
        answer: oneshot::Sender<bool>,
    },
    Hash {
        password: String,
        answer: oneshot::Sender<Result<String, PasswordError>>,
    },
}

/// The verification threads.
pub struct PasswordPool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl PasswordPool {
    /// Starts `threads` verification threads using `hasher`.
    pub fn new(hasher: PasswordHasher, threads: usize) -> std::io::Result<PasswordPool> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let hasher = hasher.clone();
            std::thread::Builder::new()
                .name(format!("idflow-argon2-{index}"))
                .spawn(move || {
                    let mut scratch = Scratch::default();
                    loop {
                        let job = {
                            let receiver = receiver.lock().unwrap_or_else(|p| p.into_inner());
                            receiver.recv()
                        };
                        let Ok(job) = job else {
                            return; // the pool was dropped
                        };
                        match job {
                            Job::Verify {
                                password,
                                hash,
                                answer,
                            } => {
                                let verified = match &hash {
                                    Some(hash) => hasher.verify_in(&password, hash, &mut scratch),
                                    None => hasher.verify_decoy_in(&password, &mut scratch),
                                };
                                let _ = answer.send(verified);
                            }
                            Job::Hash { password, answer } => {
                                let _ = answer.send(hasher.hash(&password));
                            }
                        }
                    }
                })?;
        }
        Ok(PasswordPool {
            jobs: Mutex::new(sender),
        })
    }

    /// Whether `password` matches `hash` (`None`: spend the time and answer false).
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let (answer, answered) = oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Job::Verify {
                password,
                hash,
                answer,
            });
        // A pool whose threads are gone verifies nothing: fail closed.
        sent.is_ok() && answered.await.unwrap_or(false)
    }

    /// The hash of a new `password` (after the policy's checks), made on the pool's threads:
    /// for passwords chosen by people who have not signed in, so that a flood of sign-up forms
    /// queues instead of starting a 19 MiB hash each.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let (answer, answered) = oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Job::Hash { password, answer });
        let gone = || PasswordError::BadParameters("the hashing threads are gone".into());
        if sent.is_err() {
            return Err(gone());
        }
        answered.await.unwrap_or_else(|_| Err(gone()))
    }
}
