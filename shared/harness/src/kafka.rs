//! The Kafka broker for tests: reuse the one that answers, or start it with the project's
//! own recipe (scripts/kafka.sh), once per test process.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::{net::TcpStream, sync::OnceCell};

use crate::repo_root;

/// `127.0.0.1:<port>` of the test broker (`KAFKA_PORT`, default 19092, as in dapr-components/).
pub fn kafka_brokers() -> String {
    let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "19092".to_owned());
    format!("127.0.0.1:{port}")
}

static KAFKA: OnceCell<String> = OnceCell::const_new();

/// Makes sure the broker answers; returns its address.
pub async fn ensure_kafka() -> anyhow::Result<String> {
    KAFKA
        .get_or_try_init(|| async {
            let brokers = kafka_brokers();
            if answers(&brokers).await {
                return Ok(brokers);
            }
            let script = repo_root().join("scripts/kafka.sh");
            let status = tokio::process::Command::new("bash")
                .arg(&script)
                .arg("up")
                .status()
                .await
                .with_context(|| format!("running {}", script.display()))?;
            if !status.success() || !answers(&brokers).await {
                bail!(
                    "Kafka is not running on {brokers} and `scripts/kafka.sh up` could not start it \
                     ({status}); run `just bootstrap` (needs Java 17+ and Maven) and see its log"
                );
            }
            Ok(brokers)
        })
        .await
        .cloned()
}

async fn answers(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
