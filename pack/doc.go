// Package pack turns a directory tree into CARs ready for deals: UnixFS
// DAGs in the unixfs-v1-2025 profile, grouped into size-bounded CARs that
// describe themselves, a tree CAR whose root is the whole tree, and a
// manifest that says where every file is (docs/packing.md).
//
// # Rules
//
//   - Deterministic: the walk is sorted by path, every CID follows the
//     profile, and the plan (which files and parts go into which CAR)
//     follows from the walk and the Settings alone, so the same tree and
//     settings give the same CARs byte for byte on every run and machine.
//   - The plan is recorded before any CAR is built, and each finished CAR
//     is recorded before it is renamed into the output directory: a
//     pack run again after a kill builds only what is not recorded, to the
//     same bytes and names. A different tree or other settings into the
//     same output directory are refused.
//   - Every source byte is read once: a CAR is written with a placeholder
//     root, its root set when its blocks are written, then the CAR (not
//     the source) is read once more for its CAR CID, md5 and piece.
//   - A file that cannot be read or changes while it is read is left out
//     and reported, never fatal; a CAR that held some of its blocks is
//     built again without it.
//   - BuildCAR is the one way a CAR job is built, by this process's
//     goroutines or by a pack worker on another machine.
package pack
