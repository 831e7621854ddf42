//! Throttling of failed attempts, in memory: fixed windows of counts per key (an IP address, a
//! user and an address, a user's emailed codes). Durable per-user locking is the flow's
//! `lock_user`, kept in the store; these limits slow guessing and mail bombing on one node, and
//! forget everything on restart, which only ever errs towards letting a person in.
//!
//! The map is bounded: past [`MAX_KEYS`] it drops finished windows first and then stops
//! tracking new keys (logged), so a flood of addresses cannot exhaust memory.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most keys tracked at once.
pub const MAX_KEYS: usize = 200_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    count: u32,
}

/// Counts per key in fixed windows.
#[derive(Debug, Default)]
pub struct Counter {
    windows: Mutex<HashMap<String, Window>>,
}

impl Counter {
    /// An empty counter.
    pub fn new() -> Self {
        Counter::default()
    }

    /// The count of `key` in the window of `seconds` containing `now`, and when that window
    /// ends.
    pub fn count(&self, key: &str, seconds: u64, now: u64) -> (u32, u64) {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(key) {
            Some(w) if now < w.start.saturating_add(seconds) => {
                (w.count, w.start.saturating_add(seconds))
            }
            _ => (0, now.saturating_add(seconds)),
        }
    }

    /// Adds one to `key` and returns the new count.
    pub fn add(&self, key: &str, seconds: u64, now: u64) -> u32 {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_KEYS && !windows.contains_key(key) {
            windows.retain(|_, w| now < w.start.saturating_add(seconds));
            if windows.len() >= MAX_KEYS {
                tracing::warn!("throttle table full: not tracking {key}");
                return 0;
            }
        }
        let window = windows.entry(key.to_string()).or_insert(Window {
            start: now,
            count: 0,
        });
        if now >= window.start.saturating_add(seconds) {
            *window = Window {
                start: now,
                count: 0,
            };
        }
        window.count = window.count.saturating_add(1);
        window.count
    }

    /// Forgets `key` (a success ends the run of failures).
    pub fn clear(&self, key: &str) {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// The limits of `[throttle]` applied to credential attempts.
#[derive(Debug)]
pub struct Throttle {
    settings: crate::config::ThrottleSettings,
    failures: Counter,
}

/// An attempt refused before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// Which limit: `ip` or `user_ip`.
    pub limit: &'static str,
    /// Seconds until attempts are accepted again.
    pub retry_after: u64,
}

impl Throttle {
    /// Limits from the configuration.
    pub fn new(settings: crate::config::ThrottleSettings) -> Self {
        Throttle {
            settings,
            failures: Counter::new(),
        }
    }

    fn keys(ip: &str, user: Option<&str>) -> (String, Option<String>) {
        (
            format!("ip {ip}"),
            user.map(|u| format!("user {u} ip {ip}")),
        )
    }

    /// Whether an attempt from `ip` (at `user`, when known) may be checked now.
    pub fn check(&self, ip: &str, user: Option<&str>, now: u64) -> Result<(), Throttled> {
        let seconds = self.settings.window_seconds;
        let (ip_key, user_key) = Throttle::keys(ip, user);
        let limits = [
            ("ip", Some(ip_key), self.settings.ip_failures),
            ("user_ip", user_key, self.settings.user_ip_failures),
        ];
        for (limit, key, max) in limits {
            let Some(key) = key.filter(|_| max > 0) else {
                continue;
            };
            let (count, ends) = self.failures.count(&key, seconds, now);
            if count >= max {
                return Err(Throttled {
                    limit,
                    retry_after: ends.saturating_sub(now).max(1),
                });
            }
        }
        Ok(())
    }

    /// Counts a failed attempt; returns the limit it reached, if it reached one.
    pub fn failed(&self, ip: &str, user: Option<&str>, now: u64) -> Option<&'static str> {
        let seconds = self.settings.window_seconds;
        let (ip_key, user_key) = Throttle::keys(ip, user);
        let mut reached = None;
        if self.settings.ip_failures > 0
            && self.failures.add(&ip_key, seconds, now) == self.settings.ip_failures
        {
            reached = Some("ip");
        }
        if let Some(key) = user_key.filter(|_| self.settings.user_ip_failures > 0)
            && self.failures.add(&key, seconds, now) == self.settings.user_ip_failures
        {
            reached = Some("user_ip");
        }
        reached
    }

    /// A user passed from `ip`: their failures from there no longer count.
    pub fn passed(&self, ip: &str, user: &str) {
        if let (_, Some(key)) = Throttle::keys(ip, Some(user)) {
            self.failures.clear(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThrottleSettings;

    fn throttle(ip: u32, user_ip: u32) -> Throttle {
        Throttle::new(ThrottleSettings {
            ip_failures: ip,
            user_ip_failures: user_ip,
            window_seconds: 60,
        })
    }

    #[test]
    fn refuses_a_user_from_one_address_after_the_limit_until_the_window_ends() {
        let t = throttle(100, 3);
        for _ in 0..2 {
            assert_eq!(t.failed("1.2.3.4", Some("alice"), 1000), None);
        }
        assert_eq!(t.failed("1.2.3.4", Some("alice"), 1000), Some("user_ip"));
        let refused = t.check("1.2.3.4", Some("alice"), 1010).unwrap_err();
        assert_eq!(
            refused,
            Throttled {
                limit: "user_ip",
                retry_after: 50
            }
        );
        // Alice from elsewhere, and bob from the same address, are not affected.
        assert!(t.check("5.6.7.8", Some("alice"), 1010).is_ok());
        assert!(t.check("1.2.3.4", Some("bob"), 1010).is_ok());
        assert!(
            t.check("1.2.3.4", Some("alice"), 1060).is_ok(),
            "window over"
        );
    }

    #[test]
    fn refuses_an_address_that_fails_across_many_users() {
        let t = throttle(5, 100);
        for i in 0..5 {
            t.failed("9.9.9.9", Some(&format!("user{i}")), 0);
        }
        assert_eq!(
            t.check("9.9.9.9", Some("fresh"), 1).unwrap_err().limit,
            "ip"
        );
        assert_eq!(t.check("9.9.9.9", None, 1).unwrap_err().limit, "ip");
    }

    #[test]
    fn a_success_clears_that_users_failures_and_zero_disables_a_limit() {
        let t = throttle(0, 2);
        t.failed("1.1.1.1", Some("alice"), 0);
        t.passed("1.1.1.1", "alice");
        t.failed("1.1.1.1", Some("alice"), 0);
        assert!(t.check("1.1.1.1", Some("alice"), 0).is_ok());
        for _ in 0..1000 {
            t.failed("1.1.1.1", None, 0);
        }
        assert!(t.check("1.1.1.1", None, 0).is_ok(), "ip limit off");
    }
}
