/* Ambit native addon: TCP sockets created inside another network namespace, socket options
 * Node.js does not expose (SO_MARK, IP_TRANSPARENT, IP_FREEBIND, SO_REUSEPORT), SO_ORIGINAL_DST,
 * and (seqpacket.c) AF_UNIX SOCK_SEQPACKET messaging with SCM_RIGHTS.
 *
 * Namespace switches happen on a libuv pool thread (napi_async_work): setns into the target,
 * create/bind/connect the socket (a socket stays in the netns it was created in), setns back.
 * A pool thread that cannot get back to its namespace aborts the process: it would otherwise
 * silently run later work in the wrong namespace. Non-blocking connects complete on the main
 * loop with uv_poll; no thread ever waits for the network. */
#include "common.h"

#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netfilter_ipv4.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define HOST_MAX (INET6_ADDRSTRLEN + IF_NAMESIZE + 2)

typedef struct {
  napi_env env;
  napi_deferred deferred;
  napi_async_work work;
  bool is_listen;
  /* inputs */
  int netns_fd; /* -1: none */
  char netns_path[PATH_MAX];
  char host[HOST_MAX];
  int port;
  char local_host[HOST_MAX];
  bool has_local_host;
  int local_port;
  bool has_mark;
  uint32_t mark;
  bool transparent, freebind, reuse_port;
  int backlog;
  int timeout_ms;
  /* results */
  int fd;
  bool connected;
  int err;
  const char *syscall;
  const char *option;
  /* connect completion on the main loop */
  uv_poll_t poll;
  uv_timer_t timer;
  int open_handles;
  bool finishing;
} sock_req;

static void req_fail(sock_req *r, int err, const char *syscall, const char *option) {
  r->err = err;
  r->syscall = syscall;
  r->option = option;
}

