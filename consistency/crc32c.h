// RocksDB's CRC32C in hardware. Debian builds librocksdb portable, without
// its SSE4.2 path, so every blob record (each chunk written to a blob file
// at a flush) and every write-ahead log record is checksummed by a
// table-driven loop: about 1 GB/s, nearly half of each flush's CPU.
// crc32c.cc defines rocksdb::crc32c::Extend, the function every CRC32C of
// the library goes through (a call through its PLT), in the executable:
// ELF interposition, as the shim does for libc, so the library's calls come
// here. On a CPU with SSE4.2 it runs the crc32 instruction; elsewhere it
// hands over to the library's own (the next definition, dlsym RTLD_NEXT;
// without one the process stops with a message).
// The same polynomial and the same pre- and post-inversion: files written
// by either read back with the other.
#pragma once

#include <cstdint>

namespace onebox {

// Whether RocksDB's CRC32C runs the crc32 instruction in this process.
bool Crc32cInHardware();
// How many CRC32Cs went through the override so far: RocksDB's own calls
// (a write-ahead log record, a blob record) count, which shows they come here.
uint64_t Crc32cCalls();

}  // namespace onebox
