/* Shared helpers of the Ambit native addon: argument checks and errors.
 * Errors reach JS as plain Error objects with `errno` (number), `syscall` and optional `option`;
 * the TypeScript wrapper turns them into AmbitError with a NATIVE_* code. */
#ifndef AMBIT_NATIVE_COMMON_H
#define AMBIT_NATIVE_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

#define AMBIT_MAX_MESSAGE 65536 /* seqpacket message limit, both directions */
#define AMBIT_MAX_FDS 16        /* fds per seqpacket message */

/* Throw a TypeError naming the argument. Always returns NULL. */
napi_value ambit_type_error(napi_env env, const char *fmt, ...);
/* Build (not throw) an Error for a failed syscall: message "<syscall>: <strerror>". */
napi_value ambit_errno_error(napi_env env, int err, const char *syscall, const char *option);
/* Throw the errno error. Always returns NULL. */
napi_value ambit_throw_errno(napi_env env, int err, const char *syscall, const char *option);

/* Read optional/required properties of an options object. Return false with a pending TypeError. */
bool ambit_opt_string(napi_env env, napi_value obj, const char *name, char *buf, size_t size,
                      bool required, bool *present);
bool ambit_opt_int(napi_env env, napi_value obj, const char *name, double min, double max,
                   bool required, int64_t *out, bool *present);
bool ambit_opt_bool(napi_env env, napi_value obj, const char *name, bool *out);

/* Positional argument helpers. */
bool ambit_arg_int(napi_env env, napi_value v, const char *name, double min, double max, int64_t *out);
bool ambit_arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t size);

napi_value ambit_int(napi_env env, int64_t v);
napi_value ambit_undefined(napi_env env);

/* Defined in seqpacket.c */
napi_value ambit_seqpacket_listen(napi_env env, napi_callback_info info);
napi_value ambit_seqpacket_reply(napi_env env, napi_callback_info info);
napi_value ambit_seqpacket_close(napi_env env, napi_callback_info info);
napi_value ambit_seqpacket_request(napi_env env, napi_callback_info info);

#endif
