# The Ambit image: one image for the controller, the node agent and the CNI installer (the `ambit`
# command picks the part). Node 24 comes from the project's own npm dependency (node@24), so the
# tree under /opt/ambit is self-contained; the CNI installer copies it to the node as it is.
#   docker build -t ambit:0.1.0 .        (or: podman build -t ambit:0.1.0 .)

# ---- build: npm packages and the N-API addon (node-gyp needs python3, make, g++)
FROM node:24-bookworm-slim AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/ambit
# Dependencies first, so a source change does not reinstall them. The install script builds the
# addon (scripts/build-native.sh) and warms the type-strip cache, so their sources come along.
COPY package.json package-lock.json ./
COPY scripts/build-native.sh scripts/warm-ts-cache.sh scripts/
COPY src/native/ src/native/
COPY src/boot/ src/boot/
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && rm -rf src/native/build/Release/obj.target src/native/build/Release/.deps ~/.npm ~/.cache
COPY bin/ bin/
COPY proto/ proto/
COPY src/ src/
# Sources replaced src/native/build; keep the addon that npm ci built.
RUN test -f src/native/build/Release/ambit_native.node || npm run install
# Sources with their types stripped, so no process loads Node's TypeScript stripper (~20 MB each).
RUN bash scripts/warm-ts-cache.sh
ARG VERSION=0.1.0
# Version + content hash: the CNI installer keeps one host copy per distinct image.
RUN hash=$(find . -type f ! -name IMAGE_VERSION -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12) \
 && echo "${VERSION}-${hash}" > IMAGE_VERSION \
 && mkdir -p node_modules/.cache && chmod -R a+rX /opt/ambit

# ---- runtime: what the agent needs for in-pod rules, and nothing else
FROM debian:bookworm-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends iptables nftables iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/ambit /opt/ambit
ENV PATH=/opt/ambit/bin:$PATH
# The Deployment and DaemonSets choose the user (the controller runs as 65532, the agent as root).
ENTRYPOINT ["/opt/ambit/bin/ambit"]
