package main

import (
	"cmp"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multibase"
	"github.com/multiformats/go-multihash"
)

// Config shapes a synthetic multi-tenant workload. Every draw comes from
// one generator seeded by Seed, in a fixed order, so the same Config gives
// the same events, byte for byte.
type Config struct {
	Seed uint64
	// Start and Period are the simulated time the uploads arrive in.
	Start  time.Time
	Period time.Duration
	// Tick is the simulated time between two ticks (the fold's clock).
	Tick time.Duration
	// Small and Big are how many tenants (accounts) of each kind.
	Small, Big int
	// A small tenant uploads a total over the period drawn log-uniformly
	// in [SmallMin, SmallMax]: SmallMax is a free plan's quota (5 GB).
	SmallMin, SmallMax uint64
	// A big tenant's total is log-uniform in [BigMin, BigMax] (TBs).
	BigMin, BigMax uint64
	// ShardMax is the largest CAR: an upload is cut into shards of at
	// most this (a storage client's shard size).
	ShardMax uint64
	// PieceLater is the share of CARs that arrive without a piece CID: a
	// car.piece follows 1 to 15 simulated minutes later.
	PieceLater float64
}

// DefaultConfig is the workload of docs/policies.md's example: four
// simulated weeks, a tick a minute, 2,000 small tenants of 5 MB to 5 GB
// and 4 big ones of 1 to 4 TB.
func DefaultConfig() Config {
	return Config{
		Seed: 1, Start: time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC), Period: 28 * 24 * time.Hour, Tick: time.Minute,
		Small: 2000, Big: 4,
		SmallMin: 5e6, SmallMax: 5e9, BigMin: 1e12, BigMax: 4e12,
		ShardMax: 127 << 20, PieceLater: 0.1,
	}
}

// Upload sizes by kind of tenant, log-uniform: a small tenant's files are
// photos to videos, a big tenant's are datasets.
const (
	smallUploadMin, smallUploadMax = 64 << 10, 512 << 20
	bigUploadMin, bigUploadMax     = 16 << 20, 8 << 30
	// minShard keeps the last upload of a tenant's total from being a
	// CAR of a few bytes.
	minShard = 1 << 10
)

// Source is a car.replicated's source: who uploaded the CAR.
type Source struct {
	Account string `json:"account"`
	Space   string `json:"space"`
	Upload  string `json:"upload"`
}

// Tenant is one account and what it uploaded over the period.
type Tenant struct {
	Account string
	Big     bool
	Spaces  []string
	// Total is the bytes of its CARs; Uploads and CARs count them.
	Total         uint64
	Uploads, CARs int
}

// Workload is a generated workload: its tenants, and its inputs in the
// order they enter the log.
type Workload struct {
	Config  Config
	Tenants []Tenant
	Events  []events.Event
	// CARs and Ticks count the events of each kind; Pieces the car.piece.
	CARs, Ticks, Pieces int
}

// arrival is an input due at a simulated time; n orders equal times by
// generation.
type arrival struct {
	at time.Time
	n  int
	ev events.Event
}

// Generate makes the workload of c.
func Generate(c Config) (*Workload, error) {
	if c.Period <= 0 || c.Tick <= 0 || c.ShardMax < minShard || c.SmallMin == 0 || c.SmallMin > c.SmallMax || c.BigMin == 0 || c.BigMin > c.BigMax {
		return nil, fmt.Errorf("tenants: bad config %+v", c)
	}
	g := &generator{c: c, rng: rand.New(rand.NewPCG(c.Seed, 0x7e4a47)), w: &Workload{Config: c}}
	for i := range c.Big {
		g.tenant(fmt.Sprintf("did:mailto:bigco%d.example:ops", i), true)
	}
	for i := range c.Small {
		g.tenant(fmt.Sprintf("did:mailto:example.org:user%05d", i), false)
	}
	g.merge()
	return g.w, nil
}

type generator struct {
	c        Config
	rng      *rand.Rand
	w        *Workload
	arrivals []arrival
}

// logUniform draws from [lo, hi] with a uniform logarithm: as many tenants
// between 5 and 50 MB as between 500 MB and 5 GB.
func (g *generator) logUniform(lo, hi uint64) uint64 {
	l, h := math.Log(float64(lo)), math.Log(float64(hi))
	return uint64(math.Exp(l + g.rng.Float64()*(h-l)))
}

// offset draws a time in [from, from+span).
func (g *generator) offset(from time.Time, span time.Duration) time.Time {
	return from.Add(time.Duration(g.rng.Int64N(int64(max(span, 1)))))
}

