//! Password verification on a fixed set of threads, each keeping its argon2 memory between
//! logins. Bounds both concurrency (a burst of attempts queues instead of starting hundreds of
//! 19 MiB hashes) and memory (threads × `memory_kib`, steady, instead of what the allocator
//! keeps after every thread of the blocking pool has hashed once).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use idflow_authenticators::{PasswordHasher, Scratch};
use tokio::sync::oneshot;

struct Job {
    password: String,
    /// The stored hash; `None` verifies against the decoy (no such user, or the account may
    /// not log in).
    hash: Option<String>,
    answer: oneshot::Sender<bool>,
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
                        let verified = match &job.hash {
                            Some(hash) => hasher.verify_in(&job.password, hash, &mut scratch),
                            None => hasher.verify_decoy_in(&job.password, &mut scratch),
                        };
                        let _ = job.answer.send(verified);
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
            .send(Job {
                password,
                hash,
                answer,
            });
        // A pool whose threads are gone verifies nothing: fail closed.
        sent.is_ok() && answered.await.unwrap_or(false)
    }
}
