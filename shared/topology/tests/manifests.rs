//! The Kubernetes manifests (kustomize/) use the names the code and dapr-components/ use:
//! app ids, ports, topics, component names, consumer groups. `scripts/k8s-check.sh` checks
//! that the manifests are valid; this checks that they are the system's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde_yaml::Value;
use todo_topology::{app_ids, components, topics};

/// Each app: its id, its app port (gRPC API + AppCallback + health; the ports `just up`
/// uses, scripts/up.sh) and the topics it consumes.
const APPS: [(&str, u16, &[&str]); 6] = [
    (app_ids::TASK_SERVICE, 50051, &[topics::TASK_OCCURRENCES]),
    (
        app_ids::RECURRING_TASK_SERVICE,
        50052,
        &[topics::TASK_EVENTS],
    ),
    (app_ids::NOTIFICATION_SERVICE, 50053, &[topics::REMINDERS]),
    (
        app_ids::AUDIT_SERVICE,
        50054,
        &[topics::TASK_EVENTS, topics::REMINDERS],
    ),
    (app_ids::SYNC_SERVICE, 50055, &[topics::TASK_UPDATES]),
    // Every `<topic>-dlq` (no lag to scale on: dead letters are few).
    (app_ids::DEAD_LETTER_SERVICE, 50056, &[]),
];
/// The apps on `kafka-pubsub` with a fixed replica count (no KEDA ScaledObject).
const FIXED_REPLICAS: [&str; 2] = [app_ids::TASK_SERVICE, app_ids::DEAD_LETTER_SERVICE];
/// The apps that consume through `kafka-broadcast` (a consumer group per pod, every replica
/// sees every event) instead of `kafka-pubsub` (one group per app id): no shared lag, so they
/// scale on CPU (a HorizontalPodAutoscaler), not with KEDA.
const BROADCAST_CONSUMERS: [&str; 1] = [app_ids::SYNC_SERVICE];
/// The apps that serve a gRPC API of their own, reachable through a Service on the app port.
const APIS: [&str; 5] = [
    app_ids::TASK_SERVICE,
    app_ids::NOTIFICATION_SERVICE,
    app_ids::AUDIT_SERVICE,
    app_ids::SYNC_SERVICE,
    app_ids::DEAD_LETTER_SERVICE,
];
/// The apps that own a database of their own (sea-orm, DATABASE_URL from `<app>-secrets`).
const DATABASE_OWNERS: [&str; 3] = [
    app_ids::TASK_SERVICE,
    app_ids::AUDIT_SERVICE,
    app_ids::DEAD_LETTER_SERVICE,
];
/// Every service's Prometheus port in the cluster (METRICS_ADDR).
const METRICS_PORT: u16 = 9464;
/// notification-service's Dapr state store (its delivery log).
const NOTIFICATION_STATE: &str = "notification-state";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Every YAML document under `dir` (recursively), with its file.
fn docs_under(dir: &str) -> Vec<(PathBuf, Value)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Value)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.extend(docs(&path).into_iter().map(|d| (path.clone(), d)));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out
}

fn kind<'a>(all: &'a [(PathBuf, Value)], kind: &str) -> Vec<&'a (PathBuf, Value)> {
    all.iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .collect()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A Dapr Component's metadata as name -> value (or `secretKeyRef:<name>/<key>`).
fn component_metadata(doc: &Value) -> BTreeMap<String, String> {
    doc["spec"]["metadata"]
        .as_sequence()
        .expect("spec.metadata")
        .iter()
        .map(|m| {
            let value = if m["secretKeyRef"].is_mapping() {
                format!(
                    "secretKeyRef:{}/{}",
                    str_of(&m["secretKeyRef"]["name"]),
                    str_of(&m["secretKeyRef"]["key"])
                )
            } else {
                str_of(&m["value"])
            };
            (str_of(&m["name"]), value)
        })
        .collect()
}

fn scopes(doc: &Value) -> BTreeSet<String> {
    doc["scopes"]
        .as_sequence()
        .map(|s| s.iter().map(str_of).collect())
        .unwrap_or_default()
}

