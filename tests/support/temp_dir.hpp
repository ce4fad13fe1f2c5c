// A fresh temporary folder per test, removed with everything in it.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace oasync::test {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/oasync-test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // Writes `text` to the file `name` in the folder and returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    const std::string file = path_ + "/" + name;
    std::ofstream(file) << text;
    return file;
  }

 private:
  std::string path_;
};

// One file in a folder of its own: `path` is where it is.
struct TempFile {
  explicit TempFile(const std::string& text, const std::string& name = "oasync.yaml")
      : path(dir.write(name, text)) {}
  TempDir dir;
  std::string path;
};

}  // namespace oasync::test
