//! Throttling of failed attempts: fixed windows of counts per key (an IP address, a user and an
//! address, a user's emailed codes). Durable per-user locking is the flow's `lock_user`, kept in
//! the store; these limits slow guessing and mail bombing. One node counts in memory and forgets
//! everything on restart; nodes sharing a store count in it ([`Counter::shared`]), so that a
//! load balancer spreading a client over them does not multiply its limits. A store that
//! cannot count falls back to this node's memory: both err towards letting a person in.
//!
//! The map is bounded: past [`MAX_KEYS`] it drops finished windows first and then the older
//! half of the rest (logged), so a flood of addresses can neither exhaust memory nor switch
//! throttling off. IPv6 addresses count per /64, the block one host usually holds.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most keys tracked at once.
pub const MAX_KEYS: usize = 200_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    seconds: u64,
    count: u32,
}

impl Window {
    fn live(&self, now: u64) -> bool {
        now < self.start.saturating_add(self.seconds)
    }
}

/// Counts per key in fixed windows.
#[derive(Default)]
pub struct Counter {
    windows: Mutex<HashMap<String, Window>>,
    /// The store the nodes share, when they do: counts go there.
    shared: Option<std::sync::Arc<dyn crate::store::Store>>,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Counter {
    /// An empty counter in memory.
    pub fn new() -> Self {
        Counter::default()
    }

    /// A counter in `store` when several nodes share it, else in memory.
    pub fn shared(store: &std::sync::Arc<dyn crate::store::Store>) -> Self {
        Counter {
            windows: Mutex::default(),
            shared: store.shared().then(|| std::sync::Arc::clone(store)),
        }
    }

    /// The shared store's answer, or `None` (logged) when it has none.
    fn ask_store<T>(
        &self,
        ask: impl FnOnce(&dyn crate::store::Store) -> crate::store::StoreResult<T>,
    ) -> Option<T> {
        let store = self.shared.as_ref()?;
        match ask(store.as_ref()) {
            Ok(answer) => Some(answer),
            Err(error) => {
                tracing::error!(%error, "shared throttle counts unavailable: counting in memory");
                None
            }
        }
    }

    /// The count of `key` in the window of `seconds` containing `now`, and when that window
    /// ends.
    pub fn count(&self, key: &str, seconds: u64, now: u64) -> (u32, u64) {
        if let Some(counted) = self.ask_store(|s| s.window_add(key, seconds, now, 0)) {
            return counted;
        }
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        count_in(&windows, key, seconds, now)
    }

    /// Adds one to `key` and returns the new count.
    pub fn add(&self, key: &str, seconds: u64, now: u64) -> u32 {
        if let Some((count, _)) = self.ask_store(|s| s.window_add(key, seconds, now, 1)) {
            return count;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        add_in(&mut windows, key, seconds, now)
    }

    /// Checks every `(key, seconds, max)` and, only if all are under their `max`, adds one to
    /// each, atomically (parallel requests cannot all slip under a limit). Otherwise returns
    /// the seconds until the first full window ends.
    pub fn admit(&self, limits: &[(&str, u64, u32)], now: u64) -> Result<(), u64> {
        if let Some(admitted) = self.ask_store(|s| s.window_admit(limits, now)) {
            return admitted;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        for (key, seconds, max) in limits {
            let (count, ends) = count_in(&windows, key, *seconds, now);
            if count >= *max {
                return Err(ends.saturating_sub(now).max(1));
            }
        }
        for (key, seconds, _) in limits {
            add_in(&mut windows, key, *seconds, now);
        }
        Ok(())
    }

    /// Forgets `key` (a success ends the run of failures).
    pub fn clear(&self, key: &str) {
        let _ = self.ask_store(|s| s.window_clear(key));
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

fn count_in(windows: &HashMap<String, Window>, key: &str, seconds: u64, now: u64) -> (u32, u64) {
    match windows.get(key) {
        Some(w) if w.live(now) => (w.count, w.start.saturating_add(w.seconds)),
        _ => (0, now.saturating_add(seconds)),
    }
}

fn add_in(windows: &mut HashMap<String, Window>, key: &str, seconds: u64, now: u64) -> u32 {
    if windows.len() >= MAX_KEYS && !windows.contains_key(key) {
        make_room(windows, now);
    }
    let fresh = Window {
        start: now,
        seconds,
        count: 0,
    };
    let window = windows.entry(key.to_string()).or_insert(fresh);
    if !window.live(now) {
        *window = fresh;
    }
    window.count = window.count.saturating_add(1);
    window.count
}

/// Drops finished windows; if that was not enough, windows that counted a single event (what a
/// flood of fresh keys makes, and the least worth keeping); and if even that was not enough,
/// the older half of the rest.
fn make_room(windows: &mut HashMap<String, Window>, now: u64) {
    windows.retain(|_, w| w.live(now));
    if windows.len() < MAX_KEYS {
        return;
    }
    windows.retain(|_, w| w.count > 1);
    if windows.len() >= MAX_KEYS / 2 {
        let mut by_age: Vec<(u64, String)> = windows
            .iter()
            .map(|(key, w)| (w.start, key.clone()))
            .collect();
        by_age.sort_unstable();
        for (_, key) in by_age.iter().take(by_age.len() / 2) {
            windows.remove(key);
        }
    }
    tracing::warn!(kept = windows.len(), "throttle table full: dropped windows");
}

/// The part of an address that identifies one client: the whole IPv4 address, the /64 of an
/// IPv6 one (a host can hold a whole /64 and rotate through it).
pub fn client_block(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        _ => ip.to_string(),
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
    /// Limits from the configuration, counted in memory.
    pub fn new(settings: crate::config::ThrottleSettings) -> Self {
        Throttle {
            settings,
            failures: Counter::new(),
        }
    }

    /// Limits from the configuration, counted with the other nodes sharing `store` (in memory
    /// when none do).
    pub fn shared(
        settings: crate::config::ThrottleSettings,
        store: &std::sync::Arc<dyn crate::store::Store>,
    ) -> Self {
        Throttle {
            settings,
            failures: Counter::shared(store),
        }
    }

    fn keys(ip: &str, user: Option<&str>) -> (String, Option<String>) {
        let block = client_block(ip);
        (
            format!("ip {block}"),
            user.map(|u| format!("user {u} ip {block}")),
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
    fn ipv6_counts_per_64_and_a_full_table_keeps_throttling() {
        assert_eq!(client_block("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            client_block("2001:db8:1:2:ffff::9"),
            client_block("2001:db8:1:2::5")
        );
        assert_eq!(client_block("::ffff:1.2.3.4"), "1.2.3.4");
        assert_eq!(client_block("1.2.3.4"), "1.2.3.4");
        let t = throttle(3, 100);
        for host in 1..=3 {
            t.failed(&format!("2001:db8:1:2::{host}"), None, 0);
        }
        assert!(
            t.check("2001:db8:1:2::99", None, 1).is_err(),
            "one /64 is one client"
        );

        let counter = Counter::new();
        {
            let mut windows = counter.windows.lock().unwrap_or_else(|e| e.into_inner());
            for i in 0..MAX_KEYS as u64 {
                let window = Window {
                    start: i,
                    seconds: u64::MAX / 2,
                    count: 1,
                };
                windows.insert(format!("filler {i}"), window);
            }
        }
        let now = MAX_KEYS as u64;
        counter.add("attacker", 60, now);
        counter.add("attacker", 60, now);
        assert_eq!(
            counter.count("attacker", 60, now).0,
            2,
            "new keys are still counted"
        );
        let kept = counter
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        assert!(kept <= MAX_KEYS / 2 + 2, "{kept}");
    }

    #[test]
    fn admit_checks_every_limit_before_counting_any() {
        let counter = Counter::new();
        assert!(counter.admit(&[("a", 30, 1), ("b", 3600, 10)], 0).is_ok());
        assert_eq!(counter.admit(&[("a", 30, 1), ("b", 3600, 10)], 5), Err(25));
        assert_eq!(
            counter.count("b", 3600, 5).0,
            1,
            "a refused admission counts nothing"
        );
        assert!(counter.admit(&[("a", 30, 1), ("b", 3600, 10)], 31).is_ok());
        assert_eq!(
            counter.count("b", 3600, 31).0,
            2,
            "each window keeps its own length"
        );
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
