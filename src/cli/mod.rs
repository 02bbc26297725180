//! The command line (docs/reference.md, Commands): parses arguments, runs one command, and
//! turns every failure into one clear line on stderr and an exit code (0 ok, 1 runtime
//! failure, 2 bad usage or input).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

pub mod demo;

use crate::config::{Argon2Params, Config, parse_duration};
use crate::core::event::EventKind;
use crate::core::identity::User;
use crate::core::secret::Password;
use crate::core::time::rfc3339;
use crate::core::time::{Clock, SystemClock};
use crate::gateway::Listeners;
use crate::service::accounts::{self, AccountError, Accounts, Edit, Profile};
use crate::service::audit::{Filters, Query};
use crate::service::hasher;
use crate::service::two_factor;
use crate::store;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An authenticating reverse proxy for on-premise portals"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// How the gateway's own log lines (on stderr) are written.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Take the listening sockets over from the running gateway instead of binding them
        /// (what `SIGUSR2` starts; docs: upgrades).
        #[arg(long)]
        upgrade: bool,
    },
    /// A one-command tour: the gateway in front of a built-in demo portal.
    Demo {
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Validate a configuration file; print `ok` or every problem.
    CheckConfig {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Read a password from stdin and print its argon2id hash.
    HashPassword,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Query the event log, oldest first.
    Audit {
        /// Events of this login (case-insensitive).
        #[arg(long, value_name = "LOGIN")]
        user: Option<String>,
        /// Events from this address, CIDR block or FIRST-LAST range.
        #[arg(long, value_name = "CIDR")]
        ip: Option<String>,
        /// Events of this kind, e.g. login_failure.
        #[arg(long, value_name = "EVENT")]
        event: Option<String>,
        /// Events of the last DURATION, e.g. 90s, 24m, 12h, 30d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (prints a generated password unless --password-stdin is given).
    Add {
        login: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        phone: String,
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List every user.
    List {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show one user.
    Show {
        login: String,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Set a new password (read from stdin) and end the user's sessions.
    SetPassword {
        login: String,
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Block a user from signing in and end their sessions (or many: `--stdin`).
    Dismiss {
        #[arg(required_unless_present = "stdin")]
        login: Option<String>,
        /// Logins one per line on stdin (blank lines and `#` comments skipped): all are
        /// dismissed in one run, or none when one is unknown.
        #[arg(long, conflicts_with = "login")]
        stdin: bool,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Allow a dismissed user to sign in again.
    Restore {
        login: String,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// End every session and remember-me token of a user, on every gateway.
    LogoutAll {
        login: String,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Invite someone: the user is created as invited and e-mailed a link to set a password
    /// (or the link is printed); a new invitation replaces the old link.
    Invite {
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        phone: String,
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Print the link instead of e-mailing it.
        #[arg(long)]
        print_link: bool,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Correct a user: login, e-mail, name, phone, groups (live sessions follow).
    Edit {
        login: String,
        #[arg(long = "login", value_name = "LOGIN")]
        new_login: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        phone: Option<String>,
        /// The user's groups become these (repeat for several).
        #[arg(long = "group", value_name = "GROUP", conflicts_with = "no_groups")]
        groups: Vec<String>,
        /// The user is in no group any more.
        #[arg(long)]
        no_groups: bool,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Send a password reset link by e-mail (through the gateways' outbox), or print it.
    SendReset {
        login: String,
        /// Print the link instead of e-mailing it (for deployments without mail).
        #[arg(long)]
        print_link: bool,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Two-step verification of a user: see it, remove it, or turn it off for a while.
    #[command(name = "2fa")]
    TwoFactor {
        login: String,
        action: TwoFactorAction,
        /// With `disable`: how long the password alone lets the user in, e.g. 24h.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TwoFactorAction {
    /// Enrolled or not, backup codes left, turned off until when.
    Status,
    /// Remove the factor and the backup codes; end every session and remember-me token.
    Reset,
    /// Let the password alone in until `--for` has passed; then the factor is asked again.
    Disable,
}

/// A failure to report: the message (one line per problem) and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            code: 2,
            message: message.into(),
        }
    }

    pub fn runtime(message: impl std::fmt::Display) -> CliError {
        CliError {
            code: 1,
            message: message.to_string(),
        }
    }
}

impl From<store::StoreError> for CliError {
    fn from(e: store::StoreError) -> CliError {
        match e {
            store::StoreError::Duplicate(m) => CliError::usage(m),
            other => CliError::runtime(other),
        }
    }
}

impl From<AccountError> for CliError {
    fn from(e: AccountError) -> CliError {
        match e {
            AccountError::Store(e) => e.into(),
            AccountError::Invalid(_) | AccountError::NotFound(_) => CliError::usage(e.to_string()),
            AccountError::Hash(e) => CliError::runtime(e),
        }
    }
}

/// Runs the command line; returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match dispatch(cli.command) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("portcullis: {}", e.message);
            e.code
        }
    }
}

fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve {
            config,
            log_format,
            upgrade,
        } => {
            let config = load(&config)?;
            check_tls(&config)?;
            init_logging(log_format);
            let listeners = match upgrade {
                true => Listeners::Upgrade,
                false => Listeners::Bind,
            };
            crate::gateway::serve(config, Vec::new(), listeners).map_err(CliError::runtime)
        }
        Command::Demo { port } => {
            init_logging(LogFormat::Text);
            crate::cli::demo::run(port)
        }
        Command::CheckConfig { config } => {
            check_tls(&load(&config)?)?;
            println!("ok");
            Ok(())
        }
        Command::HashPassword => {
            let pw = read_password()?;
            let defaults = Config::parse("upstream: http://127.0.0.1:1\n", "-", Path::new("."))
                .map_err(|e| CliError::runtime(e.to_string()))?;
            println!("{}", hash(&pw, defaults.passwords.argon2)?);
            Ok(())
        }
        Command::User { command } => user(command),
        Command::Audit {
            user,
            ip,
            event,
            since,
            json,
            config,
        } => {
            let filters = Filters {
                user: user.as_deref(),
                ip: ip.as_deref(),
                event: event.as_deref(),
                since: since.as_deref(),
            };
            audit(&filters, json, &config)
        }
    }
}

/// `portcullis audit`: filters are checked before the config and the store are touched.
fn audit(filters: &Filters<'_>, json: bool, config: &Path) -> Result<(), CliError> {
    let query = Query::parse(filters, now()).map_err(|e| CliError::usage(e.to_string()))?;
    let config = load(config)?;
    let mut events = runtime()?.block_on(async {
        let store = store::open(&config.store).await?;
        store.events(&query.filter).await
    })?;
    events.retain(|e| query.keeps(e));
    events.reverse();
    let mut out = std::io::stdout().lock();
    let written = if json {
        events
            .iter()
            .try_for_each(|e| writeln!(out, "{}", e.to_json()))
    } else {
        out.write_all(crate::service::audit::table(&events).as_bytes())
    };
    // A closed pipe (`| head`) is the reader's choice, not a failure.
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::runtime(e)),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One readable line per record.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Log lines go to stderr (stdout may carry `audit.file: "-"`); `RUST_LOG` picks the level,
/// `info` by default. Pingora's own `log` records come through the same way.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub fn load(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| CliError::usage(e.to_string()))
}

/// Reads a password from stdin; one trailing newline is not part of it.
fn read_password() -> Result<Password, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::usage(format!("cannot read the password from stdin: {e}")))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(CliError::usage("the password read from stdin is empty"));
    }
    Ok(Password::new(text))
}

fn hash(pw: &Password, params: Argon2Params) -> Result<String, CliError> {
    hasher::hash_now(pw, params).map_err(CliError::runtime)
}

/// Logins on stdin, one per line; blank lines and `#` comments are skipped.
fn read_logins() -> Result<Vec<String>, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::runtime(format!("cannot read stdin: {e}")))?;
    let logins: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if logins.is_empty() {
        return Err(CliError::usage("no login on stdin"));
    }
    Ok(logins)
}

