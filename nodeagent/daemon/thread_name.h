// Names an agent thread as `top -H`, gdb and /proc/PID/task/*/comm show it
// (the kernel keeps 15 characters): each long-lived thread says which loop it is.
#pragma once

#include <pthread.h>

#include <string>
#include <thread>

namespace onebox {

inline void NameThread(std::thread& thread, const std::string& name) {
  pthread_setname_np(thread.native_handle(), name.substr(0, 15).c_str());
}

}  // namespace onebox