/* "1.2.3.4", "::1", "fe80::1%eth0" -> sockaddr. Runs inside the target netns (scope names). */
static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  char buf[HOST_MAX];
  memset(ss, 0, sizeof *ss);
  snprintf(buf, sizeof buf, "%s", host);
  char *scope = strchr(buf, '%');
  if (scope != NULL) *scope++ = '\0';
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (scope == NULL && inet_pton(AF_INET, buf, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    return 0;
  }
  if (inet_pton(AF_INET6, buf, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    if (scope != NULL) {
      char *end;
      unsigned long id = strtoul(scope, &end, 10);
      if (*scope == '\0' || *end != '\0') id = if_nametoindex(scope);
      if (id == 0) return ENODEV;
      a6->sin6_scope_id = (uint32_t)id;
    }
    *len = sizeof *a6;
    return 0;
  }
  return EINVAL;
}

static bool set_int(sock_req *r, int level, int name, int value, const char *label) {
  if (setsockopt(r->fd, level, name, &value, sizeof value) == 0) return true;
  req_fail(r, errno, "setsockopt", label);
  return false;
}

/* Create, configure, bind and listen/connect. Runs in the target netns. */
static void make_socket(sock_req *r) {
  struct sockaddr_storage dst, src;
  socklen_t dst_len, src_len;
  int e = parse_addr(r->host, r->port, &dst, &dst_len);
  if (e != 0) return req_fail(r, e, "inet_pton", "host");
  int family = dst.ss_family;
  if (r->has_local_host) {
    e = parse_addr(r->local_host, r->local_port, &src, &src_len);
    if (e != 0) return req_fail(r, e, "inet_pton", "localAddress");
    if (src.ss_family != family) return req_fail(r, EAFNOSUPPORT, "bind", "localAddress family");
  } else if (!r->is_listen && r->local_port != 0) {
    memset(&src, 0, sizeof src);
    src.ss_family = (sa_family_t)family;
    if (family == AF_INET) {
      ((struct sockaddr_in *)&src)->sin_port = htons((uint16_t)r->local_port);
      src_len = sizeof(struct sockaddr_in);
    } else {
      ((struct sockaddr_in6 *)&src)->sin6_port = htons((uint16_t)r->local_port);
      src_len = sizeof(struct sockaddr_in6);
    }
  }
  bool bind_src = !r->is_listen && (r->has_local_host || r->local_port != 0);

  r->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (r->fd < 0) return req_fail(r, errno, "socket", NULL);
  bool ok = true;
  if (ok && r->has_mark) ok = set_int(r, SOL_SOCKET, SO_MARK, (int)r->mark, "SO_MARK");
  if (ok && r->transparent)
    ok = family == AF_INET ? set_int(r, SOL_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT")
                           : set_int(r, SOL_IPV6, IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT");
  if (ok && r->freebind) {
    if (family == AF_INET6) {
      int one = 1;
      /* IPV6_FREEBIND needs Linux >= 4.15; IP_FREEBIND sets the same flag on older kernels. */
      if (setsockopt(r->fd, SOL_IPV6, IPV6_FREEBIND, &one, sizeof one) != 0)
        ok = set_int(r, SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND");
    } else {
      ok = set_int(r, SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND");
    }
  }
  if (ok && r->is_listen) ok = set_int(r, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  if (ok && r->is_listen && r->reuse_port) ok = set_int(r, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
  if (ok && r->is_listen) {
    if (bind(r->fd, (struct sockaddr *)&dst, dst_len) != 0) {
      req_fail(r, errno, "bind", NULL);
      ok = false;
    } else if (listen(r->fd, r->backlog) != 0) {
      req_fail(r, errno, "listen", NULL);
      ok = false;
    }
  } else if (ok) {
    if (bind_src && r->local_port == 0)
      /* Source address only: let connect() pick the port, avoiding ephemeral port exhaustion. */
      (void)setsockopt(r->fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &(int){1}, sizeof(int));
    if (bind_src && bind(r->fd, (struct sockaddr *)&src, src_len) != 0) {
      req_fail(r, errno, "bind", "localAddress");
      ok = false;
    } else if (connect(r->fd, (struct sockaddr *)&dst, dst_len) == 0) {
      r->connected = true;
    } else if (errno != EINPROGRESS) {
      req_fail(r, errno, "connect", NULL);
      ok = false;
    }
  }
  if (!ok) {
    close(r->fd);
    r->fd = -1;
  }
}

static void execute(napi_env env, void *data) {
  (void)env;
  sock_req *r = data;
  if (r->netns_fd < 0 && r->netns_path[0] == '\0') return make_socket(r);
  int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig < 0) return req_fail(r, errno, "open", "/proc/thread-self/ns/net");
  int target = r->netns_fd;
  if (r->netns_path[0] != '\0') {
    target = open(r->netns_path, O_RDONLY | O_CLOEXEC);
    if (target < 0) {
      req_fail(r, errno, "open", "netns");
      close(orig);
      return;
    }
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    req_fail(r, errno, "setns", NULL);
  } else {
    make_socket(r);
    if (setns(orig, CLONE_NEWNET) != 0) abort(); /* never leave a pool thread in a pod netns */
  }
  if (r->netns_path[0] != '\0') close(target);
  close(orig);
}

static void settle(napi_env env, sock_req *r) {
  if (r->err == 0) {
    napi_resolve_deferred(env, r->deferred, ambit_int(env, r->fd));
  } else {
    napi_reject_deferred(env, r->deferred, ambit_errno_error(env, r->err, r->syscall, r->option));
  }
  free(r);
}

static void on_handle_closed(uv_handle_t *h) {
  sock_req *r = h->data;
  if (--r->open_handles > 0) return;
  napi_env env = r->env;
  napi_handle_scope hs;
  napi_callback_scope cs;
  napi_async_context ctx;
  napi_value resource, name;
  napi_open_handle_scope(env, &hs);
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "ambit.connect", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &ctx);
  /* A callback scope so promise reactions run now, not at some later unrelated callback. */
  napi_open_callback_scope(env, resource, ctx, &cs);
  settle(env, r);
  napi_close_callback_scope(env, cs);
  napi_async_destroy(env, ctx);
  napi_close_handle_scope(env, hs);
}

static void finish_connect(sock_req *r, int err) {
  if (r->finishing) return;
  r->finishing = true;
  if (err != 0) {
    req_fail(r, err, "connect", err == ETIMEDOUT ? "timeout" : NULL);
  }
  uv_poll_stop(&r->poll);
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->poll, on_handle_closed);
  uv_close((uv_handle_t *)&r->timer, on_handle_closed);
  /* uv_close on a poll handle drops the fd from epoll synchronously, so the fd may go now. */
  if (err != 0) {
    close(r->fd);
    r->fd = -1;
  }
}

static void on_writable(uv_poll_t *h, int status, int events) {
  (void)events;
  sock_req *r = h->data;
  /* libuv reports POLLERR as UV_EBADF: the real reason (e.g. ECONNREFUSED) is in SO_ERROR. */
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0 && status < 0) err = -status;
  finish_connect(r, err);
}

static void on_timeout(uv_timer_t *t) { finish_connect(t->data, ETIMEDOUT); }

static void complete(napi_env env, napi_status status, void *data) {
  sock_req *r = data;
  napi_delete_async_work(env, r->work);
  if (status != napi_ok && r->err == 0) req_fail(r, ECANCELED, r->is_listen ? "listen" : "connect", NULL);
  if (r->err != 0 || r->is_listen || r->connected) return settle(env, r);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  int e = uv_poll_init(loop, &r->poll, r->fd);
  if (e != 0) {
    close(r->fd);
    req_fail(r, -e, "uv_poll_init", NULL);
    return settle(env, r);
  }
  uv_timer_init(loop, &r->timer);
  r->poll.data = r;
  r->timer.data = r;
  r->open_handles = 2;
  uv_poll_start(&r->poll, UV_WRITABLE, on_writable);
  uv_timer_start(&r->timer, on_timeout, (uint64_t)r->timeout_ms, 0);
}

/* Common option parsing for listenFd/connectFd: (options) -> Promise<fd> */
static napi_value start_socket(napi_env env, napi_callback_info info, bool is_listen) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t != napi_object) return ambit_type_error(env, "options must be an object");
  napi_value o = argv[0];
  sock_req *r = calloc(1, sizeof *r);
  if (r == NULL) return ambit_throw_errno(env, ENOMEM, "calloc", NULL);
  r->env = env;
  r->is_listen = is_listen;
  r->fd = -1;
  r->netns_fd = -1;
  int64_t v = 0;
  bool present = false, ok = true;
  napi_value ns;
  napi_valuetype nt;
  if (napi_get_named_property(env, o, "netns", &ns) != napi_ok) {
    free(r);
    return ambit_type_error(env, "could not read option 'netns'");
  }
  napi_typeof(env, ns, &nt);
  if (nt == napi_number) {
    ok = ambit_arg_int(env, ns, "netns", 0, INT_MAX, &v);
    r->netns_fd = (int)v;
  } else if (nt == napi_string) {
    ok = ambit_arg_string(env, ns, "netns", r->netns_path, sizeof r->netns_path);
    if (ok && r->netns_path[0] == '\0') ok = ambit_type_error(env, "'netns' must not be empty") != NULL;
  } else if (nt != napi_undefined && nt != napi_null) {
    ok = ambit_type_error(env, "'netns' must be an fd number or a path") != NULL;
  }
  ok = ok && ambit_opt_string(env, o, "host", r->host, sizeof r->host, true, NULL);
  ok = ok && ambit_opt_int(env, o, "port", is_listen ? 0 : 1, 65535, true, &v, NULL);
  r->port = (int)v;
  ok = ok && ambit_opt_int(env, o, "mark", 0, 4294967295.0, false, &v, &r->has_mark);
  r->mark = (uint32_t)v;
  ok = ok && ambit_opt_bool(env, o, "transparent", &r->transparent);
  ok = ok && ambit_opt_bool(env, o, "freebind", &r->freebind);
  if (is_listen) {
    ok = ok && ambit_opt_bool(env, o, "reusePort", &r->reuse_port);
    v = 511;
    ok = ok && ambit_opt_int(env, o, "backlog", 1, 65535, false, &v, NULL);
    r->backlog = (int)v;
  } else {
    ok = ok && ambit_opt_string(env, o, "localAddress", r->local_host, sizeof r->local_host, false,
                                &r->has_local_host);
    v = 0;
    ok = ok && ambit_opt_int(env, o, "localPort", 0, 65535, false, &v, &present);
    r->local_port = (int)v;
    v = 10000;
    ok = ok && ambit_opt_int(env, o, "timeoutMs", 1, 86400000, false, &v, &present);
    r->timeout_ms = (int)v;
  }
  if (!ok) {
    free(r);
    return NULL;
  }
  napi_value promise, name;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, is_listen ? "ambit.listenFd" : "ambit.connectFd", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}

static napi_value listen_fd(napi_env env, napi_callback_info info) { return start_socket(env, info, true); }
static napi_value connect_fd(napi_env env, napi_callback_info info) { return start_socket(env, info, false); }

static bool one_int_arg(napi_env env, napi_callback_info info, const char *name, int64_t *out) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return ambit_type_error(env, "'%s' is required", name) != NULL;
  return ambit_arg_int(env, argv[0], name, 0, INT_MAX, out);
}

