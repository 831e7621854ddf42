//! Sending mail (email one-time codes) through a pluggable [`MailSender`]: [`Outbox`] writes
//! each message as a file (development, tests, and a record to read when debugging delivery),
//! [`Smtp`] hands it to a mail server with lettre. `[email] sender` picks one.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::config::EmailSettings;

/// One plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

/// What a send returns.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Something that delivers mail.
pub trait MailSender: Send + Sync {
    /// Delivers `mail`, or says why not.
    fn send<'a>(&'a self, mail: &'a Mail) -> Sending<'a>;
}

/// Builds the sender `[email]` asks for.
pub fn from_settings(
    settings: &EmailSettings,
    data_dir: &std::path::Path,
) -> Result<Box<dyn MailSender>, String> {
    match settings.sender.as_str() {
        "outbox" => Ok(Box::new(Outbox::new(
            settings
                .outbox
                .clone()
                .unwrap_or_else(|| data_dir.join("outbox")),
            &settings.from,
        )?)),
        "smtp" => {
            let url = match (&settings.smtp_url, &settings.smtp_url_env) {
                (Some(url), None) => url.clone(),
                (None, Some(var)) => std::env::var(var)
                    .map_err(|_| format!("email.smtp_url_env: `{var}` is not set"))?,
                _ => {
                    return Err(
                        "email: `sender = \"smtp\"` needs exactly one of smtp_url, smtp_url_env"
                            .into(),
                    );
                }
            };
            Ok(Box::new(Smtp::new(&url, &settings.from)?))
        }
        other => Err(format!(
            "email.sender: `{other}` is not a sender; use `outbox` or `smtp`"
        )),
    }
}

/// Writes each message as an RFC 5322 file `UUID.eml` in a directory (lettre's file
/// transport).
pub struct Outbox {
    transport: lettre::AsyncFileTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    dir: PathBuf,
}

impl Outbox {
    /// An outbox writing into `dir` (created if missing).
    pub fn new(dir: PathBuf, from: &str) -> Result<Outbox, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("email.outbox {}: {e}", dir.display()))?;
        Ok(Outbox {
            transport: lettre::AsyncFileTransport::new(&dir),
            from: mailbox(from)?,
            dir,
        })
    }
}

impl MailSender for Outbox {
    fn send<'a>(&'a self, mail: &'a Mail) -> Sending<'a> {
        use lettre::AsyncTransport as _;
        Box::pin(async move {
            let message = message(&self.from, mail)?;
            self.transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| format!("outbox {}: {e}", self.dir.display()))
        })
    }
}

fn mailbox(from: &str) -> Result<lettre::message::Mailbox, String> {
    from.parse()
        .map_err(|e| format!("email.from: `{from}`: {e}"))
}

/// The message for `mail`; lettre's builder encodes headers, so no value can inject one.
fn message(from: &lettre::message::Mailbox, mail: &Mail) -> Result<lettre::Message, String> {
    let to = mail
        .to
        .parse()
        .map_err(|e| format!("`{}` is not an address: {e}", mail.to))?;
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| e.to_string())
}

/// Sends through an SMTP server (lettre, rustls).
pub struct Smtp {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl Smtp {
    /// A transport for `smtps://user:pass@host:465` or `smtp://host:587?tls=required`.
    pub fn new(url: &str, from: &str) -> Result<Smtp, String> {
        let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|e| format!("email.smtp_url: {e}"))?
            .build();
        Ok(Smtp {
            transport,
            from: mailbox(from)?,
        })
    }
}

impl MailSender for Smtp {
    /// Hands the message to the mail server in the background: the answer to the person must
    /// not take longer for addresses that have an account (only those get mail) than for
    /// those that do not. Delivery failures are logged.
    fn send<'a>(&'a self, mail: &'a Mail) -> Sending<'a> {
        use lettre::AsyncTransport as _;
        Box::pin(async move {
            let message = message(&self.from, mail)?;
            let transport = self.transport.clone();
            tokio::spawn(async move {
                if let Err(error) = transport.send(message).await {
                    tracing::error!(%error, "SMTP delivery failed");
                }
            });
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_outbox_writes_one_file_per_message_and_refuses_injected_headers() {
        let dir =
            std::env::temp_dir().join(format!("idflow-outbox-{}", crate::crypto::random_token(6)));
        let outbox = Outbox::new(dir.clone(), "idflow <no-reply@localhost>").expect("outbox");
        let mail = Mail {
            to: "alice@example.com".into(),
            subject: "Your code".into(),
            body: "123456".into(),
        };
        outbox.send(&mail).await.expect("sent");
        let files: Vec<_> = std::fs::read_dir(&dir).expect("dir").flatten().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].path()).expect("read");
        assert!(text.contains("To: alice@example.com\r\n"), "{text}");
        assert!(text.contains("123456"), "{text}");
        let injected = Mail {
            to: "alice@example.com\r\nBcc: eve@example.com".into(),
            ..mail
        };
        assert!(outbox.send(&injected).await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unknown_sender_or_a_missing_smtp_url_is_a_clear_error() {
        let mut settings = EmailSettings {
            sender: "pigeon".into(),
            ..EmailSettings::default()
        };
        let dir = std::path::Path::new("/tmp");
        assert!(
            from_settings(&settings, dir)
                .err()
                .unwrap_or_default()
                .contains("pigeon")
        );
        settings.sender = "smtp".into();
        assert!(
            from_settings(&settings, dir)
                .err()
                .unwrap_or_default()
                .contains("smtp_url")
        );
    }
}
