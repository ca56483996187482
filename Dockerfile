# sockmesh container image: a static binary (CGO_ENABLED=0; ZeroMQ is the pure-Go zmq4) on
# distroless/static, running as an unprivileged user. No HEALTHCHECK: orchestrators probe
# /healthz and /readyz on the admin port (see deploy/kubernetes/).
#
#   docker build -t sockmesh:dev --build-arg REVISION=$(git rev-parse --short HEAD) .
#
# Ports: 8000 clients (WebSocket), 8001 admin (/healthz /readyz /metrics /cluster /drain /ui),
# 8002 mesh (ZeroMQ, node to node), 8003 gossip (Serf, TCP and UDP).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.revision=${REVISION}" \
      -o /out/sockmesh ./cmd/sockmesh \
 && /out/sockmesh serve --version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sockmesh /sockmesh
USER 65532:65532
# Listen on every interface inside the container; peers and clients reach the node on the
# address given by --advertise-host (SOCKMESH_ADVERTISE_HOST, e.g. the pod IP).
ENV SOCKMESH_WS_ADDR=0.0.0.0:8000 \
    SOCKMESH_ADMIN_ADDR=0.0.0.0:8001 \
    SOCKMESH_MESH_ADDR=0.0.0.0:8002 \
    SOCKMESH_GOSSIP_ADDR=0.0.0.0:8003 \
    SOCKMESH_LOG_FORMAT=json
EXPOSE 8000/tcp 8001/tcp 8002/tcp 8003/tcp 8003/udp
ENTRYPOINT ["/sockmesh"]
CMD ["serve"]
