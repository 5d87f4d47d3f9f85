//! The start of every service binary: `--help` from its variable list, logging, and its
//! configuration read and checked, or the process stopped with the variable named.

use clap::{ArgMatches, Command};
use todo_auth::AuthMode;
use todo_env::{
    Common, ConfigError, Env,
    cli::{self, Callers, Var},
};

/// Parses the command line (`--help` lists `vars`), sets up logging with `default_log`,
/// and reads the configuration with `read` from flags and environment. A bad value stops
/// the process with exit code 2 and a log line that names the variable.
pub fn start<C>(
    name: &'static str,
    about: &'static str,
    vars: &[Var],
    extend: impl FnOnce(Command) -> Command,
    default_log: &str,
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<C, ConfigError>,
) -> (C, ArgMatches) {
    let matches = extend(todo_env::cli::command(name, about, vars)).get_matches();
    // Logging as the flags or variables say (a flag wins); a value that cannot be used
    // stops the process like any other bad value, logged with the defaults.
    match todo_telemetry::Logging::from_lookup(todo_env::cli::lookup(&matches, vars), default_log) {
        Ok(logging) => todo_telemetry::init_with(logging),
        Err(e) => {
            todo_telemetry::init(default_log);
            tracing::error!("invalid configuration: {e}");
            std::process::exit(2);
        }
    }
    let config = read(&todo_env::cli::lookup(&matches, vars));
    match config {
        Ok(config) => (config, matches),
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            std::process::exit(2);
        }
    }
}

/// What a service's configuration says of itself, so that its `main` is one call.
pub trait ServiceConfig: Sized {
    /// The binary's name (its Dapr app id).
    const NAME: &'static str;
    /// What `--help` says the service is.
    const ABOUT: &'static str;
    /// The log filter when `RUST_LOG` is unset.
    const DEFAULT_LOG: &'static str = "info";
    /// Every variable it reads (`--help` lists them).
    fn vars() -> Vec<Var>;
    /// Reads and checks the configuration; an error names the variable.
    fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError>;
    /// Reads from any lookup (tests pass a map), as [`Self::read`].
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&get)
    }
    /// Whether it trusts an `x-user-id` header (`AUTH_MODE=dev`): warned about at start.
    fn trusts_user_header(&self) -> bool {
        false
    }
}

/// The variables as a service's configuration reads them (trimmed; blank is unset).
pub type ConfigEnv<'a> = Env<&'a dyn Fn(&str) -> Option<String>>;

/// The configuration of one of the system's Dapr apps: what every app reads ([`Common`],
/// with its own listen and metrics addresses, and the identity variables when callers reach
/// it) then its own variables. Each fact is given once; [`ServiceConfig`] follows from it.
pub trait AppConfig: Sized {
    /// Which app it is: its id (the binary's name) and its default `APP_ADDR` and
    /// `METRICS_ADDR`, as `--help` shows them.
    const APP: todo_topology::apps::App;
    /// What `--help` says the service is.
    const ABOUT: &'static str;
    /// How it knows who calls it: [`AuthMode`] when callers reach its API (it reads the
    /// identity variables, and trusts an `x-user-id` header in `AUTH_MODE=dev`), or
    /// [`SidecarOnly`] when only the sidecar does. Read before [`Self::from_env`], which
    /// is handed it.
    type Identity: Identity;
    /// Its own database, when it has one: its variables (`--help` lists them after the
    /// identity ones) and [`DatabaseConfig::of`] follow from it.
    const DATABASE: Option<OwnDatabase> = None;
    /// The log filter when `RUST_LOG` is unset: with a database of its own, the driver's
    /// and the ORM's per-statement logs stay quiet.
    const DEFAULT_LOG: &'static str = match Self::DATABASE {
        Some(_) => todo_env::cli::DATABASE_LOG,
        None => "info",
    };
    /// The variables of its own (`--help` lists them after the common, identity and
    /// database ones).
    fn own_vars() -> Vec<Var>;
    /// Reads and checks the rest of the configuration, given what every app reads and its
    /// [`Self::Identity`]; an error names the variable.
    fn from_env(
        env: &ConfigEnv<'_>,
        common: Common,
        identity: Self::Identity,
    ) -> Result<Self, ConfigError>;
    /// The identity [`Self::from_env`] was handed: whether it trusts a user header (warned
    /// about at start) follows from it.
    fn identity(&self) -> &Self::Identity;
}

