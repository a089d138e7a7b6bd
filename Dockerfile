# The ferrolb image, from a release binary built on the host:
#
#   cargo build --release --locked -p ferrolb
#   docker build -t <registry>/ferrolb:0.1.0 .
#
# The binary links against glibc (TLS is rustls with ring and aws-lc, built in),
# so it needs a base whose glibc is at least as new as the build machine's:
# distroless/cc-debian12 has Debian 12's glibc 2.36. Build on Debian 12 (or in a
# rust:1-bookworm container) or pass a newer base with --build-arg BASE=...
#
# .dockerignore keeps the build context to the one binary.
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
FROM ${BASE}

LABEL org.opencontainers.image.title="ferrolb" \
      org.opencontainers.image.description="Kubernetes LoadBalancer controller for AWS NLB and bare metal" \
      org.opencontainers.image.source="https://github.com/ferrolb/ferrolb" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY target/release/ferrolb /usr/local/bin/ferrolb

# The distroless "nonroot" user; the chart runs the controller as this uid with a
# read-only root filesystem (the binary writes no files).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferrolb"]
CMD ["controller"]