/// A certificate, key or CA file the config names that cannot be used is a config error.
/// What is odd but servable about the certificate (expired, another name) is printed as a
/// warning on stderr.
fn check_tls(config: &Config) -> Result<(), CliError> {
    let pair = crate::gateway::tls::check(config).map_err(|e| CliError::usage(e.to_string()))?;
    if let Some(pair) = pair {
        for problem in crate::gateway::tls::doubts(config, &pair, SystemClock.now()) {
            eprintln!("portcullis: warning: {problem}");
        }
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::runtime)
}

fn user(command: UserCommand) -> Result<(), CliError> {
    let config_path = match &command {
        UserCommand::Add { config, .. }
        | UserCommand::List { config }
        | UserCommand::Show { config, .. }
        | UserCommand::SetPassword { config, .. }
        | UserCommand::Dismiss { config, .. }
        | UserCommand::Restore { config, .. }
        | UserCommand::LogoutAll { config, .. }
        | UserCommand::SendReset { config, .. }
        | UserCommand::Invite { config, .. }
        | UserCommand::Edit { config, .. }
        | UserCommand::TwoFactor { config, .. } => config.clone(),
    };
    let config = load(&config_path)?;
    runtime()?.block_on(async {
        let store = store::open(&config.store).await?;
        let accounts = Accounts::new(store.as_ref(), &config);
        let admin = two_factor::Admin {
            store: store.as_ref(),
            config: &config,
        };
        run_user(&accounts, &admin, command).await
    })
}

