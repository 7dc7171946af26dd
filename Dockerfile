# cortexd container image: a static binary on an empty base, run as a
# non-root user, with the repo dir on the /data volume.
#
# `make image` builds it. No base image is pulled (the build machine's
# Docker may have no registry): the binary is compiled on the host with
# CGO_ENABLED=0 and staged, with /etc/passwd and an empty /data, in
# build/image/; this file only copies that in.
FROM scratch

COPY build/image/passwd build/image/group /etc/
COPY build/image/cortexd /usr/local/bin/cortexd
COPY --chown=10001:10001 build/image/data/ /data/

USER 10001:10001
# The repo dir. The API listens on all interfaces of the container, so it
# requires the bearer token from /data/api-token (`cortexd init` writes it).
ENV CORTEXD_PATH=/data \
    CORTEXD_API_LISTEN=0.0.0.0:5080
VOLUME ["/data"]

# libp2p over TCP and QUIC, and the HTTP API.
EXPOSE 4001/tcp 4001/udp 5080/tcp

# The image has no shell or curl: cortexd itself asks /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/cortexd", "health"]

ENTRYPOINT ["/usr/local/bin/cortexd"]
# --init creates the repo on the first start (identity, config, token).
CMD ["daemon", "--init"]
