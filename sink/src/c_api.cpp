// The C ABI (oasync/oasync.h) over oasync::Sink. No exception crosses it.
#include "oasync/oasync.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "oasync/wire.hpp"

struct oasync_sink {
  std::unique_ptr<oasync::Sink> sink;
};

namespace {

// Copies `bytes` into a malloc'd buffer the caller frees with oasync_free.
char* copy_out(const std::string& bytes) {
  auto* out = static_cast<char*>(std::malloc(bytes.size() + 1));
  if (out == nullptr) return nullptr;
  std::memcpy(out, bytes.data(), bytes.size());
  out[bytes.size()] = '\0';
  return out;
}

}  // namespace

extern "C" {

int oasync_abi_version(void) {
  return OASYNC_ABI_VERSION;
}

oasync_sink* oasync_sink_open(const char* conninfo, char** error) {
  if (error != nullptr) *error = nullptr;
  try {
    auto handle = std::make_unique<oasync_sink>();
    handle->sink = oasync::Sink::open(conninfo == nullptr ? "" : conninfo);
    return handle.release();
  } catch (const std::exception& e) {
    if (error != nullptr) *error = copy_out(e.what());
  } catch (...) {
    if (error != nullptr) *error = copy_out("unknown error");
  }
  return nullptr;
}

int oasync_sink_apply(oasync_sink* sink, const uint8_t* request, size_t request_len,
                      uint8_t** response, size_t* response_len) {
  if (sink == nullptr || response == nullptr || response_len == nullptr ||
      (request == nullptr && request_len > 0)) {
    return -1;
  }
  std::string encoded;
  try {
    const std::string_view bytes(reinterpret_cast<const char*>(request), request_len);
    // decode_batch throws invalid_input, answered as "malformed_frame".
    encoded = oasync::encode_results(sink->sink->apply(oasync::decode_batch(bytes)));
  } catch (const oasync::Error& e) {
    encoded = oasync::encode_error(e);
  } catch (const std::exception& e) {
    encoded = oasync::encode_error(oasync::Error(oasync::Code::internal, e.what()));
  }
  char* out = copy_out(encoded);
  if (out == nullptr) return -1;
  *response = reinterpret_cast<uint8_t*>(out);
  *response_len = encoded.size();
  return 0;
}

void oasync_sink_close(oasync_sink* sink) {
  delete sink;
}

void oasync_free(void* buffer) {
  std::free(buffer);
}

}  // extern "C"
