{
  description = "shoal: one binary per LAN host; the hosts form a cluster with replicated, event-sourced State";

  # shoal needs Rust 1.88 (the locked libp2p does): 25.11 ships a newer one.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        shoal = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.system}.shoal;
      });

      # services.shoal: `shoal up` as a system service (nix/module.nix).
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.shoal.package = lib.mkDefault self.packages.${pkgs.system}.shoal;
      };

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.system}.shoal ];
          packages = [ pkgs.cargo-nextest pkgs.clippy pkgs.rustfmt ];
        };
      });
    };
}
