package depsprobe

import (
	_ "github.com/filecoin-project/go-data-segment/datasegment"
	_ "github.com/filecoin-project/go-fil-commp-hashhash"
	_ "github.com/ipfs/go-cid"
	_ "github.com/ipld/go-car/v2"
	_ "github.com/ipld/go-car/v2/storage"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "go.etcd.io/bbolt"
)