fn now() -> i64 {
    SystemClock.now()
}

async fn run_user(
    accounts: &Accounts<'_>,
    admin: &two_factor::Admin<'_>,
    command: UserCommand,
) -> Result<(), CliError> {
    match command {
        UserCommand::TwoFactor {
            login,
            action,
            duration,
            ..
        } => {
            let user = accounts.find(&login).await?;
            two_factor_command(accounts, admin, &user, action, duration).await
        }
        UserCommand::Add {
            login,
            email,
            name,
            phone,
            groups,
            password_stdin,
            ..
        } => {
            let profile = Profile {
                login,
                email,
                name,
                phone,
                groups,
            };
            add(accounts, profile, password_stdin).await
        }
        UserCommand::List { .. } => {
            let users = accounts.list().await?;
            let mut rows = Vec::with_capacity(users.len());
            for u in users {
                let status = admin.status(&u, now()).await?;
                rows.push((u, status));
            }
            print_users(&rows);
            Ok(())
        }
        UserCommand::Show { login, .. } => {
            let user = accounts.find(&login).await?;
            print_user(&user, &admin.status(&user, now()).await?);
            Ok(())
        }
        UserCommand::SetPassword { login, .. } => {
            let u = accounts.find(&login).await?;
            let pw = read_password()?;
            let n = accounts.set_password(&u, &pw, "by administrator").await?;
            println!("Password changed for {}; {n} session(s) ended", u.login);
            Ok(())
        }
        UserCommand::Dismiss { login, .. } => {
            let logins = match login {
                Some(login) => vec![login],
                None => read_logins()?,
            };
            // Every login found first: a list with a typo dismisses nobody.
            let mut users = Vec::with_capacity(logins.len());
            let mut unknown = Vec::new();
            for login in &logins {
                match accounts.find(login).await {
                    Ok(u) => users.push(u),
                    Err(AccountError::NotFound(_)) => unknown.push(login.as_str()),
                    Err(e) => return Err(e.into()),
                }
            }
            if !unknown.is_empty() {
                return Err(CliError::usage(format!(
                    "no user {}; nobody was dismissed",
                    unknown.join(", ")
                )));
            }
            let mut said =
                |u: &User, n: u64| println!("Dismissed {}; {n} session(s) ended", u.login);
            accounts.dismiss_all(&users, &mut said).await?;
            Ok(())
        }
        UserCommand::Restore { login, .. } => {
            let u = accounts.find(&login).await?;
            accounts.restore(&u).await?;
            println!("Restored {}", u.login);
            Ok(())
        }
        c @ (UserCommand::Invite { .. }
        | UserCommand::Edit { .. }
        | UserCommand::SendReset { .. }) => lifecycle(accounts, admin, c).await,
        UserCommand::LogoutAll { login, .. } => {
            let u = accounts.find(&login).await?;
            let n = accounts.logout_all(&u).await?;
            println!("Ended {n} session(s) of {}", u.login);
            Ok(())
        }
    }
}

/// `user invite`, `user edit`, `user send-reset`: an account's lifecycle after `user add`.
async fn lifecycle(
    accounts: &Accounts<'_>,
    admin: &two_factor::Admin<'_>,
    command: UserCommand,
) -> Result<(), CliError> {
    match command {
        UserCommand::Invite {
            email,
            name,
            phone,
            groups,
            print_link,
            ..
        } => {
            let profile = Profile {
                login: email.clone(),
                email,
                name,
                phone,
                groups,
            };
            let (user, link) = accounts.invite(profile, print_link).await?;
            match link {
                Some(link) => println!("{link}"),
                None => println!(
                    "Invited {}; a running gateway e-mails the invitation",
                    user.login
                ),
            }
            Ok(())
        }
        UserCommand::Edit {
            login,
            new_login,
            email,
            name,
            phone,
            groups,
            no_groups,
            ..
        } => {
            let user = accounts.find(&login).await?;
            let change = Edit {
                login: new_login,
                email,
                name,
                phone,
                groups: match (no_groups, groups.is_empty()) {
                    (true, _) => Some(Vec::new()),
                    (false, false) => Some(groups),
                    (false, true) => None,
                },
            };
            let updated = accounts.edit(&user, change).await?;
            print_user(&updated, &admin.status(&updated, now()).await?);
            Ok(())
        }
        UserCommand::SendReset {
            login, print_link, ..
        } => {
            let u = accounts.find(&login).await?;
            match accounts.send_reset(&u, print_link).await? {
                Some(link) => println!("{link}"),
                None => println!(
                    "A reset link for {} is queued; a running gateway e-mails it to {}",
                    u.login, u.email
                ),
            }
            Ok(())
        }
        // `run_user` hands over only the commands above.
        _ => Err(CliError::usage("not an account lifecycle command")),
    }
}

