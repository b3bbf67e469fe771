"""podward on this machine, for `./build.sh run`, `render.py run`, the benchmark and the tests:
  envoy_process  the real Envoy running a rendered bootstrap
  kubelet        a pod's files and environment as the kubelet gives them (LocalPod)
  pki, jwt       a cluster CA and service-account tokens
  apiserver      the stand-in API server (TLS, tokens, exec/attach/port-forward, logs -f, fault injection);
                 remotecommand, the wire protocols of exec, attach and port-forward
  example        `./build.sh run`: all of the above as the ambassador example
  waiting        wait_for: a bounded wait for an event, never for a time
"""
