// Heartbeat datagrams sealed by their sender. Membership sends its beats
// over UDP (peer/beat_socket.h), where anyone who reaches the port could
// write one; a beat counts only when it carries an HMAC-SHA256 under its
// sender agent's beat key, a random key each agent makes at its start and
// tells the others only over the authenticated Gossip call (Member.beat_key).
// A datagram: kBeatMagic, the sender's node id (16 hex digits), the payload
// (a v1::Beat), the tag over all of that.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace onebox {

constexpr std::string_view kBeatMagic = "obeat1";
constexpr size_t kBeatKeyBytes = 32;

// A new random beat key; empty if the system's random source failed.
std::string NewBeatKey();
std::string SealBeat(std::string_view sender_id, std::string_view key, std::string_view payload);
// The node id a datagram names as its sender (nothing checked yet: find its
// key with it); nullopt for what is not a beat at all.
std::optional<std::string_view> BeatSender(std::string_view datagram);
// The payload, if the datagram's tag is right under key.
std::optional<std::string_view> OpenBeat(std::string_view datagram, std::string_view key);

}  // namespace onebox