/// A user's state: `active`, `invited` (no password set yet) or `dismissed`.
fn state(u: &User) -> &'static str {
    match (u.dismissed, u.is_invited()) {
        (true, _) => "dismissed",
        (false, true) => "invited",
        (false, false) => "active",
    }
}

/// Two-step verification in a word: `on` (with codes left), `off`, `off until …`.
fn two_step(s: &two_factor::Status) -> String {
    match (s.enrolled, s.disabled_until) {
        (true, Some(until)) => format!("off until {}", crate::core::time::rfc3339(until)),
        (true, None) => format!("on ({} codes)", s.codes_left),
        (false, _) => "off".into(),
    }
}

/// `user list`: a table.
fn print_users(users: &[(User, two_factor::Status)]) {
    println!(
        "{:<24} {:<32} {:<24} {:<20} {:<10} 2FA",
        "LOGIN", "EMAIL", "NAME", "GROUPS", "STATUS"
    );
    for (u, s) in users {
        println!(
            "{:<24} {:<32} {:<24} {:<20} {:<10} {}",
            u.login,
            u.email,
            u.name,
            u.groups.join(","),
            state(u),
            two_step(s)
        );
    }
}

/// `user show`.
fn print_user(u: &User, s: &two_factor::Status) {
    println!("login:   {}", u.login);
    println!("email:   {}", u.email);
    println!("name:    {}", u.name);
    println!("phone:   {}", u.phone);
    println!("groups:  {}", u.groups.join(", "));
    println!("status:  {}", state(u));
    println!("2fa:     {}", two_step(s));
}

/// The longest `user 2fa disable --for`: a turn-off is for a lost phone, not for good.
const MAX_TURN_OFF: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// `user 2fa LOGIN status|reset|disable --for DURATION`.
async fn two_factor_command(
    accounts: &Accounts<'_>,
    admin: &two_factor::Admin<'_>,
    user: &User,
    action: TwoFactorAction,
    duration: Option<String>,
) -> Result<(), CliError> {
    let now = now();
    match action {
        TwoFactorAction::Status => {
            let status = admin.status(user, now).await?;
            println!("login:          {}", user.login);
            println!(
                "enrolled:       {}",
                if status.enrolled { "yes" } else { "no" }
            );
            println!("backup codes:   {}", status.codes_left);
            let until = status.disabled_until.map(rfc3339);
            println!(
                "turned off:     {}",
                until.map_or("no".into(), |t| format!("until {t}"))
            );
            Ok(())
        }
        TwoFactorAction::Reset => {
            let n = admin.reset(user, now).await?;
            accounts
                .record(EventKind::TwoFactorReset, &user.login, "")
                .await;
            accounts
                .record(
                    EventKind::SessionsRevoked,
                    &user.login,
                    "two-step verification reset",
                )
                .await;
            println!(
                "Two-step verification removed for {}; {n} session(s) ended",
                user.login
            );
            Ok(())
        }
        TwoFactorAction::Disable => {
            let Some(text) = duration else {
                return Err(CliError::usage(
                    "disable needs --for DURATION, e.g. --for 24h",
                ));
            };
            let d = parse_duration(&text).map_err(|e| CliError::usage(format!("--for: {e}")))?;
            if d.is_zero() || d > MAX_TURN_OFF {
                return Err(CliError::usage(
                    "--for must be longer than 0 and at most 30d (to remove the factor: reset)",
                ));
            }
            let until = now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if !admin.disable_until(user, until).await? {
                return Err(CliError::usage(format!(
                    "{} has no two-step verification to turn off",
                    user.login
                )));
            }
            let detail = format!("until {}", rfc3339(until));
            accounts
                .record(EventKind::TwoFactorDisabled, &user.login, &detail)
                .await;
            println!("Two-step verification of {} is off {detail}", user.login);
            Ok(())
        }
    }
}

/// `user add`: the fields are checked before the password is read, and a generated password
/// is printed once.
async fn add(
    accounts: &Accounts<'_>,
    profile: Profile,
    password_stdin: bool,
) -> Result<(), CliError> {
    accounts::check_profile(&profile)?;
    let (pw, generated) = if password_stdin {
        (read_password()?, false)
    } else {
        (Password::generate(), true)
    };
    let user = accounts.create(profile, &pw).await?;
    println!("Created user {}", user.login);
    if generated {
        println!("Password: {}", pw.expose());
    }
    Ok(())
}
