package testutil

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// CodecCAR is the multicodec of a CAR file CID (bagbaiera…).
const CodecCAR = 0x0202

// CarCID is a deterministic CAR CID for seed n.
func CarCID(n int) cid.Cid {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	mh, _ := multihash.Sum(b[:], multihash.SHA2_256, -1)
	return cid.NewCidV1(CodecCAR, mh)
}

// FakePiece is a deterministic piece commitment for seed n of a payload of
// size bytes: its root is arbitrary (valid fr32), not computed from bytes.
// Fold tests use it where no bytes exist; tests of bytes use real commP.
func FakePiece(n int, size uint64) piece.Commitment {
	sum := sha256.Sum256([]byte(fmt.Sprintf("piece-%d", n)))
	sum[31] &= 0x3f
	return piece.Commitment{Root: sum, Padded: piece.PaddedSize(size), Payload: size}
}

// Replicated is a valid car.replicated for seed n of size bytes; with
// withPiece it carries a FakePiece.
func Replicated(n int, size uint64, withPiece bool) *events.CarReplicated {
	c := CarCID(n)
	sum := md5.Sum([]byte(c.String()))
	e := &events.CarReplicated{
		Car: c.String(), Size: size, MD5: hex.EncodeToString(sum[:]),
		URLs:         []string{"https://carpark.example/" + c.String() + "/" + c.String() + ".car"},
		ReplicatedAt: "2026-11-22T12:00:00Z",
	}
	if withPiece {
		e.Piece = FakePiece(n, size).MustV2().String()
	}
	return e
}

// MustEncode encodes an event or panics.
func MustEncode(ev events.Event) []byte {
	b, err := events.Encode(ev)
	if err != nil {
		panic(err)
	}
	return b
}

// WorkloadT0 is the clock of Workload's first tick, less 30 s.
var WorkloadT0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// WorkloadSize is the size of Workload's CAR i: 1 KiB to 200 KiB.
func WorkloadSize(i int) uint64 { return 1<<10 + uint64(i*7919)%(199<<10+1) }

// Workload is the input log of cars CARs as a storage service and the
// piece workers would send them, in order, to emit, until emit returns
// false: every fifth CAR without its piece, which a car.piece brings
// about fifteen CARs (two minutes) later; a tick every fourth CAR, 30 s
// apart from WorkloadT0; CAR i's car.replicated carries source(i) (none
// when source is nil). The what-if's tests and its 1 M-input benchmark
// (bench/cmd/whatifdata) fold it.
func Workload(cars int, source func(i int) json.RawMessage, emit func(events.Event) bool) {
	var late []int // CARs whose car.piece is due
	clock := WorkloadT0
	for i := range cars {
		withPiece := i%5 != 0
		ev := Replicated(i, WorkloadSize(i), withPiece)
		if source != nil {
			ev.Source = source(i)
		}
		if !emit(ev) {
			return
		}
		if !withPiece {
			late = append(late, i)
		}
		if len(late) > 3 && i%5 == 3 {
			j := late[0]
			late = late[1:]
			p := FakePiece(j, WorkloadSize(j))
			if !emit(&events.CarPiece{Car: CarCID(j).String(), Piece: p.MustV2().String(), PieceSize: p.Padded}) {
				return
			}
		}
		if i%4 == 0 {
			clock = clock.Add(30 * time.Second)
			if !emit(&events.Tick{Time: clock}) {
				return
			}
		}
	}
}

// TenantSource is a CAR's source in the what-if's benchmarks: for CAR i
// a space of ten big tenants for half the CARs, of 2,000 small ones for
// the rest, and one of seven accounts.
func TenantSource(i int) json.RawMessage {
	space := fmt.Sprintf("big-%d", (i/2)%10)
	if i%2 == 1 {
		space = fmt.Sprintf("small-%04d", (i/2)%2000)
	}
	return json.RawMessage(fmt.Sprintf(`{"space":%q,"account":"acct-%d"}`, space, i%7))
}
