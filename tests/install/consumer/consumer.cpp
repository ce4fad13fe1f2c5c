// A program that uses an installed liboasync the way a C++ runtime would:
// opens a sink and applies one write. Built by tests/install/install_test.sh
// through pkg-config and through find_package(oasync).
//
//   consumer DATABASE_URL DOC_ID     prints "OUTCOME VERSION WATERMARK"
#include <iostream>

#include <oasync/error.hpp>
#include <oasync/sink.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: consumer DATABASE_URL DOC_ID\n";
    return 2;
  }
  try {
    auto sink = oasync::Sink::open(argv[1]);
    oasync::DocWrite write;
    write.topic = "runtime.run_summaries";
    write.doc_key = std::string("run_summary:") + argv[2];
    write.payload = R"({"installed":true})";
    oasync::Batch batch;
    batch.writes.push_back(write);
    const auto results = sink->apply(batch);
    std::cout << oasync::to_string(results.at(0).outcome) << " " << results.at(0).doc_version << " "
              << results.at(0).watermark << "\n";
    return 0;
  } catch (const oasync::Error& e) {
    std::cerr << "consumer: " << e.what() << "\n";
    return 1;
  }
}
