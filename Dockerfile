# roost: one static binary on a distroless base, run as an unprivileged user.
#   docker build -t roost .
#   docker run --rm -p 8080:8080 roost dev --http 0.0.0.0:8080     # the local cluster and demo page
#   docker run roost node --join SEED:7946 …                        # the default command is `roost node`
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/roost ./cmd/roost

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/roost /usr/local/bin/roost
# UID 65532 (nonroot): nothing in roost needs root, and it binds no port below 1024.
USER nonroot:nonroot
# Gossip (TCP and UDP), HTTP and WebSocket (nodes; routers use 8080), TCP stream ingest.
EXPOSE 7946/tcp 7946/udp 9000/tcp 9100/tcp 8080/tcp
ENTRYPOINT ["/usr/local/bin/roost"]
CMD ["node"]
