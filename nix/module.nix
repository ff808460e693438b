# NixOS module: services.shoal runs `shoal up` as a system service, with
# the same restrictions as contrib/shoal.service. Settings are the flags of
# `shoal up` (see `shoal up --help`), written to its config file.
#
#   services.shoal = {
#     enable = true;
#     settings = {
#       peer = [ "/ip4/10.0.0.2/tcp/4100" ];
#       api = "0.0.0.0:4101";
#     };
#     clusterKeyFile = "/etc/shoal/cluster.key";
#     openFirewall = true;
#   };
{ config, lib, pkgs, ... }:

let
  cfg = config.services.shoal;
  toml = pkgs.formats.toml { };
  # Behind the opened firewall, large frames need a port known ahead.
  settings = { data-dir = "/var/lib/shoal"; }
    // lib.optionalAttrs cfg.openFirewall { bulk-port = 4102; }
    // cfg.settings;
  configFile = toml.generate "shoal.toml" settings;
  keyFlag = lib.optionalString (cfg.clusterKeyFile != null)
    " --cluster-key \${CREDENTIALS_DIRECTORY}/cluster-key";
in
{
  options.services.shoal = {
    enable = lib.mkEnableOption "shoal, a cluster node for LAN hosts";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The shoal package to run.";
    };

    settings = lib.mkOption {
      type = toml.type;
      default = { };
      example = {
        peer = [ "/ip4/10.0.0.2/tcp/4100" ];
        node-timeout = "3s";
        label = [ "zone=a" ];
      };
      description = ''
        Settings of `shoal up`, each named as its flag, written to the file
        given to `--config`. `data-dir` is /var/lib/shoal unless set.
      '';
    };

    clusterKeyFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = ''
        A cluster key file (`shoal cluster-key FILE`): only nodes holding
        the same key can connect. Handed to the service as a credential,
        so it can stay readable by root only.
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the peer ports (TCP 4100, and 4102 for large frames: the module sets bulk-port to it unless settings name another) and mDNS (UDP 5353).";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.shoal = {
      description = "shoal cluster node";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      environment.SHOAL_LOG = "info";
      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} up --config ${configFile}${keyFlag}";
        LoadCredential = lib.optional (cfg.clusterKeyFile != null)
          "cluster-key:${toString cfg.clusterKeyFile}";
        DynamicUser = true;
        User = "shoal";
        StateDirectory = "shoal";
        StateDirectoryMode = "0700";
        # SIGTERM drains: runs handed back, leadership handed over.
        KillSignal = "SIGTERM";
        TimeoutStopSec = "30s";
        Restart = "on-failure";
        RestartSec = "2s";
        LimitNOFILE = 65536;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        UMask = "0077";
      };
    };

    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = [ 4100 settings.bulk-port ];
      allowedUDPPorts = [ 5353 ];
    };
  };
}
