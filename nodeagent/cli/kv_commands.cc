#include <iostream>
#include <iterator>

#include <fmt/format.h>

#include "consistency/hlc.h"
#include "nodeagent/api/access.h"
#include "nodeagent/cli/commands.h"
#include "onebox/v1/store.grpc.pb.h"

namespace onebox {

namespace {

// Keys are protobuf strings: UTF-8 (RFC 3629: no overlongs, surrogates or values past U+10FFFF).
bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

// A key or prefix is checked before it is sent.
Status CheckKeyText(std::string_view what, const std::string& key) {
  if (IsUtf8(key)) return Status::Ok();
  return Status::InvalidArgument(fmt::format("{} must be valid UTF-8", what));
}

Result<v1::WriteLevel> ParseWriteLevel(const std::string& s) {
  if (s == "one") return v1::WRITE_LEVEL_ONE;
  if (s == "quorum") return v1::WRITE_LEVEL_QUORUM;
  if (s == "all") return v1::WRITE_LEVEL_ALL;
  return Status::InvalidArgument("level must be one, quorum or all");
}

}  // namespace

int CmdKvGet(const ClientOptions& o, const std::string& key, const std::string& level) {
  if (Status k = CheckKeyText("key", key); !k.ok()) return Fail(k);
  Client c(o);
  if (Status s = c.Connect(); !s.ok()) return Fail(s);
  v1::GetRequest q;
  q.set_key(key);
  q.set_level(level == "quorum" ? v1::READ_LEVEL_QUORUM : v1::READ_LEVEL_LOCAL);
  v1::GetResponse r;
  grpc::Status s = v1::Store::Stub(c.channel()).Get(c.Context().get(), q, &r);
  if (!s.ok()) return Fail(c.RpcError(s));
  if (c.json()) {
    c.PrintJson(r);
    return r.found() ? kExitOk : kExitError;
  }
  if (!r.found()) return Fail(Status::NotFound(fmt::format("key '{}' not found", key)));
  std::cout << r.value() << "\n";
  return kExitOk;
}

int CmdKvPut(const ClientOptions& o, const KvPutOptions& p) {
  Result<v1::WriteLevel> level = ParseWriteLevel(p.level);
  if (!level.ok()) return Fail(level.status());
  if (Status k = CheckKeyText("key", p.key); !k.ok()) return Fail(k);
  v1::PutRequest q;
  q.set_key(p.key);
  if (p.from_stdin) {
    q.set_value(std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()));
  } else {
    q.set_value(p.value);
  }
  q.set_level(*level);
  q.set_sync(p.sync);
  Client c(o);
  v1::PutResponse r;
  if (Status s = c.CallAsCaller(std::string(api_method::Store_Put::kName), q, &r); !s.ok()) return Fail(s);
  if (c.json()) c.PrintJson(r);
  else std::cout << fmt::format("OK {} @ {}\n", p.key, hlc::Format(r.version().hlc()));
  return kExitOk;
}

int CmdKvDel(const ClientOptions& o, const std::string& key, bool sync, const std::string& level_name) {
  Result<v1::WriteLevel> level = ParseWriteLevel(level_name);
  if (!level.ok()) return Fail(level.status());
  if (Status k = CheckKeyText("key", key); !k.ok()) return Fail(k);
  Client c(o);
  v1::DeleteRequest q;
  q.set_key(key);
  q.set_sync(sync);
  q.set_level(*level);
  v1::DeleteResponse r;
  if (Status s = c.CallAsCaller(std::string(api_method::Store_Delete::kName), q, &r); !s.ok()) return Fail(s);
  if (c.json()) c.PrintJson(r);
  else std::cout << (r.existed() ? "deleted " : "not present (tombstone written) ") << key << "\n";
  return kExitOk;
}

int CmdKvScan(const ClientOptions& o, const KvScanOptions& so) {
  if (Status k = CheckKeyText("prefix", so.prefix); !k.ok()) return Fail(k);
  Client c(o);
  if (Status s = c.Connect(); !s.ok()) return Fail(s);
  v1::Store::Stub store(c.channel());
  v1::ScanResponse all;
  std::string start_after;
  // Page through the agent's answers until `limit` entries (0: all) are in.
  for (;;) {
    v1::ScanRequest q;
    q.set_prefix(so.prefix);
    q.set_start_after(start_after);
    q.set_keys_only(so.keys_only);
    uint32_t want = so.limit == 0 ? 1000 : std::min<uint32_t>(1000, so.limit - all.entries_size());
    q.set_limit(want);
    v1::ScanResponse r;
    grpc::Status s = store.Scan(c.Context().get(), q, &r);
    if (!s.ok()) return Fail(c.RpcError(s));
    for (auto& e : *r.mutable_entries()) *all.add_entries() = std::move(e);
    bool full = so.limit != 0 && static_cast<uint32_t>(all.entries_size()) >= so.limit;
    if (!r.more() || full) {
      all.set_more(r.more());
      break;
    }
    start_after = all.entries(all.entries_size() - 1).key();
  }
  if (c.json()) {
    c.PrintJson(all);
    return kExitOk;
  }
  for (const v1::Entry& e : all.entries()) {
    if (so.keys_only) std::cout << e.key() << "\n";
    else std::cout << e.key() << "\t" << e.value() << "\n";
  }
  if (all.more()) std::cerr << "onebox: more keys follow (raise --limit, or --limit 0 for all)\n";
  return kExitOk;
}

}  // namespace onebox