/// The apps on `kafka-pubsub`, whose consumer group is their app id.
fn group_apps() -> BTreeSet<String> {
    APPS.iter()
        .map(|(id, ..)| id.to_string())
        .filter(|id| !BROADCAST_CONSUMERS.contains(&id.as_str()))
        .collect()
}

fn all_topics() -> BTreeSet<String> {
    topics::ALL
        .iter()
        .flat_map(|t| [t.to_string(), topics::dead_letter(t)])
        .collect()
}

fn local_resource(kind_: &str, name_: &str) -> Value {
    docs_under("dapr-components")
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"].as_str() == Some(kind_) && name(d) == name_)
        .unwrap_or_else(|| panic!("dapr-components/ has no {kind_} {name_}"))
}

#[test]
fn each_app_runs_under_its_id_on_its_port() {
    let base = docs_under("kustomize/base");
    let up_sh = std::fs::read_to_string(root().join("scripts/up.sh")).unwrap();
    let kustomization = &docs(&root().join("kustomize/base/kustomization.yaml"))[0];
    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(r#"--bin "${BIN}""#)
            && dockerfile.contains("ARG BIN=${SERVICE}")
            && dockerfile.contains("/usr/local/bin/"),
        "docker/Dockerfile builds the binary named SERVICE (unless BIN says otherwise) into /usr/local/bin"
    );

    for (id, port, _) in APPS {
        // The port `just up` gives the app, where it gives one.
        for line in up_sh
            .lines()
            .filter(|l| l.starts_with(&format!("sidecar {id} ")))
        {
            let up_port = line.split_whitespace().nth(2).unwrap();
            assert_eq!(up_port, port.to_string(), "scripts/up.sh: {line}");
        }

        let deployments = kind(&base, "Deployment");
        let (path, d) = deployments
            .iter()
            .find(|(_, d)| name(d) == id)
            .unwrap_or_else(|| panic!("kustomize/base has no Deployment {id}"));
        let at = path.display();
        let pod = &d["spec"]["template"];
        let ann = &pod["metadata"]["annotations"];
        assert_eq!(ann["dapr.io/enabled"].as_str(), Some("true"), "{at}");
        assert_eq!(ann["dapr.io/app-id"].as_str(), Some(id), "{at}: app-id");
        assert_eq!(
            ann["dapr.io/app-port"].as_str(),
            Some(&*port.to_string()),
            "{at}: app-port"
        );
        assert_eq!(ann["dapr.io/app-protocol"].as_str(), Some("grpc"), "{at}");
        assert_eq!(
            ann["dapr.io/config"].as_str(),
            Some(components::CONFIGURATION),
            "{at}: dapr.io/config"
        );
        assert_eq!(pod["spec"]["serviceAccountName"].as_str(), Some(id), "{at}");

        let containers = pod["spec"]["containers"].as_sequence().unwrap();
        assert_eq!(
            containers.len(),
            1,
            "{at}: one app container (daprd is injected)"
        );
        let c = &containers[0];
        assert_eq!(c["name"].as_str(), Some(id), "{at}");
        assert_eq!(
            c["image"].as_str(),
            Some(&*format!("todo/{id}")),
            "{at}: image"
        );
        assert_eq!(
            c["command"][0].as_str(),
            Some(&*format!("/usr/local/bin/{id}")),
            "{at}: the binary is named after the app id (docker/Dockerfile)"
        );
        let grpc = c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some("grpc"))
            .unwrap_or_else(|| panic!("{at}: no port named grpc"));
        assert_eq!(grpc["containerPort"].as_u64(), Some(port.into()), "{at}");
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(
                c[probe]["grpc"]["port"].as_u64(),
                Some(port.into()),
                "{at}: {probe} is grpc.health.v1 on the app port"
            );
        }
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{at}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{at}"
        );
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{at}");

        // APP_ADDR in the app's ConfigMap listens on the same port, on every interface.
        let config = kustomization["configMapGenerator"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|g| g["name"].as_str() == Some(&*format!("{id}-config")))
            .unwrap_or_else(|| panic!("no ConfigMap {id}-config in kustomize/base"));
        let literals: Vec<_> = config["literals"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(str_of)
            .collect();
        assert!(
            literals.contains(&format!("APP_ADDR=0.0.0.0:{port}")),
            "{id}-config: {literals:?}"
        );
        let env_from: Vec<_> = c["envFrom"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|e| e["configMapRef"]["name"].as_str())
            .collect();
        assert!(
            env_from.contains(&&*format!("{id}-config")),
            "{at}: envFrom {env_from:?}"
        );
    }

    // The gRPC APIs, each on its app port.
    for app in APIS {
        let (_, port, _) = APPS.iter().find(|(id, ..)| *id == app).unwrap();
        let svc = kind(&base, "Service")
            .into_iter()
            .find(|(_, s)| name(s) == app)
            .unwrap_or_else(|| panic!("a Service {app}"));
        let p = &svc.1["spec"]["ports"][0];
        assert_eq!(p["port"].as_u64(), Some(u64::from(*port)), "Service {app}");
        assert_eq!(p["targetPort"].as_str(), Some("grpc"), "Service {app}");
    }
    // Every service serves Prometheus metrics on the port its Deployment names `metrics`.
    for (app, ..) in APPS {
        let generated = format!("{app}-config");
        let config = kustomization["configMapGenerator"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|g| g["name"].as_str() == Some(generated.as_str()))
            .unwrap_or_else(|| panic!("a configMapGenerator {generated}"));
        assert!(
            config["literals"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|l| str_of(l) == format!("METRICS_ADDR=0.0.0.0:{METRICS_PORT}")),
            "{generated}: METRICS_ADDR"
        );
        let deployment = docs(&root().join(format!("kustomize/base/{app}/deployment.yaml")))
            .into_iter()
            .find(|d| d["kind"].as_str() == Some("Deployment"))
            .unwrap_or_else(|| panic!("{app}: a Deployment"));
        let ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{app}: container ports"));
        assert!(
            ports.iter().any(|p| p["name"].as_str() == Some("metrics")
                && p["containerPort"].as_u64() == Some(u64::from(METRICS_PORT))),
            "{app}: a container port metrics = {METRICS_PORT}"
        );
    }
    // The real topic names: no prefix.
    let common = kustomization["configMapGenerator"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|g| g["name"].as_str() == Some("todo-common"))
        .unwrap();
    assert!(
        common["literals"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|l| str_of(l) == format!("{}=", topics::PREFIX_VAR))
    );
}

