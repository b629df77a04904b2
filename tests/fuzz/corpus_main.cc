// The fuzz harnesses' main where libFuzzer is not linked (the gcc build and
// CI): runs the harness once on every file of the corpus directories given,
// so each input a fuzzer ever kept, or a crash it found, is replayed by
// ctest. Fails when a directory holds no input (a corpus left behind).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  size_t inputs = 0;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(argv[i], ec))
      if (entry.is_regular_file()) files.push_back(entry.path());
    if (ec || files.empty()) {
      fprintf(stderr, "%s: no inputs (%s)\n", argv[i], ec ? ec.message().c_str() : "empty");
      return 1;
    }
    for (const auto& file : files) {
      fprintf(stderr, "%s\n", file.c_str());  // which one, when it fails
      std::ifstream in(file, std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++inputs;
    }
  }
  printf("%zu inputs replayed\n", inputs);
  return 0;
}
