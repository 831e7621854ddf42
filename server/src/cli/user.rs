//! `idflow user ...` and `idflow role ...`: users and roles in a data directory (the server
//! must be stopped: the embedded store is opened by one process at a time).

use std::io::BufRead;

use clap::{Args, Subcommand};
use idflow_authenticators::PasswordHasher;

use super::serve::Location;
use super::{EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, out};
use crate::app::now;
use crate::crypto::random_token;
use crate::store::{AuditEvent, Role, Store, User, Write};

/// `idflow user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Add(AddArgs),
    /// List users.
    List(LocationArgs),
    /// Show one user.
    Show(NameArgs),
    /// Set a user's password (read from standard input, or generated and printed).
    SetPassword(PasswordArgs),
    /// Give a user a role.
    Grant(RoleArgs),
    /// Take a role from a user.
    Revoke(RoleArgs),
    /// Disable a user: no more logins, refresh tokens stop working.
    Disable(NameArgs),
    /// Enable a disabled user and clear any lock.
    Enable(NameArgs),
    /// List a user's second factors (authenticator apps, passkeys, recovery codes).
    Factors(NameArgs),
    /// Remove one of a user's factors (a lost phone or key), by the id `factors` shows, or
    /// `all` for every one: the user's flows then ask them to enroll again.
    RemoveFactor(FactorArgs),
}

/// `user remove-factor`.
#[derive(Debug, Args)]
pub struct FactorArgs {
    /// Username or email.
    name: String,
    /// The factor id, or `all`.
    factor: String,
    #[command(flatten)]
    location: Location,
}

/// `idflow role` subcommands.
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create or update a role.
    Add(RoleAddArgs),
    /// List roles with their privileges.
    List(LocationArgs),
}

/// Only the location flags.
#[derive(Debug, Args)]
pub struct LocationArgs {
    #[command(flatten)]
    location: Location,
}

/// A user by username or email.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Username or email.
    name: String,
    #[command(flatten)]
    location: Location,
}

/// `user add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The username.
    username: String,
    /// Email address.
    #[arg(long)]
    email: Option<String>,
    /// Display name.
    #[arg(long = "display-name")]
    display_name: Option<String>,
    /// Roles to give (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Read the password from standard input (one line) instead of generating one.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    location: Location,
}

/// `user set-password`.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Username or email.
    name: String,
    /// Read the password from standard input (one line) instead of generating one.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    location: Location,
}

/// `user grant|revoke`.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// Username or email.
    name: String,
    /// The role.
    role: String,
    #[command(flatten)]
    location: Location,
}

/// `role add`.
#[derive(Debug, Args)]
pub struct RoleAddArgs {
    /// The role name.
    name: String,
    /// A privilege (repeatable), e.g. `users:read`.
    #[arg(long = "privilege")]
    privileges: Vec<String>,
    /// What the role is for.
    #[arg(long, default_value = "")]
    description: String,
    #[command(flatten)]
    location: Location,
}

struct Opened {
    store: std::sync::Arc<dyn Store>,
    hasher: PasswordHasher,
    targets: Vec<crate::config::provisioning::Target>,
}

impl Opened {
    /// The outbox writes for a directory event (delivered when the server next runs).
    fn queue(&self, event: &str, user: &str) -> Vec<Write> {
        crate::provisioning::queue(&self.targets, event, user, now())
    }
}

fn open(location: &Location) -> Result<Opened, u8> {
    let (config, store) = location.open_store()?;
    let hasher = PasswordHasher::new(config.password).map_err(|e| {
        eprintln!("error: [password]: {e}");
        EXIT_USAGE
    })?;
    Ok(Opened {
        store,
        hasher,
        targets: config.provisioning_targets,
    })
}

fn fail(error: impl std::fmt::Display) -> u8 {
    eprintln!("error: {error}");
    EXIT_PROBLEMS
}

fn find(store: &dyn Store, name: &str) -> Result<User, u8> {
    match store.user_by_login(name) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(fail(format!("no user `{name}`"))),
        Err(error) => Err(fail(error)),
    }
}

fn audit(event: &str, subject: &str, detail: serde_json::Value) -> Write {
    Write::Audit(AuditEvent {
        time: now(),
        event: event.into(),
        actor: "cli".into(),
        subject: subject.into(),
        ip: String::new(),
        detail,
    })
}