// tenant draws an account's spaces, its total and its uploads. A big
// tenant uploads all along the period; a small one in a window of an hour
// to two weeks somewhere in it (people try a service, then stop).
func (g *generator) tenant(account string, big bool) {
	c := g.c
	t := Tenant{Account: account, Big: big}
	nSpaces, total, upMin, upMax := 1+g.rng.IntN(3), g.logUniform(c.SmallMin, c.SmallMax), uint64(smallUploadMin), uint64(smallUploadMax)
	from, span := c.Start, c.Period
	if big {
		nSpaces, total, upMin, upMax = 2+g.rng.IntN(7), g.logUniform(c.BigMin, c.BigMax), bigUploadMin, bigUploadMax
	} else {
		span = time.Duration(g.logUniform(uint64(time.Hour), uint64(14*24*time.Hour)))
		from = g.offset(c.Start, c.Period)
		span = min(span, c.Start.Add(c.Period).Sub(from))
	}
	for s := range nSpaces {
		key, _ := multibase.Encode(multibase.Base58BTC, digest(c.Seed, account, "space", s)) // "z…"
		t.Spaces = append(t.Spaces, "did:key:z6Mk"+key[1:41])
	}
	for left := total; left > 0; {
		size := min(g.logUniform(upMin, upMax), left)
		if left-size < minShard { // no crumb of a few bytes left over
			size = left
		}
		left -= size
		g.upload(&t, size, g.offset(from, span), t.Spaces[g.rng.IntN(len(t.Spaces))])
	}
	g.w.Tenants = append(g.w.Tenants, t)
}

// upload cuts size bytes into shards of at most ShardMax, equal but for
// the last, arriving a few seconds apart from at.
func (g *generator) upload(t *Tenant, size uint64, at time.Time, space string) {
	c := g.c
	root := cid.NewCidV1(cid.DagProtobuf, mh(digest(c.Seed, t.Account, "upload", t.Uploads))).String()
	n := (size + c.ShardMax - 1) / c.ShardMax
	for k := range n {
		shard := min(c.ShardMax, size-k*c.ShardMax)
		car := cid.NewCidV1(events.CodecCAR, mh(digest(c.Seed, t.Account, "car", t.CARs))).String()
		src, _ := json.Marshal(Source{Account: t.Account, Space: space, Upload: root})
		sum := md5.Sum([]byte(car))
		ev := &events.CarReplicated{Car: car, Size: shard, MD5: hex.EncodeToString(sum[:]),
			URLs:         []string{"https://carpark.example/" + car + "/" + car + ".car"},
			ReplicatedAt: at.UTC().Format(time.RFC3339), Source: src}
		p := fakePiece(digest(c.Seed, car, "piece", 0), shard)
		if g.rng.Float64() < c.PieceLater {
			later := g.offset(at.Add(time.Minute), 14*time.Minute)
			g.add(later, &events.CarPiece{Car: car, Piece: p.MustV2().String(), PieceSize: p.Padded})
			g.w.Pieces++
		} else {
			ev.Piece = p.MustV2().String()
		}
		g.add(at, ev)
		t.Total += shard
		t.CARs++
		g.w.CARs++
		at = at.Add(time.Duration(2+g.rng.IntN(28)) * time.Second)
	}
	t.Uploads++
}

func (g *generator) add(at time.Time, ev events.Event) {
	g.arrivals = append(g.arrivals, arrival{at: at, n: len(g.arrivals), ev: ev})
}

// merge puts the uploads in time order and a tick at every Tick from
// Start to the end of the period: an input due at t follows the tick at
// or before t. Inputs due after the period (a late piece) follow the
// last tick.
func (g *generator) merge() {
	slices.SortFunc(g.arrivals, func(a, b arrival) int {
		return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.n, b.n))
	})
	end := g.c.Start.Add(g.c.Period)
	i := 0
	for tick := g.c.Start; !tick.After(end); tick = tick.Add(g.c.Tick) {
		g.w.Events = append(g.w.Events, &events.Tick{Time: tick})
		g.w.Ticks++
		for ; i < len(g.arrivals) && g.arrivals[i].at.Before(tick.Add(g.c.Tick)); i++ {
			g.w.Events = append(g.w.Events, g.arrivals[i].ev)
		}
	}
	for ; i < len(g.arrivals); i++ {
		g.w.Events = append(g.w.Events, g.arrivals[i].ev)
	}
	g.arrivals = nil
}

// digest names one thing of the workload: the same seed and parts give
// the same name, different ones different names.
func digest(seed uint64, name, kind string, n int) []byte {
	h := sha256.New()
	binary.Write(h, binary.BigEndian, seed)
	fmt.Fprintf(h, "%s\x00%s\x00%d", name, kind, n)
	return h.Sum(nil)
}

func mh(d []byte) multihash.Multihash {
	m, err := multihash.Encode(d, multihash.SHA2_256)
	if err != nil {
		panic(err) // a 32-byte digest always encodes
	}
	return m
}

// fakePiece is a piece commitment for a CAR of size bytes whose root is
// d, made valid fr32: the fold needs a piece's size and CID, never its
// bytes, so a synthetic workload does without any.
func fakePiece(d []byte, size uint64) piece.Commitment {
	c := piece.Commitment{Padded: piece.PaddedSize(size), Payload: size}
	copy(c.Root[:], d)
	c.Root[31] &= 0x3f
	return c
}