static napi_value make_addr(napi_env env, const struct sockaddr_storage *ss) {
  char buf[INET6_ADDRSTRLEN];
  int port, family;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    port = ntohs(a->sin_port);
    family = 4;
  } else {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    port = ntohs(a->sin6_port);
    family = 6;
  }
  napi_value o, v;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, o, "address", v);
  napi_set_named_property(env, o, "port", ambit_int(env, port));
  napi_set_named_property(env, o, "family", ambit_int(env, family));
  return o;
}

/* originalDst(fd) -> {address, port, family}: the destination before iptables REDIRECT/DNAT. */
static napi_value original_dst(napi_env env, napi_callback_info info) {
  int64_t fd;
  if (!one_int_arg(env, info, "fd", &fd)) return NULL;
  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  if (getsockname((int)fd, (struct sockaddr *)&local, &len) != 0)
    return ambit_throw_errno(env, errno, "getsockname", NULL);
  struct sockaddr_storage dst;
  memset(&dst, 0, sizeof dst);
  bool v4 = local.ss_family == AF_INET;
  if (local.ss_family == AF_INET6 &&
      IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr))
    v4 = true; /* IPv4 connection on a dual-stack socket: the conntrack entry is IPv4 */
  else if (local.ss_family != AF_INET && local.ss_family != AF_INET6)
    return ambit_throw_errno(env, EAFNOSUPPORT, "getsockopt", "SO_ORIGINAL_DST");
  if (v4) {
    len = sizeof(struct sockaddr_in);
    if (getsockopt((int)fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0)
      return ambit_throw_errno(env, errno, "getsockopt", "SO_ORIGINAL_DST");
  } else {
    len = sizeof(struct sockaddr_in6);
    if (getsockopt((int)fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len) != 0)
      return ambit_throw_errno(env, errno, "getsockopt", "IP6T_SO_ORIGINAL_DST");
  }
  return make_addr(env, &dst);
}

