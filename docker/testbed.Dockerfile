# Image for docker-compose.yml: the same servers as the native test bed,
# installed and started by the very same scripts (integration/testbed/*.sh)
# and config templates (integration/testbed/conf/*.tmpl), so the two cannot
# drift. Built and run by `make compose-test`
# (integration/testbed/compose-test.sh), which also makes the base image
# with debootstrap + docker import where no image registry is reachable.
FROM debian:12
# install.sh alone first: edits to the other scripts keep the package layer.
COPY integration/testbed/install.sh /src/install.sh
RUN /src/install.sh && rm -rf /var/lib/apt/lists/*
COPY integration/testbed /src/integration/testbed
ENTRYPOINT ["/src/integration/testbed/docker-entrypoint.sh"]