#[test]
fn every_kafka_component_is_the_pubsub_of_the_code_with_the_local_settings() {
    let local = component_metadata(&local_resource("Component", components::PUBSUB));
    let all = docs_under("kustomize/components");
    let pubsubs: Vec<_> = kind(&all, "Component")
        .into_iter()
        .filter(|(p, d)| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("dapr.io/"))
                && p.to_string_lossy().contains("kafka")
        })
        .collect();
    for (path, d) in &pubsubs {
        assert!(
            [components::PUBSUB, components::BROADCAST_PUBSUB].contains(&name(d)),
            "{}: {} is not a pub/sub of the code",
            path.display(),
            name(d)
        );
    }
    let pubsubs: Vec<_> = pubsubs
        .into_iter()
        .filter(|(_, d)| name(d) == components::PUBSUB)
        .collect();
    assert!(
        pubsubs.len() >= 2,
        "kafka-strimzi and kafka-external each bring one"
    );
    let apps = group_apps();
    for (path, d) in pubsubs {
        let at = path.display();
        assert_eq!(d["spec"]["type"].as_str(), Some("pubsub.kafka"), "{at}");
        assert_eq!(scopes(d), apps, "{at}: scoped to the apps");
        let m = component_metadata(d);
        // Not about the connection: the same as on one machine.
        for key in [
            "version",
            "initialOffset",
            "clientID",
            "maxMessageBytes",
            "consumeRetryInterval",
            "producerRetryMax",
        ] {
            assert_eq!(
                m.get(key),
                local.get(key),
                "{at}: {key} differs from dapr-components/"
            );
        }
        let version = &m["version"];
        assert!(
            !version.starts_with("2.") && !version.starts_with("3.1."),
            "{at}: version {version}"
        );
        assert_eq!(
            m.get("initialOffset").map(String::as_str),
            Some("oldest"),
            "{at}"
        );
        // The relay retries a failed publish in order; the sidecar must not (docs/chaos.md).
        assert_eq!(
            m.get("producerRetryMax").map(String::as_str),
            Some("0"),
            "{at}"
        );
        // The component's field is producerRequiredAcks ("all" = -1); `requiredAcks` is ignored.
        assert_eq!(
            m.get("producerRequiredAcks").map(String::as_str),
            Some("all"),
            "{at}"
        );
        assert!(
            !m.contains_key("requiredAcks"),
            "{at}: requiredAcks is not a Kafka component field"
        );
        // The consumer group is the app id: KEDA and the ACLs rely on it.
        assert!(
            !m.contains_key("consumerGroup") && !m.contains_key("consumerID"),
            "{at}"
        );
        assert!(
            m.keys().any(|k| k == "caCert"),
            "{at}: TLS to the brokers (caCert from a Secret)"
        );
    }
}

