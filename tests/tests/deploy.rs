//! deploy/ tells the truth: the example TOML configs start the real binaries with their settings
//! applied, and the systemd units and Kubernetes manifests use only flags the binaries have, with
//! ports, probes and SRV names that agree with each other, and the manifests validate against the
//! Kubernetes schema of every version from 1.29 to 1.37.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;
use smq_tests::{binary, ok, skip, wait_for, Broker, NameServer};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn path_str(path: &str) -> String {
    deploy(path).display().to_string()
}

#[test]
fn example_configs_start_the_real_servers_with_their_settings() {
    // The NameServer's file, its listen address moved to an ephemeral port and DNS to a port
    // where nothing answers (the example's record is not served here).
    // Its cluster secret file, moved to a temporary directory like the brokers'.
    let secret_dir = tempfile::tempdir().unwrap();
    let cluster_secret = secret_dir.path().join("cluster.secret");
    std::fs::write(&cluster_secret, "an example cluster secret\n").unwrap();
    let cluster_secret = cluster_secret.display().to_string();
    let nameserver = NameServer::start(&[
        "--config",
        &path_str("config/nameserver.toml"),
        "--dns-server",
        "127.0.0.1:9",
        "--cluster-secret-file",
        &cluster_secret,
    ]);
    // The master's file, with ports, data directory, secrets and NameServer moved onto
    // loopback: it registers under the file's cluster and group, as a master.
    let secret = secret_dir.path().join("replication.secret");
    std::fs::write(&secret, "an example replication secret\n").unwrap();
    let secret = secret.display().to_string();
    let master = Broker::start(&[
        "--config",
        &path_str("config/broker-a-master.toml"),
        "--cluster-secret-file",
        &cluster_secret,
        "--replication-secret-file",
        &secret,
        "--nameserver",
        &nameserver.url(),
        "--advertise",
        "127.0.0.1:1",
    ]);
    wait_for(
        "the master from the example config to register",
        Duration::from_secs(30),
        || {
            let (status, body) = nameserver.get("/v1/cluster");
            (status == 200
                && body.contains("\"cluster\":\"prod\"")
                && body.contains("\"group\":\"broker-a\""))
            .then_some(())
        },
    );
    // The slave's file, pointed at that master: it registers as the group's slave.
    let _slave = Broker::start(&[
        "--config",
        &path_str("config/broker-a-slave.toml"),
        "--cluster-secret-file",
        &cluster_secret,
        "--replication-secret-file",
        &secret,
        "--master",
        &master.addr.to_string(),
        "--nameserver",
        &nameserver.url(),
        "--advertise",
        "127.0.0.1:2",
    ]);
    wait_for(
        "the slave from the example config to register",
        Duration::from_secs(30),
        || {
            let (status, body) = nameserver.get("/v1/cluster");
            (status == 200 && body.contains("\"role\":\"slave\"")).then_some(())
        },
    );
}

/// Every `--flag` in `args` is one `binary --help` lists.
fn assert_flags_exist(binary_name: &str, args: &[String]) {
    let help = Command::new(binary(binary_name))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{binary_name} has no {flag} (used in deploy/)"
        );
    }
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Every file of deploy/kubernetes.
const MANIFESTS: [&str; 3] = ["nameserver.yaml", "brokers.yaml", "broker-a-slave.yaml"];

fn manifests() -> Vec<Value> {
    let mut documents = Vec::new();
    for file in MANIFESTS {
        let text = std::fs::read_to_string(deploy(&format!("kubernetes/{file}"))).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
            documents.push(value);
        }
    }
    documents
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kubernetes_manifests_agree_with_the_binaries_and_each_other() {
    let documents = manifests();
    let name = |d: &Value| d["metadata"]["name"].as_str().unwrap().to_owned();
    let namespace = |d: &Value| d["metadata"]["namespace"].as_str().unwrap().to_owned();

    // The NameServer's Service names its port smq-ns: that makes the SRV record.
    let service = of_kind(&documents, "Service")
        .into_iter()
        .find(|s| name(s) == "smq-nameserver")
        .expect("the NameServer Service");
    let port = &service["spec"]["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["protocol"].as_str()),
        (Some("smq-ns"), Some("TCP"))
    );
    let srv = format!(
        "_smq-ns._tcp.{}.{}.svc.cluster.local.",
        name(service),
        namespace(service)
    );
    let deployment = of_kind(&documents, "Deployment")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_flags_exist("smq-nameserver", &args);
    let listen = port_of(flag(&args, "--listen").expect("--listen"));
    assert_eq!(port["targetPort"].as_u64(), Some(listen));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["port"].as_u64(),
        Some(listen)
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["app"],
        service["spec"]["selector"]["app"]
    );

    // Every broker: flags the binary has, the SRV name above, readiness on its --http port,
    // its data on the volume claimed for it, --advertise from the pod's DNS name.
    let statefulsets = of_kind(&documents, "StatefulSet");
    assert_eq!(
        statefulsets.len(),
        3,
        "broker-a, broker-b and broker-a's slave"
    );
    for set in statefulsets {
        let spec = &set["spec"];
        let container = &spec["template"]["spec"]["containers"][0];
        let args = strings(&container["args"]);
        assert_flags_exist("smq-broker", &args);
        assert_eq!(flag(&args, "--srv"), Some(srv.as_str()), "{}", name(set));
        let http_port = port_of(flag(&args, "--http").unwrap());
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(
            container["readinessProbe"]["httpGet"]["port"].as_u64(),
            Some(http_port)
        );
        let mount = &container["volumeMounts"][0];
        assert_eq!(mount["mountPath"].as_str(), flag(&args, "--data-dir"));
        assert_eq!(
            spec["volumeClaimTemplates"][0]["metadata"]["name"],
            mount["name"]
        );
        let listen = port_of(flag(&args, "--listen").unwrap());
        let advertise = format!(
            "$(POD_NAME).{}.$(POD_NAMESPACE).svc.cluster.local:{listen}",
            spec["serviceName"].as_str().unwrap()
        );
        assert_eq!(flag(&args, "--advertise"), Some(advertise.as_str()));
        let env = container["env"].as_sequence().unwrap();
        assert!(env.iter().any(|e| e["name"] == "POD_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"));
        if flag(&args, "--role") == Some("slave") {
            // The slave follows the master pod of its group by its stable DNS name.
            let group = flag(&args, "--group").unwrap();
            let master = format!(
                "smq-{group}-0.smq-{group}.{}.svc.cluster.local:{listen}",
                namespace(set)
            );
            assert_eq!(flag(&args, "--master"), Some(master.as_str()));
        }
    }
}

