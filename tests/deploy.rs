//! deploy/ checked without a cluster: every kustomization renders and
//! validates against Kubernetes' schemas, the Dockerfiles lint clean
//! (`deploy/check.py`), and the manifests agree with the server they deploy:
//! probe ports, health service names and HTTP health routes are what the
//! server registers,
//! container ports are its configured and default ports, the drain fits in
//! the termination grace period, the keys file lies in the Secret's mount, and
//! the pods run non-root on a read-only root filesystem; a pod given a GPU
//! runs the CUDA image on it, and no other pod asks for CUDA.

mod common;

use candela_server::api::grpc::router::HEALTH_SERVICES;
use candela_server::api::http::rest::{LIVE, READY};
use candela_server::config::Settings;
use candela_server::model::device::DeviceSpec;
use candela_server::testing::{peers_python, repo_root};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The kustomizations check.py validates (its ENTRY_POINTS).
fn entry_points() -> Vec<String> {
    let output = check_py(&["entry-points"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let entries: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(entries.len() >= 6 && entries.contains(&"k8s/overlays/bucket".to_string()), "{entries:?}");
    entries
}

fn check_py(args: &[&str]) -> std::process::Output {
    Command::new(peers_python())
        .arg(repo_root().join("deploy/check.py"))
        .args(args)
        .output()
        .expect("run deploy/check.py")
}

/// The objects `entry` renders to.
fn render(entry: &str) -> Vec<Value> {
    let output = check_py(&["render", entry]);
    assert!(output.status.success(), "rendering {entry}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("check.py render prints JSON")
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The server's settings as the pods get them: the ConfigMap's file.
fn configured(objects: &[Value]) -> Settings {
    let [config] = of_kind(objects, "ConfigMap")[..] else { panic!("one ConfigMap") };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config["data"]["config.toml"].as_str().unwrap()).unwrap();
    Settings::from_args(["candela-server", "--config", path.to_str().unwrap()]).expect("the ConfigMap's config parses")
}

fn port_named(container: &Value, name: &str) -> u16 {
    let ports = container["ports"].as_array().unwrap();
    let port = ports.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no container port `{name}`"));
    port["containerPort"].as_u64().unwrap() as u16
}

#[test]
fn manifests_validate_and_dockerfiles_lint_clean() {
    let output = check_py(&["validate"]);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "deploy/check.py validate failed:\n{text}");
    for part in [
        "k8s/base",
        "blue-green",
        "bucket",
        "canary",
        "overlays/gpu",
        "http-probes",
        "servicemonitor",
        "Dockerfile: hadolint clean",
    ] {
        assert!(text.contains(part), "`{part}` not checked:\n{text}");
    }
}

#[test]
fn every_deployment_agrees_with_the_server() {
    let defaults = Settings::from_args(["candela-server"]).unwrap();
    let default_metrics = defaults.metrics_address().unwrap().expect("metrics on by default");
    let default_http = defaults.http_address().unwrap().expect("the HTTP API on by default");
    for entry in entry_points() {
        let entry = entry.as_str();
        let objects = render(entry);
        let settings = configured(&objects);
        let metrics = settings.metrics_address().unwrap().expect("the pods serve metrics");
        let http = settings.http_address().unwrap().expect("the pods serve the HTTP API");
        assert_eq!(settings.listen.port(), defaults.listen.port(), "{entry}: the default gRPC port");
        assert_eq!(http.port(), default_http.port(), "{entry}: the default HTTP port");
        assert_eq!(metrics.port(), default_metrics.port(), "{entry}: the default metrics port");
        let deployments = of_kind(&objects, "Deployment");
        assert!(!deployments.is_empty(), "{entry} deploys the server");
        for deployment in deployments {
            let name = deployment["metadata"]["name"].as_str().unwrap();
            let at = format!("{entry}: Deployment {name}");
            let pod = &deployment["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            assert_eq!(port_named(container, "grpc"), settings.listen.port(), "{at}: gRPC port");
            assert_eq!(port_named(container, "metrics"), metrics.port(), "{at}: metrics port");
            assert_eq!(port_named(container, "http"), http.port(), "{at}: HTTP port");
            // Probes ask gRPC health (a registered service) or the HTTP port's health routes.
            for (probe, wanted, path) in [
                ("startupProbe", None, READY),
                ("readinessProbe", Some("candela.v1.Inference"), READY),
                ("livenessProbe", None, LIVE),
            ] {
                let probe_at = format!("{at}: {probe}");
                let get = &container[probe]["httpGet"];
                if get.is_object() {
                    assert_eq!(get["port"], "http", "{probe_at}: the HTTP port, by name");
                    assert_eq!(get["path"], path, "{probe_at}: the server's health route");
                    continue;
                }
                let grpc = &container[probe]["grpc"];
                assert_eq!(grpc["port"].as_u64(), Some(settings.listen.port() as u64), "{probe_at}: port");
                let service = grpc["service"].as_str().unwrap();
                assert!(
                    HEALTH_SERVICES.contains(&service),
                    "{probe_at} asks for `{service}`, not a registered service"
                );
                if let Some(wanted) = wanted {
                    assert_eq!(service, wanted, "{probe_at} follows the inference API's readiness");
                }
            }
            let grace = pod["terminationGracePeriodSeconds"].as_f64().unwrap();
            let drain = settings.drain_seconds + settings.drain_grace_seconds;
            assert!(drain < grace, "{at}: drain ({drain} s) must end before the kill ({grace} s)");
            // The settings file is where CANDELA_CONFIG says, and the keys file inside the Secret's mount.
            let mounts = container["volumeMounts"].as_array().unwrap();
            let mount =
                |volume: &str| mounts.iter().find(|m| m["name"] == volume).unwrap()["mountPath"].as_str().unwrap();
            let env = container["env"].as_array().unwrap();
            let config_env = env.iter().find(|e| e["name"] == "CANDELA_CONFIG").unwrap()["value"].as_str().unwrap();
            assert_eq!(config_env, mount("config"), "{at}: CANDELA_CONFIG points at the mounted file");
            let keys = settings.api_keys_file.as_deref().expect("keys are on in production");
            assert_eq!(
                keys.parent().unwrap(),
                Path::new(mount("api-keys")),
                "{at}: the keys file is in the Secret's mount"
            );
            let volumes = pod["volumes"].as_array().unwrap();
            let secret = volumes.iter().find(|v| v["name"] == "api-keys").unwrap();
            assert_eq!(secret["secret"]["secretName"], "candela-api-keys", "{at}");
            // The image's models, or a bucket mirrored into a writable emptyDir
            // (the root filesystem is read-only), with the store's credentials from a Secret.
            let variable = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].as_str().unwrap());
            match variable("CANDELA_MODELS") {
                None => assert_eq!(settings.models, "/models", "{at}: the image's models"),
                Some(url) => {
                    assert!(url.starts_with("s3://"), "{at}: a bucket, not `{url}`");
                    let cache = variable("CANDELA_MODEL_CACHE").expect("a model cache");
                    assert_eq!(cache, mount("model-cache"), "{at}: the cache is the mounted volume");
                    let volume =
                        pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "model-cache").unwrap();
                    assert!(volume["emptyDir"].is_object(), "{at}: the cache is an emptyDir");
                    let from = &container["envFrom"][0]["secretRef"]["name"];
                    assert_eq!(from, "candela-model-store", "{at}: the store's credentials come from a Secret");
                }
            }
            if let Some(admin) = variable("CANDELA_ADMIN_KEYS_FILE") {
                assert_eq!(
                    Path::new(admin).parent().unwrap(),
                    Path::new(mount("admin-keys")),
                    "{at}: admin keys mount"
                );
            }
            // A GPU pod runs the CUDA image on its GPU; any other pod never asks for CUDA.
            let device = env.iter().find(|e| e["name"] == "CANDELA_DEVICE").map(|e| e["value"].as_str().unwrap());
            let device: Option<DeviceSpec> = device.map(|d| d.parse().unwrap_or_else(|e| panic!("{at}: {e}")));
            let image = container["image"].as_str().unwrap();
            if container["resources"]["limits"]["nvidia.com/gpu"].as_u64().unwrap_or(0) > 0 {
                assert_eq!(device, Some(DeviceSpec::Cuda(0)), "{at}: a pod given a GPU must serve on it");
                assert!(image.ends_with("-cuda"), "{at}: a GPU pod runs the CUDA image, not `{image}`");
            } else {
                assert!(!matches!(device, Some(DeviceSpec::Cuda(_))), "{at}: asks for CUDA without a GPU");
                assert!(!image.ends_with("-cuda"), "{at}: the CUDA image without a GPU");
            }
            // Non-root, read-only, no capabilities.
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}");
            assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{at}: the image's user");
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{at}");
            assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{at}");
        }
        for service in of_kind(&objects, "Service") {
            for port in service["spec"]["ports"].as_array().unwrap() {
                let wanted = match port["targetPort"].as_str().unwrap() {
                    "grpc" => settings.listen.port(),
                    "metrics" => metrics.port(),
                    "http" => http.port(),
                    other => panic!("{entry}: Service port targets unknown container port `{other}`"),
                };
                assert_eq!(port["port"].as_u64(), Some(wanted as u64), "{entry}: Service ports mirror the server's");
            }
        }
        for hpa in of_kind(&objects, "HorizontalPodAutoscaler") {
            assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2, "{entry}: at least 2 replicas");
        }
    }
}

