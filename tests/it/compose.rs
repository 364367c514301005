//! `docker-compose.yaml` and `Dockerfile` are for users: no Docker engine runs here, so these
//! tests validate what can be checked without one — the compose file with a real Compose
//! client, and the Dockerfile's inputs against the repository.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_compose_file_is_valid_and_wires_the_workshop() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yaml", "config"])
        .current_dir(repo())
        .output()
        .expect("docker-compose is installed (./test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "image: apache/kafka",
        "KAFKA_PROCESS_ROLES: broker,controller",
        "real-time-orders",
        "--partitions",
        "service_completed_successfully",
        "context:",
    ] {
        assert!(config.contains(needle), "compose config lacks {needle:?}:\n{config}");
    }
}

#[test]
fn the_dockerfile_builds_from_files_in_the_repository() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert_eq!(dockerfile.lines().filter(|l| l.starts_with("FROM ")).count(), 2, "a multi-stage build");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(repo().join(source).exists(), "Dockerfile copies {source}, which is not in the repository");
        }
    }
}

#[test]
fn the_cluster_profile_runs_two_processes_of_one_dataflow() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yaml", "--profile", "cluster", "config"])
        .current_dir(repo())
        .output()
        .expect("docker-compose is installed (./test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = String::from_utf8_lossy(&out.stdout);
    for needle in ["lambda-0:", "lambda-1:", "--processes", "/app/config/hosts-compose.txt"] {
        assert!(config.contains(needle), "compose config lacks {needle:?}:\n{config}");
    }
    // The host file it mounts is one our cluster options accept, with one address per process.
    let mut settings = atelier_lambda::config::Settings::default();
    settings.dataflow.processes = 2;
    settings.dataflow.process = 1;
    settings.dataflow.workers = 2;
    settings.dataflow.hostfile = Some(repo().join("config/hosts-compose.txt"));
    match settings.timely_config().unwrap().communication {
        timely::CommunicationConfig::Cluster { addresses, process, threads, .. } => {
            assert_eq!(
                (addresses, process, threads),
                (vec!["lambda-0:2101".to_owned(), "lambda-1:2101".to_owned()], 1, 2)
            );
        }
        _ => panic!("a cluster configuration"),
    }
}
