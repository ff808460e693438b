{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "shoal";
  version = "0.1.0";
  src = lib.cleanSource ./..;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "shoal" ];
  # The test suite runs in CI (`.ci/run`); the package build only builds.
  doCheck = false;

  meta = {
    description = "A cluster node for LAN hosts: replicated event-sourced State, workloads, coordination";
    license = lib.licenses.asl20;
    mainProgram = "shoal";
  };
}
