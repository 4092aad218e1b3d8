// Package piece is the commitment maths of a piece: its root, its padded
// size and the payload it holds, and the two CID forms that carry them
// (FRC-0069 piece CID v2, and v1 with the padded size beside it).
//
// # Rules
//
//   - A padded size is a power of two, at least 128 (MinPaddedSize); the
//     payload a padded size holds is 127/128 of it (fr32 padding), and a
//     payload of n bytes needs PaddedSize(n).
//   - A v2 CID carries the payload, a v1 CID does not: Parse of a v1 CID
//     needs the padded size (ErrSizeNeeded), and a Commitment without a
//     payload has no v2 CID.
//   - Parse reads canonical base32 text without go-cid's allocations and
//     anything else through go-cid; both read the same commitments
//     (TestCIDTextAgreesWithGoCid).
//
// Computing a commitment from bytes is carcheck's; sizing a deal around
// pieces is frc58's.
package piece