/// How an app knows who calls it ([`AppConfig::Identity`]): the variables it reads for
/// that, and whether it trusts an `x-user-id` header.
pub trait Identity: Sized {
    /// Whether `--help` lists the identity variables ([`todo_env::cli::AUTH`]).
    const CALLERS: Callers;
    /// Reads and checks them; an error names the variable.
    fn read(env: &ConfigEnv<'_>) -> Result<Self, ConfigError>;
    /// Whether it trusts an `x-user-id` header: warned about at start.
    fn trusts_user_header(&self) -> bool;
}

/// Callers reach the app's API: `AUTH_MODE` (jwt|dev, default jwt) with `JWT_ALGORITHM`
/// and `JWT_SECRET` / `JWT_PUBLIC_KEY`; `dev` trusts the `x-user-id` header.
impl Identity for AuthMode {
    const CALLERS: Callers = Callers::Authenticated;
    fn read(env: &ConfigEnv<'_>) -> Result<Self, ConfigError> {
        AuthMode::from_lookup(|k| env.get(k)).map_err(|e| ConfigError::new(e.var, e.reason))
    }
    fn trusts_user_header(&self) -> bool {
        matches!(self, AuthMode::Dev)
    }
}

/// Only the app's sidecar calls it: there is no caller identity to read or trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SidecarOnly;

impl Identity for SidecarOnly {
    const CALLERS: Callers = Callers::SidecarOnly;
    fn read(_: &ConfigEnv<'_>) -> Result<Self, ConfigError> {
        Ok(Self)
    }
    fn trusts_user_header(&self) -> bool {
        false
    }
}

impl<C: AppConfig> ServiceConfig for C {
    const NAME: &'static str = C::APP.id;
    const ABOUT: &'static str = C::ABOUT;
    const DEFAULT_LOG: &'static str = C::DEFAULT_LOG;
    fn vars() -> Vec<Var> {
        let database = C::DATABASE
            .map(|d| Var::database(d.default_url, d.help))
            .into_iter()
            .flatten();
        cli::service_vars(
            C::APP.listen,
            C::APP.metrics,
            C::Identity::CALLERS,
            database.chain(C::own_vars()),
        )
    }
    fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(get);
        let common = env.common(C::APP.listen, C::APP.metrics)?;
        let identity = C::Identity::read(&env)?;
        C::from_env(&env, common, identity)
    }
    fn trusts_user_header(&self) -> bool {
        self.identity().trusts_user_header()
    }
}

/// An app's own database as `--help` shows it: `DATABASE_URL`'s default and whose database
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnDatabase {
    pub default_url: &'static str,
    /// `sqlite://…` or `postgres://…`, and whose database it is.
    pub help: &'static str,
    /// What it is called in errors (`DATABASE_URL: opening the audit database`).
    pub name: &'static str,
}

/// An app's own database: `DATABASE_URL` and `DATABASE_MAX_CONNECTIONS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: `sqlite://…` or `postgres://…`.
    pub url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 4 on SQLite, 16 on PostgreSQL).
    pub max_connections: u32,
    /// What it is called in errors ([`OwnDatabase::name`]).
    pub name: &'static str,
}