#[test]
fn the_kserve_runtime_and_the_images_agree_with_the_server() {
    let text = std::fs::read_to_string(repo_root().join("deploy/kserve/cluster-serving-runtime.yaml")).unwrap();
    // The runtime's args are server flags: they must parse, and the gRPC port
    // they set must be the container's `h2c` port KServe routes to.
    let args_start = text.find("args:").unwrap();
    let args: Vec<&str> = text[args_start..]
        .lines()
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- --"))
        .map(|l| l.trim_start().trim_start_matches("- "))
        .collect();
    let settings = Settings::from_args(std::iter::once("candela-server").chain(args.iter().copied()))
        .expect("the runtime's args are valid server flags");
    assert!(text.contains(&format!("containerPort: {}", settings.listen.port())), "the h2c port is the listen port");
    assert_eq!(settings.models, "/mnt/models", "KServe's storage initializer writes /mnt/models");
    for dockerfile in ["deploy/Dockerfile", "deploy/Dockerfile.cuda"] {
        let text = std::fs::read_to_string(repo_root().join(dockerfile)).unwrap();
        let defaults = Settings::from_args(["candela-server"]).unwrap();
        let metrics = defaults.metrics_address().unwrap().unwrap();
        let http = defaults.http_address().unwrap().unwrap();
        let expose = format!("EXPOSE {} {} {}", defaults.listen.port(), metrics.port(), http.port());
        assert!(text.contains(&expose), "{dockerfile} must `{expose}`");
        assert!(text.contains("COPY --chown=0:0 models /models"), "{dockerfile} ships the models at /models");
        let user = text.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
        let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric USER");
        assert_ne!(uid, 0, "{dockerfile} runs as non-root");
    }
}
