package pack

import (
	"errors"
	"fmt"
	"path"

	"github.com/ferry-dev/ferry/piece"
)

// Profile names the UnixFS profile every CID follows.
const Profile = "unixfs-v1-2025"

// Defaults of Settings.
const (
	DefaultCarSize   = 31 << 30
	DefaultShardSize = 1 << 30
	// carMargin is what a CAR may hold beyond its target's estimate, kept
	// free below a 32 GiB piece's payload.
	carMargin = 64 << 20
)

// MaxCarSize is the largest CAR target: a CAR of it still fits the
// payload of a 32 GiB piece, the largest a deal takes.
var MaxCarSize = piece.Unpadded(32<<30) - carMargin

// Settings decide a pack's output; they are recorded with its plan and in
// its manifest.
type Settings struct {
	Profile       string   `json:"profile"`
	ChunkSize     int      `json:"chunk_size"`
	MaxLinks      int      `json:"max_links"`
	HAMTThreshold int      `json:"hamt_threshold"`
	HAMTFanout    int      `json:"hamt_fanout"`
	CarSize       uint64   `json:"car_size"`
	ShardSize     uint64   `json:"shard_size"`
	Hidden        bool     `json:"hidden"`
	Exclude       []string `json:"exclude"`
	SHA256        bool     `json:"sha256"`
}

// NewSettings returns the settings of a pack with these sizes and
// filters, the profile's constants filled in. A shard size is rounded
// down to whole chunks.
func NewSettings(carSize, shardSize uint64, hidden bool, exclude []string, sha bool) (Settings, error) {
	if exclude == nil {
		exclude = []string{}
	}
	s := Settings{
		Profile: Profile, ChunkSize: ChunkSize, MaxLinks: MaxLinks,
		HAMTThreshold: HAMTThreshold, HAMTFanout: HAMTFanout,
		CarSize: carSize, ShardSize: shardSize / ChunkSize * ChunkSize,
		Hidden: hidden, Exclude: exclude, SHA256: sha,
	}
	return s, s.Validate()
}

// Validate says what is wrong with s, if anything.
func (s Settings) Validate() error {
	switch {
	case s.Profile != Profile || s.ChunkSize != ChunkSize || s.MaxLinks != MaxLinks ||
		s.HAMTThreshold != HAMTThreshold || s.HAMTFanout != HAMTFanout:
		return fmt.Errorf("profile %q (chunk %d, links %d, HAMT %d/%d): this ferry packs %s only",
			s.Profile, s.ChunkSize, s.MaxLinks, s.HAMTThreshold, s.HAMTFanout, Profile)
	case s.CarSize < 2*ChunkSize:
		return fmt.Errorf("car size %d: want at least %d bytes", s.CarSize, 2*ChunkSize)
	case s.CarSize > MaxCarSize:
		return fmt.Errorf("car size %d: a CAR must fit a 32 GiB piece with room to spare, want at most %d bytes", s.CarSize, MaxCarSize)
	case s.ShardSize < ChunkSize:
		return fmt.Errorf("shard size %d: want at least one %d-byte chunk", s.ShardSize, ChunkSize)
	case s.ShardSize > s.CarSize-ChunkSize:
		return fmt.Errorf("shard size %d: want it below the car size %d by a chunk at least", s.ShardSize, s.CarSize)
	}
	for _, g := range s.Exclude {
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("exclude %q: %w", g, err)
		}
	}
	return nil
}

// ErrOtherPack is a pack into an output directory that holds the plan of
// another tree or other settings.
var ErrOtherPack = errors.New("the output directory holds another pack")
