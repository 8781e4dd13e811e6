/* The `coditect` host ABI for C guests (see coditect-sandbox's crate docs). */
#ifndef CODITECT_H
#define CODITECT_H

#define CODITECT_IMPORT(name) __attribute__((import_module("coditect"), import_name(name)))

enum { CODITECT_TRACE = 0, CODITECT_DEBUG = 1, CODITECT_INFO = 2, CODITECT_WARN = 3, CODITECT_ERROR = 4 };

/* One structured log line. */
CODITECT_IMPORT("log") void coditect_log(int level, const char *message, int len);
/* Progress report: `done` of `total` units. */
CODITECT_IMPORT("progress") void coditect_progress(long long done, long long total);
/* Calls a capability the node granted. Returns the full response length,
 * -1 when not granted, -2 when it failed. */
CODITECT_IMPORT("capability")
long long coditect_capability(const char *name, int name_len, const void *request, int request_len,
                              void *response, int response_cap);
/* Runs export `function` of the module in `module` (wasm or WAT bytes) in a
 * fresh sandboxed instance. Returns 0 and stores the result on success, else a
 * status: 1 invalid module, 2 bad call, 3 trapped, 4 out of fuel, 5 timed out,
 * 6 memory limit, 7 cancelled, -1 not granted. */
CODITECT_IMPORT("run_module")
int coditect_run_module(const void *module, int module_len, const char *function, int function_len,
                        const long long *args, int args_count, long long *result);

#endif
