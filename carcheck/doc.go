// Package carcheck fetches a CAR file, checks it and computes its piece
// commitment in one pass.
//
// Check makes one streaming pass over a CAR's bytes and returns its piece
// commitment (a piece.Commitment), size, md5, roots and block count, and
// on request its CAR CID; Fetch and FetchAndCheck get those bytes from a
// list of URLs, and Do is the one guarded HTTP request they (and the fetch
// package) make.
//
// # Rules
//
//   - A Result comes only from bytes that passed every check: the CAR
//     header parses (with go-car's rules), every section length is sane,
//     every block hashes to its CID (sha2-256, identity, blake2b, blake3
//     and any hash go-multihash registers), nothing follows the last block,
//     and the size and md5 are as expected when an expectation is given.
//   - The piece commitment covers the bytes exactly as read, wrapper and
//     index included for a CARv2: it is what a storage provider receives.
//   - A CARv2 is checked by its inner CARv1 data payload; its index is
//     required to be present but is not parsed, being derived data.
//   - Bad bytes are an *InvalidError (errors.Is(err, ErrInvalid)), with a
//     kind (ErrTruncated, ErrBlockMismatch, …) and a Reason sentence that
//     names the block and offset. Anything else is a failure to read and
//     may succeed on retry. Callers record the first and retry the second.
//   - Check reads at most MaxSize+1 (or ExpectSize+1) bytes, holds about
//     8 MiB however large the CAR, and allocates nothing per block.
//   - CheckOptions.OnBlock hands each block to a consumer (the fetch
//     package walks the DAG with it) only after the block hashed to its
//     CID, with the stream offset of its bytes; with the hook set Check
//     also holds the current block (at most go-car's 8 MiB section limit)
//     and allocates its CID.
//   - Fetch tries every URL in order until one succeeds, moving on after
//     bad bytes too, since another replica of the same content may be
//     good; FetchError.Invalid tells whether every source was bad (or
//     refused).
//   - Fetch and Do fetch only http(s) URLs, through a urlpolicy.Policy
//     (internal/urlpolicy): no files, no userinfo, no loopback, private
//     or other non-public address, checked on each dialed address and
//     redirect. A refusal is final, like bad bytes.
//   - FetchError.Reason is the text for others to read: sources by index,
//     what was refused or wrong, nothing a source sent, bounded in size.
//
// # Concurrency
//
// Check runs three goroutines over shared read-only chunks: the caller's,
// which reads and parses the CAR and hashes its blocks; one for md5 (and
// the CAR CID's sha2-256 when asked for); one that feeds
// go-fil-commp-hashhash, whose own goroutines hash the tree. A chunk is
// overwritten only after all three have released it. commP costs
// about twice the rest together, so on two cores Check runs at roughly
// 0.7× the speed of commP alone (see bench_test.go).
//
// # Caveats
//
// go-fil-commp-hashhash needs at least 65 bytes (ErrTooSmall) and at most
// 32 GiB × 127/128 of payload, a 64 GiB piece.
package carcheck
