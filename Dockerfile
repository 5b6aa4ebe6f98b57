# kerntap image: a build stage with the toolchain, a runtime stage with Node 24 LTS,
# libbpf and libelf only, plus the prebuilt BPF objects and addon.
#   docker build -t kerntap .
# NODE_IMAGE: the base of both stages; where no registry is reachable,
# scripts/image-bases.sh makes an equivalent from Debian and npm packages.
ARG NODE_IMAGE=node:24-bookworm-slim
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-19 llvm-19 libbpf-dev libelf-dev zlib1g-dev pkg-config make g++ python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json binding.gyp tsconfig.json tsconfig.build.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY bpf bpf
COPY native native
COPY src src
COPY bin bin
RUN make -C bpf \
 && npx node-gyp rebuild --nodedir=/usr/local \
 && npx tsc -p tsconfig.build.json \
 && npm prune --omit=dev

FROM ${NODE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libelf1 zlib1g \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kerntap
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/bin bin
COPY --from=build /src/dist/src dist/src
COPY proto proto
COPY --from=build /src/bpf/out/*.bpf.o bpf/out/
COPY --from=build /src/build/Release/kerntap_native.node build/Release/
# uid 0, but with only CAP_BPF and CAP_PERFMON granted by the runtime
# (docker-compose.yml, deploy/kubernetes/daemonset.yaml: drop ALL, add BPF and
# PERFMON, no-new-privileges). Docker and Kubernetes give added capabilities
# to uid 0 only, so a non-root user would have none; docs/deploy.md has the details.
EXPOSE 10435
ENTRYPOINT ["node", "/opt/kerntap/bin/kerntap.js"]
