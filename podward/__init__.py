"""podward's Python side, the one source of everything that describes or runs the sidecar outside Rust.

Describing it (each module builds on the ones before):
  constants     the sidecar's fixed facts (paths, names, ports, memory), constants.json's shared ones
  settings      what differs between one sidecar and another (Settings)
  bootstrap     the Envoy bootstrap of a sidecar
  pod           the pod pieces: the sidecar container, its volumes, the example pod, the ConfigMaps
  manifests     what a platform team applies: the injection, the kustomize tree, the Istio plugin
  documents     YAML as people write it
  deployables   every file ./build.sh generates: deploy/ (committed) and dist/

Running it on this machine: podward.local. The command line is envoy/render.py.
"""
