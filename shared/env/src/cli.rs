//! `--help` for every service binary: each variable it reads, its default and meaning.
//!
//! A service lists its variables once ([`Var`]); [`command`] turns the list into a clap
//! command whose arguments read those variables (a `--flag` of the same name overrides
//! one), and [`lookup`] hands the parsed values to the service's own `Config::from_lookup`,
//! which checks them and names the variable of a bad one.

use clap::{Arg, ArgMatches, Command};

/// The log filter of a service with a database when `RUST_LOG` is unset: the driver's and
/// the ORM's per-statement logs stay quiet.
pub const DATABASE_LOG: &str = "info,sqlx=warn,sea_orm=warn";

/// One environment variable a service reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    /// The default, as a person would write it (`—` when there is none).
    pub default: &'static str,
    pub help: &'static str,
    /// Keep its value out of `--help` (tokens, secrets).
    pub secret: bool,
    /// Values it refuses, as examples: a service's configuration test checks that each is
    /// refused with an error naming the variable (see [`Var::refusing`]).
    pub refuses: &'static [&'static str],
}

impl Var {
    pub const fn new(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self {
            name,
            default,
            help,
            secret: false,
            refuses: &[],
        }
    }

    /// The same variable, with examples of values it refuses (written beside it, so that
    /// every service reading it checks them).
    pub const fn refusing(self, refuses: &'static [&'static str]) -> Self {
        Self { refuses, ..self }
    }

    /// A variable whose value `--help` must not print.
    pub const fn secret(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            default: "—",
            help,
            secret: true,
            refuses: &[],
        }
    }

    /// `DATABASE_URL` (default `default_url`; `help` says whose database it is) and
    /// `DATABASE_MAX_CONNECTIONS`, as [`ConfigEnv::database`](crate::ConfigEnv::database)
    /// reads them.
    pub const fn database(default_url: &'static str, help: &'static str) -> [Self; 2] {
        [
            Self::new("DATABASE_URL", default_url, help).refusing(&["mysql://x"]),
            Self::new(
                "DATABASE_MAX_CONNECTIONS",
                "16 (PostgreSQL), 4 (SQLite)",
                "the pool for reads (and, on PostgreSQL, writes); on SQLite writes queue on one connection of their own",
            )
            .refusing(&["-1", "0"]),
        ]
    }
}

/// The variables every service reads, with its own default listen and metrics addresses.
pub const fn common(app_addr: &'static str, metrics_addr: &'static str) -> [Var; 11] {
    [
        Var::new(
            "APP_ADDR",
            app_addr,
            "gRPC listen address (the service's API and Dapr's AppCallback)",
        )
        .refusing(&["nope"]),
        Var::secret(
            "APP_API_TOKEN",
            "require this dapr-api-token from the sidecar on Dapr's callbacks",
        ),
        Var::new(
            "DAPR_GRPC_ENDPOINT",
            "http://127.0.0.1:50001",
            "the sidecar's gRPC endpoint (a URI, or host:port)",
        )
        .refusing(&["http://no-port"]),
        Var::new(
            "DAPR_GRPC_PORT",
            "50001",
            "the sidecar's gRPC port on 127.0.0.1 (when DAPR_GRPC_ENDPOINT is unset)",
        )
        .refusing(&["0"]),
        Var::secret("DAPR_API_TOKEN", "sent to the sidecar on every call"),
        Var::new(
            "REQUEST_TIMEOUT_MS",
            "10000",
            "deadline of one request, in milliseconds",
        )
        .refusing(&["soon", "0"]),
        Var::new(
            "MAX_CONCURRENT_REQUESTS",
            "512",
            "requests handled at once; more wait",
        )
        .refusing(&["0", "1000001", "18446744073709551615"]),
        Var::new(
            "TOPIC_PREFIX",
            "—",
            "namespaces every topic (<prefix>.task-events); tests use it",
        )
        .refusing(&["has space"]),
        Var::new(
            "METRICS_ADDR",
            metrics_addr,
            "where Prometheus /metrics is served; `off` disables",
        )
        .refusing(&["everywhere"]),
        Var::new("LOG_FORMAT", "text", "`json` for JSON lines"),
        Var::new(
            "RUST_LOG",
            "info",
            "log filter (tracing-subscriber EnvFilter syntax)",
        ),
    ]
}