/// Each Kafka component brings `kafka-broadcast` next to `kafka-pubsub`: the same connection,
/// the local component's consumer settings, and a consumer group per pod.
#[test]
fn every_kafka_component_has_the_broadcast_pubsub_with_a_group_per_pod() {
    let local = component_metadata(&local_resource("Component", components::BROADCAST_PUBSUB));
    assert_eq!(
        local.get("initialOffset").map(String::as_str),
        Some("newest")
    );
    let all = docs_under("kustomize/components");
    let components_dirs: BTreeSet<PathBuf> = kind(&all, "Component")
        .into_iter()
        .filter(|(_, d)| name(d) == components::PUBSUB)
        .map(|(p, _)| p.parent().unwrap().to_owned())
        .collect();
    assert!(
        components_dirs.len() >= 2,
        "kafka-strimzi and kafka-external"
    );
    let consumers: BTreeSet<String> = BROADCAST_CONSUMERS.iter().map(|s| s.to_string()).collect();
    for dir in components_dirs {
        let in_dir = |n: &str| {
            let found: Vec<_> = kind(&all, "Component")
                .into_iter()
                .filter(|(p, d)| p.parent() == Some(dir.as_path()) && name(d) == n)
                .collect();
            assert_eq!(found.len(), 1, "{}: one Component {n}", dir.display());
            found[0].1.clone()
        };
        let at = dir.display();
        let pubsub = component_metadata(&in_dir(components::PUBSUB));
        let broadcast_doc = in_dir(components::BROADCAST_PUBSUB);
        assert_eq!(
            broadcast_doc["spec"]["type"].as_str(),
            Some("pubsub.kafka"),
            "{at}"
        );
        assert_eq!(
            scopes(&broadcast_doc),
            consumers,
            "{at}: scoped to {consumers:?}"
        );
        let broadcast = component_metadata(&broadcast_doc);
        // The connection (and everything else but the consumer's start) is kafka-pubsub's.
        for (key, value) in &pubsub {
            if key != "initialOffset" {
                assert_eq!(
                    broadcast.get(key),
                    Some(value),
                    "{at}: kafka-broadcast {key}"
                );
            }
        }
        // Not about the connection: the same as on one machine.
        for key in [
            "version",
            "initialOffset",
            "clientID",
            "maxMessageBytes",
            "consumeRetryInterval",
        ] {
            assert_eq!(
                broadcast.get(key),
                local.get(key),
                "{at}: kafka-broadcast {key} differs from dapr-components/"
            );
        }
        // A group per pod, named after the app id (the KafkaUser's ACL is that prefix).
        let group = broadcast
            .get("consumerGroup")
            .unwrap_or_else(|| panic!("{at}: kafka-broadcast sets consumerGroup"));
        assert!(
            group.starts_with("{appID}-") && local["consumerGroup"].starts_with("{appID}-"),
            "{at}: consumerGroup {group}"
        );
        assert!(
            group.contains("{podName}") || group.contains("{uuid}"),
            "{at}: consumerGroup {group} is not per pod"
        );
        assert!(!broadcast.contains_key("consumerID"), "{at}");
    }
}

