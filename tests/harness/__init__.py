"""What only the tests use: the real kube-apiserver (envtest), a real cluster and the commands README gives for
it, pods of the real API server, floods and network namespaces, h2c, and the figures tests record. What the tests
share with `./build.sh run` and the benchmark is the package podward.local."""
