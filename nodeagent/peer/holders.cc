#include "nodeagent/peer/holders.h"

#include <algorithm>
#include <utility>

#include "consistency/bytes.h"
#include "consistency/digest.h"

namespace onebox {

namespace {

uint64_t RendezvousWeight(std::string_view path, std::string_view node_id) {
  std::string input;
  input.reserve(path.size() + 1 + node_id.size());
  input.append(path).push_back('\0');
  input.append(node_id);
  return ReadBE64(Sha256(input));
}

template <typename T, typename IdOf>
std::vector<T> KeepHeaviest(std::string_view path, std::vector<T> candidates, size_t n, IdOf id) {
  std::vector<std::pair<uint64_t, T>> weighed;
  weighed.reserve(candidates.size());
  for (T& c : candidates) weighed.emplace_back(RendezvousWeight(path, id(c)), std::move(c));
  std::sort(weighed.begin(), weighed.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  if (weighed.size() > n) weighed.resize(n);
  std::vector<T> out;
  out.reserve(weighed.size());
  for (auto& [weight, c] : weighed) out.push_back(std::move(c));
  return out;
}

}  // namespace

std::vector<PeerAddress> HeaviestFor(std::string_view path, std::vector<PeerAddress> candidates, size_t n) {
  return KeepHeaviest(path, std::move(candidates), n, [](const PeerAddress& p) -> const std::string& { return p.node_id; });
}

std::vector<std::string> HeaviestFor(std::string_view path, std::vector<std::string> node_ids, size_t n) {
  return KeepHeaviest(path, std::move(node_ids), n, [](const std::string& id) -> const std::string& { return id; });
}

}  // namespace onebox
