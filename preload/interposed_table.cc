// Writes the shim's export map from preload/interposed.h (a build tool, not
// part of the shim): interposed_table exports OUT writes the listed
// functions, and nothing else, as a linker version script.
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include "preload/interposed.h"

namespace {

using onebox::shim::kInterposed;

std::string ExportMap() {
  std::string out = "/* Generated from preload/interposed.h: the interposed functions, nothing else. */\n{\n  global:\n";
  for (const auto& e : kInterposed) out += "    " + std::string(e.function) + ";\n";
  return out + "  local: *;\n};\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode == "exports" && argc == 3) {
    std::ofstream out(argv[2]);
    out << ExportMap();
    return out ? 0 : 1;
  }
  std::cerr << "usage: interposed_table exports OUT\n";
  return 2;
}