/// A password from standard input, or a generated one (printed once).
fn password(from_stdin: bool) -> Result<(String, bool), u8> {
    if !from_stdin {
        return Ok((random_token(15), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(fail)?;
    Ok((line.trim_end_matches(['\r', '\n']).to_string(), false))
}

fn describe(user: &User) -> String {
    let mut flags = Vec::new();
    if user.disabled {
        flags.push("disabled".to_string());
    }
    if user.locked_at(now()) {
        flags.push(format!("locked until {}", user.locked_until));
    }
    format!(
        "{}\t{}\t{}\t[{}]{}",
        user.username,
        user.id,
        if user.email.is_empty() {
            "-"
        } else {
            &user.email
        },
        user.roles.join(","),
        if flags.is_empty() {
            String::new()
        } else {
            format!("\t{}", flags.join(", "))
        }
    )
}

/// Runs a user subcommand.
pub fn run_user(command: UserCommand) -> u8 {
    match run_user_inner(command) {
        Ok(()) => EXIT_OK,
        Err(code) => code,
    }
}

fn run_user_inner(command: UserCommand) -> Result<(), u8> {
    match command {
        UserCommand::Add(args) => {
            let opened = open(&args.location)?;
            for role in &args.roles {
                if opened.store.role(role).map_err(fail)?.is_none() {
                    return Err(fail(format!(
                        "no role `{role}` (create it with `idflow role add`)"
                    )));
                }
            }
            let (password, generated) = password(args.password_stdin)?;
            let hash = opened.hasher.hash(&password).map_err(fail)?;
            let mut user = User::new(random_token(12), args.username.clone(), now());
            user.email = args.email.unwrap_or_default();
            user.name = args.display_name.unwrap_or_default();
            user.roles = args.roles;
            user.password_hash = Some(hash);
            let id = user.id.clone();
            let mut batch = vec![
                Write::CreateUser(user),
                audit(
                    "user.create",
                    &id,
                    serde_json::json!({ "username": args.username }),
                ),
            ];
            batch.extend(opened.queue("user.created", &id));
            opened.store.commit(batch).map_err(fail)?;
            out(&format!("created {} ({id})\n", args.username));
            if generated {
                out(&format!("password: {password}\n"));
            }
        }
        UserCommand::List(args) => {
            let opened = open(&args.location)?;
            let mut users = opened.store.users().map_err(fail)?;
            users.sort_by(|a, b| a.username.cmp(&b.username));
            let text: String = users.iter().map(|u| describe(u) + "\n").collect();
            out(&text);
        }
        UserCommand::Show(args) => {
            let opened = open(&args.location)?;
            let mut user = find(opened.store.as_ref(), &args.name)?;
            // The parameters are not secret and tell whether a rehash is due; salt and hash are.
            user.password_hash = user.password_hash.map(|hash| {
                hash.split('$')
                    .filter(|part| !part.is_empty())
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let text = serde_json::to_string_pretty(&user).map_err(fail)?;
            out(&format!("{text}\n"));
        }
        UserCommand::SetPassword(args) => {
            let opened = open(&args.location)?;
            let mut user = find(opened.store.as_ref(), &args.name)?;
            let (password, generated) = password(args.password_stdin)?;
            user.password_hash = Some(opened.hasher.hash(&password).map_err(fail)?);
            user.failed_attempts = 0;
            user.locked_until = 0;
            let id = user.id.clone();
            opened
                .store
                .commit(vec![
                    Write::UpdateUser(user),
                    audit("user.set_password", &id, serde_json::Value::Null),
                ])
                .map_err(fail)?;
            out(&format!("password changed for {}\n", args.name));
            if generated {
                out(&format!("password: {password}\n"));
            }
        }
        UserCommand::Grant(args) => {
            let opened = open(&args.location)?;
            let user = find(opened.store.as_ref(), &args.name)?;
            if opened.store.role(&args.role).map_err(fail)?.is_none() {
                return Err(fail(format!("no role `{}`", args.role)));
            }
            let mut batch = vec![
                Write::GrantRole {
                    user: user.id.clone(),
                    role: args.role.clone(),
                },
                audit(
                    "user.grant",
                    &user.id,
                    serde_json::json!({ "role": args.role }),
                ),
            ];
            batch.extend(opened.queue("role.assigned", &user.id));
            opened.store.commit(batch).map_err(fail)?;
            out(&format!("{} now has the role {}\n", args.name, args.role));
        }
        UserCommand::Revoke(args) => {
            let opened = open(&args.location)?;
            let user = find(opened.store.as_ref(), &args.name)?;
            let mut batch = vec![
                Write::RevokeRole {
                    user: user.id.clone(),
                    role: args.role.clone(),
                },
                audit(
                    "user.revoke",
                    &user.id,
                    serde_json::json!({ "role": args.role }),
                ),
            ];
            batch.extend(opened.queue("role.unassigned", &user.id));
            opened.store.commit(batch).map_err(fail)?;
            out(&format!(
                "{} no longer has the role {}\n",
                args.name, args.role
            ));
        }
        UserCommand::Disable(args) => set_disabled(&args, true)?,
        UserCommand::Enable(args) => set_disabled(&args, false)?,
        UserCommand::Factors(args) => {
            let opened = open(&args.location)?;
            let user = find(opened.store.as_ref(), &args.name)?;
            let factors = opened.store.factors(&user.id).map_err(fail)?;
            if factors.is_empty() {
                out(&format!("{} has no second factor\n", args.name));
            }
            let text: String = factors
                .iter()
                .map(|f| {
                    let extra = match f.kind {
                        crate::store::FactorKind::RecoveryCodes => {
                            format!(", {} unused", f.code_hashes.len())
                        }
                        _ => String::new(),
                    };
                    format!(
                        "{}  {}  {}  created {}, last used {}{extra}\n",
                        f.id,
                        f.kind.authenticator(),
                        f.label,
                        f.created,
                        if f.last_used == 0 {
                            "never".to_string()
                        } else {
                            f.last_used.to_string()
                        }
                    )
                })
                .collect();
            out(&text);
        }
        UserCommand::RemoveFactor(args) => {
            let opened = open(&args.location)?;
            let user = find(opened.store.as_ref(), &args.name)?;
            let factors = opened.store.factors(&user.id).map_err(fail)?;
            let doomed: Vec<_> = factors
                .iter()
                .filter(|f| args.factor == "all" || f.id == args.factor)
                .collect();
            if doomed.is_empty() {
                return Err(fail(format!(
                    "{} has no factor `{}` (see `idflow user factors {}`)",
                    args.name, args.factor, args.name
                )));
            }
            let mut batch: Vec<Write> = doomed
                .iter()
                .map(|f| Write::DeleteFactor {
                    user: user.id.clone(),
                    id: f.id.clone(),
                })
                .collect();
            batch.push(Write::EndUserSessions {
                user: user.id.clone(),
                except: None,
            });
            batch.push(audit(
                "factor.removed",
                &user.id,
                serde_json::json!({ "factors": doomed.iter().map(|f| &f.id).collect::<Vec<_>>() }),
            ));
            opened.store.commit(batch).map_err(fail)?;
            out(&format!(
                "removed {} factor(s) of {}\n",
                doomed.len(),
                args.name
            ));
        }
    }
    Ok(())
}

fn set_disabled(args: &NameArgs, disabled: bool) -> Result<(), u8> {
    let opened = open(&args.location)?;
    let mut user = find(opened.store.as_ref(), &args.name)?;
    let before = user.clone();
    user.disabled = disabled;
    if !disabled {
        user.locked_until = 0;
        user.failed_attempts = 0;
    }
    let id = user.id.clone();
    let event = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    let mut batch = Vec::new();
    for change in crate::provisioning::update_events(&before, &user) {
        batch.extend(opened.queue(change, &id));
    }
    batch.push(Write::UpdateUser(user));
    batch.push(audit(event, &id, serde_json::Value::Null));
    opened.store.commit(batch).map_err(fail)?;
    out(&format!(
        "{} is {}\n",
        args.name,
        if disabled { "disabled" } else { "enabled" }
    ));
    Ok(())
}

/// Runs a role subcommand.
pub fn run_role(command: RoleCommand) -> u8 {
    let result = match command {
        RoleCommand::Add(args) => open(&args.location).and_then(|opened| {
            // A SCIM client's id for the role survives a change of its privileges.
            let external_id = opened
                .store
                .role(&args.name)
                .map_err(fail)?
                .and_then(|r| r.external_id);
            let role = Role {
                name: args.name.clone(),
                description: args.description,
                privileges: args.privileges,
                external_id,
            };
            opened
                .store
                .commit(vec![
                    Write::PutRole(role),
                    audit("role.put", &args.name, serde_json::Value::Null),
                ])
                .map_err(fail)?;
            out(&format!("role {} saved\n", args.name));
            Ok(())
        }),
        RoleCommand::List(args) => open(&args.location).and_then(|opened| {
            let roles = opened.store.roles().map_err(fail)?;
            let text: String = roles
                .iter()
                .map(|r| {
                    format!(
                        "{}\t[{}]\t{}\n",
                        r.name,
                        r.privileges.join(","),
                        r.description
                    )
                })
                .collect();
            out(&text);
            Ok(())
        }),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(code) => code,
    }
}
