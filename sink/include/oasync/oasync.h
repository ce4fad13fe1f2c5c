/* The oasync C ABI: the sink for callers outside C++ (Rust FFI, a BEAM NIF,
 * Python ctypes).
 *
 * Requests and responses are protobuf messages of
 * proto/openagents/sync/v1/sink.proto: the request is an encoded WriteBatch,
 * the response an encoded BatchResult. Every buffer that oasync returns is
 * owned by the caller and released with oasync_free. Nothing here throws;
 * nothing keeps a pointer to caller memory after returning.
 *
 * A handle is not thread-safe: use one per thread. */
#ifndef OASYNC_OASYNC_H
#define OASYNC_OASYNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version: bumped only when a signature below changes. */
#define OASYNC_ABI_VERSION 1

typedef struct oasync_sink oasync_sink;

/* Returns OASYNC_ABI_VERSION of the loaded library. */
int oasync_abi_version(void);

/* Opens a sink on its own connection. On success returns a handle and sets
 * *error to NULL. On failure returns NULL and sets *error to a NUL-terminated
 * message that the caller frees with oasync_free. `error` may be NULL. */
oasync_sink* oasync_sink_open(const char* conninfo, char** error);

/* Applies one encoded WriteBatch in one transaction and sets *response to an
 * encoded BatchResult of *response_len bytes (free it with oasync_free).
 * Returns 0 when a BatchResult was produced; its `error` field says whether
 * the batch as a whole failed (nothing committed) and whether a retry may
 * succeed. Returns -1 only for invalid arguments (NULL handle or out
 * pointers); then *response is left untouched. A request that does not decode
 * gets a BatchResult with error code "malformed_frame". */
int oasync_sink_apply(oasync_sink* sink, const uint8_t* request, size_t request_len,
                      uint8_t** response, size_t* response_len);

/* Closes the connection and frees the handle. NULL is ignored. */
void oasync_sink_close(oasync_sink* sink);

/* Frees a buffer or message returned by this library. NULL is ignored. */
void oasync_free(void* buffer);

#ifdef __cplusplus
}
#endif

#endif /* OASYNC_OASYNC_H */