/// The variables of identity (JWT or dev mode), for services with a caller-facing API.
pub const AUTH: [Var; 6] = [
    Var::new(
        "AUTH_MODE",
        "jwt",
        "`jwt`, or `dev` to trust an x-user-id header (never in production)",
    )
    .refusing(&["magic"]),
    Var::new(
        "JWT_ALGORITHM",
        "HS256",
        "HS256 (with JWT_SECRET, at least 32 bytes) or RS256/ES256 (with JWT_PUBLIC_KEY)",
    ),
    Var::secret("JWT_SECRET", "the HS256 secret"),
    Var::new("JWT_PUBLIC_KEY", "—", "the RS256/ES256 public key, PEM"),
    Var::new(
        "JWT_AUDIENCE",
        "—",
        "tokens must name it in `aud`; unset, a token with `aud` is refused",
    ),
    Var::new(
        "JWT_ISSUER",
        "—",
        "tokens must name it as `iss`; unset, not checked",
    ),
];

/// Whether a service has a caller-facing API, and so reads the identity variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// JWT or dev-mode identity ([`AUTH`]).
    Authenticated,
    /// Only the sidecar calls it.
    SidecarOnly,
}

/// A service's whole list: [`common`] with its own listen and metrics addresses, [`AUTH`]
/// when it has callers, then its own variables.
pub fn service_vars(
    app_addr: &'static str,
    metrics_addr: &'static str,
    callers: Callers,
    own: impl IntoIterator<Item = Var>,
) -> Vec<Var> {
    let auth = match callers {
        Callers::Authenticated => &AUTH[..],
        Callers::SidecarOnly => &[],
    };
    common(app_addr, metrics_addr)
        .into_iter()
        .chain(auth.iter().copied())
        .chain(own)
        .collect()
}

/// The command line of a service: `--help` lists `vars`; each can also be given as a flag.
pub fn command(name: &'static str, about: &'static str, vars: &[Var]) -> Command {
    vars.iter().fold(
        Command::new(name)
            .about(about)
            .version(env!("CARGO_PKG_VERSION"))
            .after_help(
                "Every option is read from the environment variable of its name; \
                 a flag given on the command line wins.",
            ),
        |cmd, v| {
            let help = if v.default == "—" {
                v.help.to_owned()
            } else {
                format!("{} [default: {}]", v.help, v.default)
            };
            cmd.arg(
                Arg::new(v.name)
                    .long(v.name.to_ascii_lowercase().replace('_', "-"))
                    .env(v.name)
                    .value_name("VALUE")
                    .hide_env_values(v.secret)
                    .help(help),
            )
        },
    )
}

/// The value of a listed variable from the parsed command line (flag, then environment);
/// any other name is read from the environment (e.g. a variable a library reads itself).
pub fn lookup<'a>(
    matches: &'a ArgMatches,
    vars: &'a [Var],
) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        if vars.iter().any(|v| v.name == k) {
            matches.get_one::<String>(k).cloned()
        } else {
            std::env::var(k).ok()
        }
    }
}

/// The variables `read` asks for that `vars` does not list (a service's test calls this
/// with its `Config::from_lookup`, so `--help` cannot forget a variable).
pub fn unlisted(vars: &[Var], read: impl FnOnce(&dyn Fn(&str) -> Option<String>)) -> Vec<String> {
    let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
    read(&|k: &str| {
        asked.borrow_mut().insert(k.to_owned());
        // Dev mode, so that identity needs no secret and the rest of the config is read.
        (k == "AUTH_MODE").then(|| "dev".to_owned())
    });
    asked
        .into_inner()
        .into_iter()
        .filter(|k| !vars.iter().any(|v| v.name == k))
        .collect()
}

/// Panics, naming them, when `read` asks for variables `vars` does not list (for each
/// service's test that `--help` forgets no variable).
pub fn assert_listed(vars: &[Var], read: impl FnOnce(&dyn Fn(&str) -> Option<String>)) {
    let missing = unlisted(vars, read);
    assert!(missing.is_empty(), "read but not in --help: {missing:?}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const VARS: [Var; 2] = [
        Var::new("APP_ADDR", "127.0.0.1:1", "where"),
        Var::secret("APP_API_TOKEN", "token"),
    ];

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let help = command("svc", "about", &VARS)
            .render_long_help()
            .to_string();
        assert!(help.contains("APP_ADDR"), "{help}");
        assert!(help.contains("[default: 127.0.0.1:1]"), "{help}");
        assert!(help.contains("APP_API_TOKEN"), "{help}");
    }

    #[test]
    fn a_variable_read_but_not_listed_is_found() {
        let missing = unlisted(&VARS, |get| {
            let _ = (get("APP_ADDR"), get("SECRET_KNOB"));
        });
        assert_eq!(missing, ["SECRET_KNOB"]);
    }

    #[test]
    fn a_flag_is_read_like_its_variable() {
        let m = command("svc", "about", &VARS)
            .try_get_matches_from(["svc", "--app-addr", "0.0.0.0:9"])
            .unwrap();
        let get = lookup(&m, &VARS);
        assert_eq!(get("APP_ADDR").as_deref(), Some("0.0.0.0:9"));
        assert_eq!(get("APP_API_TOKEN"), None);
    }
}
