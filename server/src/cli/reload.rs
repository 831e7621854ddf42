//! `idflow reload`: asks a running server to read its configuration file and flows again
//! (`POST /admin/v1/reload`). The server checks everything first and keeps what runs if
//! anything is wrong; this prints what changed, or why nothing did.
//!
//! Credentials come from the environment: `IDFLOW_ADMIN_TOKEN` (an access token of an
//! administrator's sign-in), else `IDFLOW_ADMIN_USER` (default `admin`) and
//! `IDFLOW_ADMIN_PASSWORD`, sent as HTTP Basic. The user needs the `config:reload` privilege
//! (the built-in `admin` holds every privilege).

use std::time::Duration;

use clap::Args;

use super::serve::Location;
use super::{EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, out};
use crate::config::Overrides;

/// Flags of `idflow reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The running server's base URL (default: the configuration's issuer).
    #[arg(long, env = "IDFLOW_SERVER")]
    server: Option<String>,
    #[command(flatten)]
    location: Location,
}

/// How the CLI authenticates.
enum Credentials {
    Bearer(String),
    Basic(String, String),
}

fn credentials() -> Result<Credentials, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(token) = var("IDFLOW_ADMIN_TOKEN") {
        return Ok(Credentials::Bearer(token));
    }
    match var("IDFLOW_ADMIN_PASSWORD") {
        Some(password) => Ok(Credentials::Basic(
            var("IDFLOW_ADMIN_USER").unwrap_or_else(|| crate::app::ADMIN.to_string()),
            password,
        )),
        None => Err(
            "set IDFLOW_ADMIN_PASSWORD (and IDFLOW_ADMIN_USER, default admin) or IDFLOW_ADMIN_TOKEN"
                .into(),
        ),
    }
}

/// Runs `idflow reload`.
pub fn run(args: &ReloadArgs) -> u8 {
    let server = match &args.server {
        Some(server) => server.trim_end_matches('/').to_string(),
        None => match args.location.load(Overrides::default()) {
            Ok(config) => config.issuer,
            // `load` printed why; the server is named by the configuration.
            Err(_) => {
                eprintln!("error: give --server, or a configuration that loads");
                return EXIT_PROBLEMS;
            }
        },
    };
    let credentials = match credentials() {
        Ok(credentials) => credentials,
        Err(why) => {
            eprintln!("error: {why}");
            return EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return EXIT_USAGE;
        }
    };
    runtime.block_on(call(&server, credentials))
}

async fn call(server: &str, credentials: Credentials) -> u8 {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: HTTP client: {error}");
            return EXIT_USAGE;
        }
    };
    let url = format!("{server}/admin/v1/reload");
    let request = match credentials {
        Credentials::Bearer(token) => client.post(&url).bearer_auth(token),
        Credentials::Basic(user, password) => client.post(&url).basic_auth(user, Some(password)),
    }
    .header("content-type", "application/json")
    .body("{}");
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            eprintln!(
                "error: cannot reach the server at {server}: {}",
                reason(&error)
            );
            return EXIT_USAGE;
        }
    };
    let status = response.status();
    let body: serde_json::Value = response
        .bytes()
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let detail = body["detail"].as_str().unwrap_or_default();
    match status.as_u16() {
        200 => {
            out(body["text"].as_str().unwrap_or("reloaded\n"));
            EXIT_OK
        }
        422 => {
            eprintln!("error: reload refused, the running configuration stays: {detail}");
            EXIT_PROBLEMS
        }
        401 | 403 | 429 => {
            eprintln!("error: the server refused the credentials ({status}): {detail}");
            EXIT_USAGE
        }
        _ => {
            eprintln!("error: the server answered {status}: {detail}");
            EXIT_USAGE
        }
    }
}

/// The innermost cause of a request error (reqwest's own message is only "error sending
/// request").
fn reason(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
