// Writes what comes from preload/interposed.h (a build tool, not part of the shim):
//   interposed_table exports OUT        the shim's export map: the listed functions, nothing else
//   interposed_table doc DOC [--write]  checks docs/compatibility.md against the list (or rewrites
//                                       its generated table first)
// The page holds two tables. The per-function one, between the markers below,
// is generated: it must equal the rendering of the list. The hand-written one
// (family, functions, semantics) must name each listed function in exactly
// one row, the row of the function's family, and nothing that is not listed.
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "preload/interposed.h"

namespace {

using onebox::shim::kInterposed;
using onebox::shim::Support;

constexpr std::string_view kBegin =
    "<!-- Generated from preload/interposed.h by `cmake --build build --target compat_doc`: edit the list, not this table. -->\n";
constexpr std::string_view kEnd = "<!-- End of the generated table. -->\n";
constexpr std::string_view kFamilyTableHeader = "| family (preload/ file) | functions |";

struct Level {
  Support support;
  std::string_view name, meaning;
};
constexpr Level kLevels[] = {
#define ONEBOX_LEVEL(e, name, meaning) {Support::e, name, meaning},
    ONEBOX_SUPPORT_LEVELS(ONEBOX_LEVEL)
#undef ONEBOX_LEVEL
};

std::string_view LevelName(Support s) {
  for (const Level& l : kLevels)
    if (l.support == s) return l.name;
  return "?";
}

// A table cell: "|" would end it.
std::string Cell(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

std::string ExportMap() {
  std::string out = "/* Generated from preload/interposed.h: the interposed functions, nothing else. */\n{\n  global:\n";
  for (const auto& e : kInterposed) out += "    " + std::string(e.function) + ";\n";
  return out + "  local: *;\n};\n";
}

// The generated part of the page, markers included.
std::string DocTable() {
  std::string out(kBegin);
  out += "\nSupport: what a program can rely on for a cluster path.\n\n";
  for (const Level& l : kLevels) out += "- **" + std::string(l.name) + "**: " + std::string(l.meaning) + "\n";
  out += "\n| function | family (preload/ file) | support | note |\n|---|---|---|---|\n";
  for (const auto& e : kInterposed)
    out += "| `" + std::string(e.function) + "` | `" + std::string(e.family) + ".cc` | " +
           std::string(LevelName(e.support)) + " | " + Cell(e.note) + " |\n";
  return out + "\n" + std::string(kEnd);
}

// The names between backquotes in text.
std::vector<std::string> Quoted(std::string_view text) {
  std::vector<std::string> out;
  for (size_t open = text.find('`'); open != std::string_view::npos; open = text.find('`', open)) {
    size_t close = text.find('`', open + 1);
    if (close == std::string_view::npos) break;
    out.emplace_back(text.substr(open + 1, close - open - 1));
    open = close + 1;
  }
  return out;
}

// Problems of the hand-written table: function -> the families of the rows naming it.
std::vector<std::string> CheckFamilyTable(const std::string& doc) {
  std::vector<std::string> problems;
  size_t at = doc.find(kFamilyTableHeader);
  if (at == std::string::npos) return {"no table starting with \"" + std::string(kFamilyTableHeader) + "\""};
  std::map<std::string, std::vector<std::string>> rows_of;  // function -> families of its rows
  std::istringstream lines(doc.substr(at));
  std::string line;
  std::getline(lines, line);  // the header
  std::getline(lines, line);  // |---|---|
  while (std::getline(lines, line) && line.starts_with("| ")) {
    size_t family_end = line.find(" | ", 2);
    size_t functions_end = line.find(" | ", family_end + 3);
    if (functions_end == std::string::npos) {
      problems.push_back("a row without three cells: " + line);
      continue;
    }
    std::vector<std::string> files = Quoted(std::string_view(line).substr(2, family_end - 2));
    std::string family = files.size() == 1 && files[0].ends_with(".cc") ? files[0].substr(0, files[0].size() - 3) : "";
    if (family.empty()) problems.push_back("a row whose family names no one preload/ file: " + line.substr(0, family_end));
    for (const std::string& f : Quoted(std::string_view(line).substr(family_end + 3, functions_end - family_end - 3)))
      rows_of[f].push_back(family);
  }
  for (const auto& e : kInterposed) {
    auto it = rows_of.find(std::string(e.function));
    std::string name = "`" + std::string(e.function) + "`";
    if (it == rows_of.end()) {
      problems.push_back(name + " is in no row of the family table");
    } else {
      if (it->second.size() > 1) problems.push_back(name + " is in more than one row of the family table");
      for (const std::string& family : it->second)
        if (family != e.family)
          problems.push_back(name + " is in the row of " + family + ".cc, but interposed.h says " +
                             std::string(e.family) + ".cc");
      rows_of.erase(it);
    }
  }
  for (const auto& [name, families] : rows_of)
    problems.push_back("`" + name + "` is in the family table but not in preload/interposed.h");
  return problems;
}

// The first line of have that want does not have at its place.
std::string FirstDifferentLine(const std::string& have, const std::string& want) {
  std::istringstream h(have), w(want);
  std::string hl, wl;
  while (std::getline(h, hl)) {
    if (!std::getline(w, wl) || hl != wl) return hl;
  }
  return "(end of the table)";
}

int Doc(const std::string& path, bool write) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "cannot read " << path << "\n";
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string doc = text.str();
  size_t begin = doc.find(kBegin);
  size_t end = doc.find(kEnd);
  if (begin == std::string::npos || end == std::string::npos || end < begin) {
    std::cerr << path << ": no generated table (its markers are missing)\n";
    return 1;
  }
  std::string now = doc.substr(begin, end + kEnd.size() - begin);
  std::string want = DocTable();
  int status = 0;
  if (now != want) {
    if (write) {
      doc.replace(begin, now.size(), want);
      std::ofstream(path) << doc;
      std::cerr << path << ": generated table rewritten\n";
    } else {
      std::cerr << path << ": the per-function table is not the one preload/interposed.h makes (first difference: \""
                << FirstDifferentLine(now, want) << "\"); run `cmake --build build --target compat_doc`\n";
      status = 1;
    }
  }
  for (const std::string& p : CheckFamilyTable(doc)) {
    std::cerr << path << ": " << p << "\n";
    status = 1;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode == "exports" && argc == 3) {
    std::ofstream out(argv[2]);
    out << ExportMap();
    return out ? 0 : 1;
  }
  if (mode == "doc" && (argc == 3 || (argc == 4 && std::string_view(argv[3]) == "--write")))
    return Doc(argv[2], argc == 4);
  std::cerr << "usage: interposed_table exports OUT | doc DOC [--write]\n";
  return 2;
}
