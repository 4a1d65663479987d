/* Argument checking and error objects shared by the addon's calls. */
#include "common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

napi_value ambit_type_error(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_type_error(env, "ERR_INVALID_ARG", msg);
  return NULL;
}

napi_value ambit_errno_error(napi_env env, int err, const char *syscall, const char *option) {
  char msg[256];
  if (option != NULL)
    snprintf(msg, sizeof msg, "%s(%s): %s", syscall, option, strerror(err));
  else
    snprintf(msg, sizeof msg, "%s: %s", syscall, strerror(err));
  napi_value m, e, v;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_int32(env, err, &v);
  napi_set_named_property(env, e, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, e, "syscall", v);
  if (option != NULL) {
    napi_create_string_utf8(env, option, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, e, "option", v);
  }
  return e;
}

napi_value ambit_throw_errno(napi_env env, int err, const char *syscall, const char *option) {
  napi_throw(env, ambit_errno_error(env, err, syscall, option));
  return NULL;
}

static bool get_prop(napi_env env, napi_value obj, const char *name, napi_value *v, napi_valuetype *t) {
  if (napi_get_named_property(env, obj, name, v) != napi_ok) {
    ambit_type_error(env, "could not read option '%s'", name);
    return false;
  }
  napi_typeof(env, *v, t);
  return true;
}

bool ambit_arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t size) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_string) {
    ambit_type_error(env, "'%s' must be a string", name);
    return false;
  }
  size_t len = 0;
  napi_get_value_string_utf8(env, v, NULL, 0, &len);
  if (len + 1 > size) {
    ambit_type_error(env, "'%s' is too long (%zu bytes, max %zu)", name, len, size - 1);
    return false;
  }
  napi_get_value_string_utf8(env, v, buf, size, &len);
  if (strlen(buf) != len) {
    ambit_type_error(env, "'%s' must not contain NUL characters", name);
    return false;
  }
  return true;
}

bool ambit_arg_int(napi_env env, napi_value v, const char *name, double min, double max, int64_t *out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  double d = 0;
  if (t == napi_number) napi_get_value_double(env, v, &d);
  if (t != napi_number || !isfinite(d) || floor(d) != d || d < min || d > max) {
    ambit_type_error(env, "'%s' must be an integer in %.0f..%.0f", name, min, max);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

bool ambit_opt_string(napi_env env, napi_value obj, const char *name, char *buf, size_t size,
                      bool required, bool *present) {
  napi_value v;
  napi_valuetype t;
  if (present != NULL) *present = false;
  buf[0] = '\0';
  if (!get_prop(env, obj, name, &v, &t)) return false;
  if (t == napi_undefined || t == napi_null) {
    if (required) {
      ambit_type_error(env, "option '%s' is required", name);
      return false;
    }
    return true;
  }
  if (!ambit_arg_string(env, v, name, buf, size)) return false;
  if (present != NULL) *present = true;
  return true;
}

bool ambit_opt_int(napi_env env, napi_value obj, const char *name, double min, double max,
                   bool required, int64_t *out, bool *present) {
  napi_value v;
  napi_valuetype t;
  if (present != NULL) *present = false;
  if (!get_prop(env, obj, name, &v, &t)) return false;
  if (t == napi_undefined || t == napi_null) {
    if (required) {
      ambit_type_error(env, "option '%s' is required", name);
      return false;
    }
    return true;
  }
  if (!ambit_arg_int(env, v, name, min, max, out)) return false;
  if (present != NULL) *present = true;
  return true;
}

bool ambit_opt_bool(napi_env env, napi_value obj, const char *name, bool *out) {
  napi_value v;
  napi_valuetype t;
  if (!get_prop(env, obj, name, &v, &t)) return false;
  if (t == napi_undefined || t == napi_null) return true;
  if (t != napi_boolean) {
    ambit_type_error(env, "option '%s' must be a boolean", name);
    return false;
  }
  napi_get_value_bool(env, v, out);
  return true;
}

napi_value ambit_int(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

napi_value ambit_undefined(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}
