// What the agent tells the service manager that started it, by systemd's
// notify protocol (sd_notify(3), from libsystemd): READY=1 once it serves
// (a unit of Type=notify waits for it), STOPPING=1 as it begins to stop,
// and WATCHDOG=1 while its gossip loop turns (the unit's WatchdogSec=: a
// loop stuck for that long gets the agent restarted). Without NOTIFY_SOCKET
// in the environment (not started by systemd) each call does nothing.
#pragma once

#include <string_view>

namespace onebox::service_manager {

// The agent serves (gRPC health SERVING, the shim socket listening); status
// is the one line `systemctl status` shows.
void Ready(std::string_view status);
// The agent begins a clean shutdown.
void Stopping();
// The loop that proves the agent alive has turned once more: a WATCHDOG=1
// when the watchdog is on, at most every quarter of its interval.
void Alive();

}  // namespace onebox::service_manager