#[test]
fn resiliency_and_configuration_mirror_dapr_components() {
    let base = docs_under("kustomize/base");
    let k8s = kind(&base, "Resiliency");
    assert_eq!(k8s.len(), 1);
    assert_eq!(name(&k8s[0].1), components::RESILIENCY);
    let mut local = local_resource("Resiliency", components::RESILIENCY);
    // Dapr 1.18's retry policy has policy, duration, maxInterval, maxRetries and matching;
    // anything else in the local file is ignored by daprd (and refused by the CRD).
    let known = [
        "policy",
        "duration",
        "maxInterval",
        "maxRetries",
        "matching",
    ];
    if let Some(retries) = local["spec"]["policies"]["retries"].as_mapping_mut() {
        for (_, policy) in retries.iter_mut() {
            if let Some(p) = policy.as_mapping_mut() {
                p.retain(|k, _| known.contains(&k.as_str().unwrap_or_default()));
            }
        }
    }
    assert_eq!(
        k8s[0].1["spec"], local["spec"],
        "kustomize/base/dapr/resiliency.yaml"
    );
    assert!(
        k8s[0].1["spec"]["targets"]["components"][components::PUBSUB].is_mapping(),
        "resiliency targets the pub/sub component"
    );
    // daprd retries only the failed entries of a bulk publish, behind a user's later
    // events of the same call: publishing is retried by the outbox, never by daprd.
    assert!(
        k8s[0].1["spec"]["targets"]["components"][components::PUBSUB]["outbound"]["retry"]
            .is_null(),
        "no outbound retry policy on the pub/sub"
    );
    // Without it daprd dead-letters every change at once while sync-service restarts.
    assert!(
        k8s[0].1["spec"]["targets"]["components"][components::BROADCAST_PUBSUB]["inbound"]["retry"]
            .is_string(),
        "resiliency retries deliveries of the broadcast pub/sub"
    );

    let conf = kind(&base, "Configuration");
    assert_eq!(conf.len(), 1);
    assert_eq!(name(&conf[0].1), components::CONFIGURATION);
    let local_conf = local_resource("Configuration", components::CONFIGURATION);
    for key in ["tracing", "metrics"] {
        assert_eq!(
            conf[0].1["spec"][key], local_conf["spec"][key],
            "Configuration spec.{key}"
        );
    }
}

