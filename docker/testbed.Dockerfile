# Image for docker-compose.yml: the same servers as the native test bed,
# installed and started by the very same scripts (integration/testbed/*.sh)
# and config templates (integration/testbed/conf/*.tmpl), so the two cannot
# drift. Untested on the machines this project is developed on (no Docker).
FROM debian:12
COPY integration/testbed /src/integration/testbed
RUN /src/integration/testbed/install.sh && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/src/integration/testbed/docker-entrypoint.sh"]