/* socketMark(fd) -> SO_MARK of the socket (diagnostics and tests). */
static napi_value socket_mark(napi_env env, napi_callback_info info) {
  int64_t fd;
  if (!one_int_arg(env, info, "fd", &fd)) return NULL;
  uint32_t mark = 0;
  socklen_t len = sizeof mark;
  if (getsockopt((int)fd, SOL_SOCKET, SO_MARK, &mark, &len) != 0)
    return ambit_throw_errno(env, errno, "getsockopt", "SO_MARK");
  return ambit_int(env, mark);
}

/* openNetns(path) -> fd (O_RDONLY|O_CLOEXEC). */
static napi_value open_netns(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[PATH_MAX];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return ambit_type_error(env, "'path' is required");
  if (!ambit_arg_string(env, argv[0], "path", path, sizeof path)) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ambit_throw_errno(env, errno, "open", "netns");
  return ambit_int(env, fd);
}

/* closeFd(fd) */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  int64_t fd;
  if (!one_int_arg(env, info, "fd", &fd)) return NULL;
  if (close((int)fd) != 0 && errno != EINTR) return ambit_throw_errno(env, errno, "close", NULL);
  return ambit_undefined(env);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"listenFd", NULL, listen_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connectFd", NULL, connect_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"originalDst", NULL, original_dst, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketMark", NULL, socket_mark, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openNetns", NULL, open_netns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFd", NULL, close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketListen", NULL, ambit_seqpacket_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketReply", NULL, ambit_seqpacket_reply, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketClose", NULL, ambit_seqpacket_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketRequest", NULL, ambit_seqpacket_request, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