#[test]
fn systemd_units_start_the_binaries_with_flags_they_have() {
    for (unit, binary_name) in [
        ("systemd/smq-nameserver.service", "smq-nameserver"),
        ("systemd/smq-broker@.service", "smq-broker"),
    ] {
        let text = std::fs::read_to_string(deploy(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
        let args: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
        assert!(
            args[0].ends_with(&format!("/{binary_name}")),
            "{unit}: {exec}"
        );
        assert_flags_exist(binary_name, &args[1..]);
        assert!(
            flag(&args, "--config").is_some(),
            "{unit} reads its TOML file"
        );
    }
}

/// The Kubernetes versions the manifests are checked against: 1.29 to kubernetes-validate's newest.
const KUBERNETES_VERSIONS: std::ops::RangeInclusive<u32> = 29..=37;

/// The PyPI package that validates manifests offline (it bundles the Kubernetes JSON schemas);
/// scripts/test.sh installs this version.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// `kubernetes-validate` from `SMQ_KUBERNETES_VALIDATE` (scripts/test.sh sets it) or PATH; None,
/// after saying how to install it, when there is none.
fn kubernetes_validate() -> Option<PathBuf> {
    let from_env = std::env::var_os("SMQ_KUBERNETES_VALIDATE").map(PathBuf::from);
    let from_path = || {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("kubernetes-validate"))
            .find(|candidate| candidate.is_file())
    };
    match from_env.filter(|path| path.is_file()).or_else(from_path) {
        Some(validator) => Some(validator),
        None => {
            skip::cannot_run(&format!(
                "kubernetes-validate is not installed (scripts/test.sh installs it; or: python3 \
                 -m venv DIR && DIR/bin/pip install {KUBERNETES_VALIDATE}, then set \
                 SMQ_KUBERNETES_VALIDATE=DIR/bin/kubernetes-validate)"
            ));
            None
        }
    }
}

/// Runs `kubernetes-validate --strict` (unknown fields are errors) on `files` against Kubernetes
/// 1.`minor`.
fn validate(validator: &Path, minor: u32, files: &[PathBuf]) -> std::process::Output {
    Command::new(validator)
        .args(["--strict", "--quiet", "--kubernetes-version"])
        .arg(format!("1.{minor}"))
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", validator.display()))
}

#[test]
fn kubernetes_manifests_validate_against_the_kubernetes_schema() {
    let Some(validator) = kubernetes_validate() else {
        return;
    };
    let files: Vec<PathBuf> = MANIFESTS
        .iter()
        .map(|file| deploy(&format!("kubernetes/{file}")))
        .collect();
    for minor in KUBERNETES_VERSIONS {
        let output = validate(&validator, minor, &files);
        assert!(
            output.status.success(),
            "deploy/kubernetes does not validate against Kubernetes 1.{minor}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The validator rejects what Kubernetes would: a misspelt field of the NameServer's
    // Deployment.
    let dir = tempfile::tempdir().unwrap();
    let misspelt = dir.path().join("nameserver.yaml");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("\n  replicas: 1\n"), "{text}");
    std::fs::write(
        &misspelt,
        text.replace("\n  replicas: 1\n", "\n  replica: 1\n"),
    )
    .unwrap();
    let output = validate(&validator, *KUBERNETES_VERSIONS.end(), &[misspelt]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success() && report.contains("'replica' was unexpected"),
        "a misspelt field passed: {report}"
    );
    println!(
        "deploy/kubernetes validates against Kubernetes 1.{} to 1.{} ({})",
        KUBERNETES_VERSIONS.start(),
        KUBERNETES_VERSIONS.end(),
        String::from_utf8_lossy(
            &ok(Command::new(&validator).arg("--version").output().unwrap()).stdout
        )
        .trim()
    );
}
