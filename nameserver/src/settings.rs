//! The NameServer's settings, one field each (the flag, its `SMQ_` variable, its TOML key, its
//! help), layered flag > variable > `--config` file > default, and turned into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use smq_client::credential;
use smq_protocol::nameserver_api::HEARTBEAT_TIMEOUT_MS_DEFAULT;
use smq_settings::{FileError, Layered};
use smq_tls::ServerTls;

use crate::{Config, FENCING_INTERVAL_MS_DEFAULT};

/// The variable holding the cluster secret itself (`--cluster-secret-file` names a file).
pub const CLUSTER_SECRET_ENV: &str = "SMQ_CLUSTER_SECRET";
/// The variable holding the read token itself (`--read-token-file` names a file).
pub const READ_TOKEN_ENV: &str = "SMQ_READ_TOKEN";

smq_settings::layered! {
    /// smq's NameServer: aggregates broker heartbeats and answers route questions over HTTP/JSON.
    ///
    /// Each flag can also come from the environment (SMQ_<FLAG>) or from the TOML file given with
    /// --config (keys named like the flags, with underscores: heartbeat_timeout_ms = 10000). Flags
    /// and environment win over the file.
    #[derive(Debug, Default, clap::Parser, Deserialize)]
    #[command(name = "smq-nameserver", version)]
    #[serde(deny_unknown_fields)]
    pub struct Settings {
        /// Where to serve HTTP [default: 127.0.0.1:9876]
        #[arg(long, env = "SMQ_LISTEN")]
        pub listen: Option<SocketAddr>,
        /// The SRV record that should name this NameServer (e.g. _smq-ns._tcp.example.com.);
        /// while it names another, route requests get 503 so that clients re-resolve
        #[arg(long, env = "SMQ_SRV")]
        pub srv: Option<String>,
        /// The DNS server to ask about --srv, IP:PORT [default: the servers in /etc/resolv.conf]
        #[arg(long, env = "SMQ_DNS_SERVER")]
        pub dns_server: Option<SocketAddr>,
        /// host:port by which the SRV record names this NameServer [default: the listen address]
        #[arg(long, env = "SMQ_ADVERTISE")]
        pub advertise: Option<String>,
        /// A broker leaves the routes this long after its last heartbeat [default: 10000]
        #[arg(long, env = "SMQ_HEARTBEAT_TIMEOUT_MS")]
        pub heartbeat_timeout_ms: Option<u64>,
        /// How often --srv is looked up [default: 2000]
        #[arg(long, env = "SMQ_FENCING_INTERVAL_MS")]
        pub fencing_interval_ms: Option<u64>,
        /// File holding the cluster secret that broker heartbeats must carry (Authorization:
        /// Bearer); the secret itself may come from SMQ_CLUSTER_SECRET instead. Without one, any
        /// heartbeat is taken
        #[arg(long, env = "SMQ_CLUSTER_SECRET_FILE")]
        pub cluster_secret_file: Option<PathBuf>,
        /// The cluster secret itself: from SMQ_CLUSTER_SECRET only (never a flag or the file).
        #[arg(skip)]
        #[serde(skip)]
        pub cluster_secret: Option<String>,
        /// File holding the read token that routes, cluster, topics, groups, member heartbeats
        /// and metrics then require (or the cluster secret); the token itself may come from
        /// SMQ_READ_TOKEN instead. Without one, those are open
        #[arg(long, env = "SMQ_READ_TOKEN_FILE")]
        pub read_token_file: Option<PathBuf>,
        /// The read token itself: from SMQ_READ_TOKEN only (never a flag or the file).
        #[arg(skip)]
        #[serde(skip)]
        pub read_token: Option<String>,
        /// PEM certificate chain (leaf first) to serve HTTPS with, with --tls-key [default:
        /// plain HTTP]
        #[arg(long, env = "SMQ_TLS_CERT")]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert
        #[arg(long, env = "SMQ_TLS_KEY")]
        pub tls_key: Option<PathBuf>,
        /// PEM CA certificates: with it, only clients presenting a certificate signed by one of
        /// them connect
        #[arg(long, env = "SMQ_TLS_CLIENT_CA")]
        pub tls_client_ca: Option<PathBuf>,
        /// A TOML file with any of the settings above
        #[arg(long, env = "SMQ_CONFIG")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Log filter: error, warn, info, debug, trace, or directives like smq_nameserver=debug
        /// [default: info]
        #[arg(long, env = "SMQ_LOG_LEVEL")]
        pub log_level: Option<String>,
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Secret(#[from] smq_client::Error),
    #[error(transparent)]
    Tls(#[from] smq_tls::TlsError),
}

impl Settings {
    /// `flags` (flags and variables, as clap parsed them) and the secrets' variables over the
    /// TOML file `--config` names, if any.
    pub fn load(flags: Settings) -> Result<Settings, FileError> {
        let file = match &flags.config {
            Some(path) => smq_settings::read_toml(path)?,
            None => Settings::default(),
        };
        let variables = Settings {
            cluster_secret: std::env::var(CLUSTER_SECRET_ENV).ok(),
            read_token: std::env::var(READ_TOKEN_ENV).ok(),
            ..Settings::default()
        };
        Ok(flags.or(variables).or(file))
    }

    /// The tracing filter.
    pub fn log_level(&self) -> &str {
        self.log_level.as_deref().unwrap_or("info")
    }

    /// The defaults where a setting is missing; the secrets and certificates read.
    pub fn into_config(self) -> Result<Config, SettingsError> {
        let defaults = Config::default();
        let tls = ServerTls::from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
        )?;
        Ok(Config {
            listen: self.listen.unwrap_or(defaults.listen),
            advertise: self.advertise,
            srv: self.srv,
            dns_server: self.dns_server,
            heartbeat_timeout_ms: self
                .heartbeat_timeout_ms
                .unwrap_or(HEARTBEAT_TIMEOUT_MS_DEFAULT),
            fencing_interval_ms: self
                .fencing_interval_ms
                .unwrap_or(FENCING_INTERVAL_MS_DEFAULT),
            cluster_secret: credential::secret_from(
                self.cluster_secret,
                CLUSTER_SECRET_ENV,
                self.cluster_secret_file.as_deref(),
                "--cluster-secret-file",
            )?,
            read_token: credential::secret_from(
                self.read_token,
                READ_TOKEN_ENV,
                self.read_token_file.as_deref(),
                "--read-token-file",
            )?,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use smq_settings::check::{problems, settings_table, Flag};
    use smq_settings::variable_of;

    #[test]
    fn every_setting_has_its_flag_variable_key_and_readme_row() {
        let flags: Vec<Flag> = Settings::command()
            .get_arguments()
            .filter_map(|arg| Flag::new(arg.get_id().as_str(), arg.get_long(), arg.get_env()))
            .collect();
        let readme = include_str!("../../README.md");
        let table = settings_table(readme, "## NameServer").unwrap();
        let problems = problems::<Settings>(&flags, &table);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(variable_of("cluster_secret"), CLUSTER_SECRET_ENV);
        assert_eq!(variable_of("read_token"), READ_TOKEN_ENV);
    }

    #[test]
    fn each_documented_default_is_the_default_in_help_readme_and_config() {
        let readme = include_str!("../../README.md");
        let complete = |settings: Settings| {
            let log_level = settings.log_level().to_owned();
            settings.into_config().map(|config| (config, log_level))
        };
        let (checked, problems) =
            smq_settings::documented_defaults!(Settings, readme, "## NameServer", complete);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(checked >= 4, "only {checked} defaults found in the help");
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let dir = std::env::temp_dir().join(format!("smq-ns-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ns.toml");
        std::fs::write(
            &file,
            "heartbeat_timeout_ms = 5000\nsrv = \"_from._tcp.file.\"\n",
        )
        .unwrap();
        let flags = <Settings as clap::Parser>::try_parse_from([
            "smq-nameserver",
            "--config",
            file.to_str().unwrap(),
            "--srv",
            "_from._tcp.flag.",
        ])
        .unwrap();
        let config = Settings::load(flags).unwrap().into_config().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            config.srv.as_deref(),
            Some("_from._tcp.flag."),
            "flag over file"
        );
        assert_eq!(config.heartbeat_timeout_ms, 5000, "file over default");
        assert_eq!(
            config.fencing_interval_ms, FENCING_INTERVAL_MS_DEFAULT,
            "default"
        );
    }
}