#[test]
fn the_notification_state_store_is_the_one_the_service_uses() {
    let base = docs_under("kustomize/base");
    let store = kind(&base, "Component")
        .into_iter()
        .find(|(_, d)| name(d) == NOTIFICATION_STATE)
        .expect("kustomize/base has the notification-state Component");
    assert_eq!(store.1["spec"]["type"].as_str(), Some("state.postgresql"));
    assert_eq!(store.1["spec"]["version"].as_str(), Some("v2"));
    assert_eq!(
        scopes(&store.1),
        BTreeSet::from([app_ids::NOTIFICATION_SERVICE.to_owned()])
    );
    assert!(component_metadata(&store.1)["connectionString"].starts_with("secretKeyRef:"));
    // The same name as on one machine, where present.
    let local_stores: Vec<_> = docs_under("dapr-components")
        .into_iter()
        .filter(|(_, d)| {
            d["kind"].as_str() == Some("Component")
                && d["spec"]["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("state."))
        })
        .collect();
    for (path, d) in local_stores {
        assert_eq!(name(&d), NOTIFICATION_STATE, "{}", path.display());
    }
}

/// KafkaTopic topic name -> partitions, from the Strimzi component.
fn strimzi_topics() -> BTreeMap<String, u64> {
    let all = docs_under("kustomize/components/kafka-strimzi");
    kind(&all, "KafkaTopic")
        .into_iter()
        .map(|(_, d)| {
            let topic = d["spec"]["topicName"]
                .as_str()
                .unwrap_or(name(d))
                .to_owned();
            assert_eq!(
                d["metadata"]["labels"]["strimzi.io/cluster"].as_str(),
                Some("todo-kafka")
            );
            (topic, d["spec"]["partitions"].as_u64().expect("partitions"))
        })
        .collect()
}

#[test]
fn strimzi_declares_exactly_the_topics_of_the_code_and_their_dead_letters() {
    let declared: BTreeSet<String> = strimzi_topics().into_keys().collect();
    assert_eq!(declared, all_topics());

    let all = docs_under("kustomize/components/kafka-strimzi");
    let users = kind(&all, "KafkaUser");
    assert_eq!(users.len(), 1);
    let acls = users[0].1["spec"]["authorization"]["acls"]
        .as_sequence()
        .unwrap();
    let of = |t: &str| -> BTreeSet<String> {
        acls.iter()
            .filter(|a| a["resource"]["type"].as_str() == Some(t))
            .map(|a| str_of(&a["resource"]["name"]))
            .collect()
    };
    assert_eq!(of("topic"), all_topics(), "KafkaUser ACLs: topics");
    let groups_with = |pattern: &str| -> BTreeSet<String> {
        acls.iter()
            .filter(|a| {
                a["resource"]["type"].as_str() == Some("group")
                    && a["resource"]["patternType"].as_str() == Some(pattern)
            })
            .map(|a| str_of(&a["resource"]["name"]))
            .collect()
    };
    assert_eq!(
        groups_with("literal"),
        group_apps(),
        "KafkaUser ACLs: consumer groups (= app ids)"
    );
    // kafka-broadcast's groups, `<app id>-<pod>`.
    let prefixes: BTreeSet<String> = BROADCAST_CONSUMERS
        .iter()
        .map(|id| format!("{id}-"))
        .collect();
    assert_eq!(
        groups_with("prefix"),
        prefixes,
        "KafkaUser ACLs: broadcast consumer groups (prefix <app id>-)"
    );
    assert_eq!(
        of("group").len(),
        group_apps().len() + prefixes.len(),
        "no group ACL of another pattern"
    );
}

#[test]
fn keda_scales_each_consumer_on_its_own_group_and_topic() {
    let partitions = strimzi_topics();
    let overlays = docs_under("kustomize/overlays");
    let scaled = kind(&overlays, "ScaledObject");
    assert!(
        !scaled.is_empty(),
        "overlays/prod scales the consumers with KEDA"
    );
    // In the production shapes every consumer is scaled (task-service has fixed replicas).
    for overlay in ["prod", "external"] {
        let names: BTreeSet<&str> = scaled
            .iter()
            .filter(|(p, _)| p.starts_with(root().join("kustomize/overlays").join(overlay)))
            .map(|(_, so)| name(so))
            .collect();
        for (id, ..) in APPS
            .iter()
            .filter(|(id, ..)| !FIXED_REPLICAS.contains(id) && !BROADCAST_CONSUMERS.contains(id))
        {
            assert!(
                names.contains(id),
                "overlays/{overlay} has no ScaledObject for {id}"
            );
        }
    }
    for (path, so) in scaled {
        let at = path.display();
        let target = so["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
        let (_, _, consumed) = APPS
            .iter()
            .find(|(id, ..)| *id == target)
            .unwrap_or_else(|| panic!("{at}: {target} is not an app id"));
        assert_eq!(name(so), target, "{at}");
        assert!(
            !BROADCAST_CONSUMERS.contains(&target),
            "{at}: {target} has a consumer group per pod: no shared lag to scale on"
        );
        // Never more replicas than the largest of its topics has partitions.
        let most = consumed.iter().map(|t| partitions[*t]).max().unwrap();
        let max = so["spec"]["maxReplicaCount"].as_u64().unwrap();
        assert!(
            max <= most,
            "{at}: {max} replicas but its topics {consumed:?} have at most {most} partitions"
        );
        let mut triggered = BTreeSet::new();
        for trigger in so["spec"]["triggers"].as_sequence().unwrap() {
            let m = &trigger["metadata"];
            assert_eq!(trigger["type"].as_str(), Some("kafka"), "{at}");
            assert_eq!(
                m["consumerGroup"].as_str(),
                Some(target),
                "{at}: group = app id"
            );
            let topic = m["topic"].as_str().unwrap_or_default();
            assert!(
                consumed.contains(&topic),
                "{at}: {topic:?} is not a topic {target} consumes ({consumed:?})"
            );
            triggered.insert(topic);
        }
        assert_eq!(
            triggered,
            consumed.iter().copied().collect(),
            "{at}: one lag trigger per topic {target} consumes"
        );
    }
}

/// A broadcast consumer scales on CPU: a HorizontalPodAutoscaler of its Deployment, which
/// leaves the replica count to it; every app has a PodDisruptionBudget.
#[test]
fn broadcast_consumers_scale_on_cpu_and_every_app_has_a_disruption_budget() {
    let base = docs_under("kustomize/base");
    for id in BROADCAST_CONSUMERS {
        let hpa = kind(&base, "HorizontalPodAutoscaler")
            .into_iter()
            .find(|(_, h)| name(h) == id)
            .unwrap_or_else(|| panic!("kustomize/base: a HorizontalPodAutoscaler {id}"));
        let at = hpa.0.display();
        let spec = &hpa.1["spec"];
        assert_eq!(
            spec["scaleTargetRef"]["kind"].as_str(),
            Some("Deployment"),
            "{at}"
        );
        assert_eq!(spec["scaleTargetRef"]["name"].as_str(), Some(id), "{at}");
        let metrics = spec["metrics"].as_sequence().unwrap();
        assert!(
            metrics
                .iter()
                .any(|m| m["resource"]["name"].as_str() == Some("cpu")),
            "{at}: scales on CPU"
        );
        let deployment = kind(&base, "Deployment")
            .into_iter()
            .find(|(_, d)| name(d) == id)
            .unwrap();
        assert!(
            deployment.1["spec"]["replicas"].is_null(),
            "{}: the HorizontalPodAutoscaler owns the replica count",
            deployment.0.display()
        );
    }
    for (id, ..) in APPS {
        assert!(
            kind(&base, "PodDisruptionBudget")
                .into_iter()
                .any(|(_, p)| name(p) == id
                    && p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str()
                        == Some(id)),
            "kustomize/base: a PodDisruptionBudget {id}"
        );
    }
}

#[test]
fn each_database_owner_reads_its_own_database_url() {
    // Rule 1: no shared database. Each owner's DATABASE_URL comes from a Secret of its own.
    let base = docs_under("kustomize/base");
    for (_, d) in kind(&base, "Deployment") {
        let id = name(d);
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let url = env
            .iter()
            .find(|e| e["name"].as_str() == Some("DATABASE_URL"));
        if DATABASE_OWNERS.contains(&id) {
            let secret = url
                .and_then(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
                .unwrap_or_else(|| panic!("{id}: DATABASE_URL from a Secret"));
            assert_eq!(secret, format!("{id}-secrets"), "{id}: its own Secret");
        } else {
            assert!(url.is_none(), "{id} owns no database");
        }
    }
    // The development PostgreSQL has one database per owner, and the dev Secrets point there.
    let dev = &docs(&root().join("kustomize/overlays/dev/kustomization.yaml"))[0];
    let urls: BTreeSet<String> = DATABASE_OWNERS
        .iter()
        .map(|id| {
            let generated = dev["secretGenerator"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|g| g["name"].as_str() == Some(&*format!("{id}-secrets")))
                .unwrap_or_else(|| panic!("overlays/dev generates {id}-secrets"));
            let url = generated["literals"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(str_of)
                .find_map(|l| l.strip_prefix("DATABASE_URL=").map(str::to_owned))
                .unwrap_or_else(|| panic!("{id}-secrets: DATABASE_URL"));
            let database = url.rsplit('/').next().unwrap().to_owned();
            let init = std::fs::read_to_string(
                root().join("kustomize/components/postgres/10-todo-databases.sh"),
            )
            .unwrap();
            assert!(
                init.contains(&format!("CREATE DATABASE {database} ")),
                "components/postgres creates the database {database} of {id}"
            );
            database
        })
        .collect();
    assert_eq!(
        urls.len(),
        DATABASE_OWNERS.len(),
        "one database each: {urls:?}"
    );
}
