// Package ipfstest is real IPFS software in process for tests: a
// blockstore, DAG builders on boxo's UnixFS importer, a Trustless Gateway
// on boxo's gateway package, and a kubo-RPC-shaped dag export, all on
// 127.0.0.1:0, with knobs that make them fail the ways real sources do.
//
// # Rules
//
//   - DAGs come from boxo's importer (balanced layout, its chunker, its
//     HAMT) and go-ipld-prime's dag-cbor codec, never from bytes written
//     by hand, so a test checks ferry against other software.
//   - A DAG knows its blocks as the builder made them (DAG.Blocks), so a
//     test can compare what was fetched with what was imported.
//   - Failures are made on the real parts: a missing block is deleted
//     from the blockstore, a corrupt block is stored under a CID its bytes
//     do not hash to; only what no blockstore can do (stall, an extra
//     block after the CAR, a refused connection) is done on the wire.
//   - Servers listen on loopback only and close with the test (t.Cleanup).
package ipfstest