impl DatabaseConfig {
    /// Reads the variables of `C`'s own database ([`AppConfig::DATABASE`]); an app without
    /// one has none to read.
    pub fn of<C: AppConfig>(env: &ConfigEnv<'_>) -> Result<Self, ConfigError> {
        let Some(own) = C::DATABASE else {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!("{} has no database of its own", C::APP.id),
            ));
        };
        let (url, max_connections) = env.database(own.default_url)?;
        Ok(Self {
            url,
            max_connections,
            name: own.name,
        })
    }
}

#[cfg(feature = "db")]
impl DatabaseConfig {
    /// Opens the database, applying `M`'s pending migrations, and the connection writes go
    /// through (see [`crate::db::writer`]); an error says `DATABASE_URL` failed opening it
    /// (by its [`name`](Self::name)).
    pub async fn open<M: sea_orm_migration::MigratorTrait>(
        &self,
    ) -> anyhow::Result<(sea_orm::DatabaseConnection, sea_orm::DatabaseConnection)> {
        use anyhow::Context;
        let pool = crate::db::connect::<M>(&self.url, self.max_connections)
            .await
            .with_context(|| format!("DATABASE_URL: opening the {}", self.name))?;
        let writer = crate::db::writer(&self.url, &pool)
            .await
            .context("DATABASE_URL: opening the writer connection")?;
        Ok((pool, writer))
    }
}

/// [`start`] for a [`ServiceConfig`]: parses the command line (extended by `extend`, e.g.
/// with subcommands), sets up logging, reads the configuration or stops the process naming
/// the variable, and warns when the service trusts a user header.
pub fn load<C: ServiceConfig>(extend: impl FnOnce(Command) -> Command) -> (C, ArgMatches) {
    let (config, matches) = start(
        C::NAME,
        C::ABOUT,
        &C::vars(),
        extend,
        C::DEFAULT_LOG,
        C::read,
    );
    if config.trusts_user_header() {
        warn_dev_auth();
    }
    (config, matches)
}

/// Reads `C` from fixed pairs (a service's configuration tests).
pub fn read_pairs<C: ServiceConfig>(pairs: &[(&str, &str)]) -> Result<C, ConfigError> {
    C::read(&todo_env::from_pairs(pairs))
}

/// Panics unless each `(variable, value)` of `bad`, read after `base` (what makes the rest
/// of the configuration valid), is refused with an error naming that variable.
pub fn assert_bad_values_named<C: ServiceConfig>(base: &[(&str, &str)], bad: &[(&str, &str)]) {
    for &(var, value) in bad {
        let mut pairs = base.to_vec();
        pairs.push((var, value));
        match read_pairs::<C>(&pairs) {
            Ok(_) => panic!("{var}={value}: accepted"),
            Err(e) => assert_eq!(e.var, var, "{var}={value}: {e}"),
        }
    }
}

/// The configuration test of every service: panics unless `C` refuses each value its
/// variables say they refuse ([`Var::refusing`]), read after `base` (what makes the rest of
/// the configuration valid), with an error naming that variable; and unless `--help` lists
/// every variable `C` reads. What a variable refuses is written beside it, once, so the
/// shared ones (addresses, sidecar, limits, database, identity) are checked in every
/// service that reads them.
pub fn assert_variables_checked<C: ServiceConfig>(base: &[(&str, &str)]) {
    let refused: Vec<(&str, &str)> = C::vars()
        .iter()
        .flat_map(|v| v.refuses.iter().map(|value| (v.name, *value)))
        .collect();
    assert_bad_values_named::<C>(base, &refused);
    assert_every_variable_listed::<C>();
}

/// Panics, naming them, when `C` reads variables its list does not have: `--help` must
/// forget none.
pub fn assert_every_variable_listed<C: ServiceConfig>() {
    todo_env::cli::assert_listed(&C::vars(), |get| drop(C::read(get)));
}

/// The warning every service with a caller-facing API logs in `AUTH_MODE=dev`.
pub fn warn_dev_auth() {
    tracing::warn!(
        "AUTH_MODE=dev: the x-user-id header is trusted as the caller; never use this in production"
    );
}
