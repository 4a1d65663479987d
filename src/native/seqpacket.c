/* AF_UNIX SOCK_SEQPACKET messaging with SCM_RIGHTS fds (the CNI plugin -> agent hand-off).
 * Server: accept and recvmsg are driven by uv_poll on the main loop, never blocking it. Each
 * message (<= 64 KiB, <= 16 fds) goes to a JS callback (serverId-scoped conn ids); a reply is one
 * message back on the same connection. Client: synchronous, for short-lived processes. */
#include "common.h"

#include <uv.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64            /* accepts/messages handled per poll event, for fairness */
#define ACCEPT_PAUSE_MS 500 /* back off when accept fails with e.g. EMFILE */

typedef struct sp_server sp_server;

typedef struct sp_conn {
  sp_server *srv;
  uint32_t id;
  int fd;
  uv_poll_t poll;
  struct sp_conn *next;
} sp_conn;

struct sp_server {
  napi_env env;
  uint32_t id;
  int fd;
  uv_poll_t poll;
  uv_timer_t pause;
  napi_ref cb;
  napi_async_context actx;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  dev_t dev;
  ino_t ino;
  sp_conn *conns;
  uint32_t next_conn;
  bool closed;
  int open_handles;
  sp_server *next;
  unsigned char buf[AMBIT_MAX_MESSAGE];
};

typedef struct {
  sp_server *servers;
  uint32_t next_id;
} sp_registry;

typedef union {
  struct cmsghdr h;
  char b[CMSG_SPACE(sizeof(int) * AMBIT_MAX_FDS)];
} fd_control;

static sp_registry *registry(napi_env env) {
  sp_registry *r = NULL;
  napi_get_instance_data(env, (void **)&r);
  return r;
}

static sp_server *find_server(napi_env env, int64_t id) {
  sp_registry *reg = registry(env);
  for (sp_server *s = reg ? reg->servers : NULL; s != NULL; s = s->next)
    if (s->id == id) return s;
  return NULL;
}

static void server_free_if_done(sp_server *s) {
  if (!s->closed || s->open_handles > 0) return;
  sp_registry *reg = registry(s->env);
  if (reg != NULL) {
    for (sp_server **p = &reg->servers; *p != NULL; p = &(*p)->next) {
      if (*p == s) {
        *p = s->next;
        break;
      }
    }
  }
  if (s->cb != NULL) napi_delete_reference(s->env, s->cb);
  if (s->actx != NULL) napi_async_destroy(s->env, s->actx);
  free(s);
}

static void on_server_handle_closed(uv_handle_t *h) {
  sp_server *s = h->data;
  s->open_handles--;
  server_free_if_done(s);
}

static void on_conn_closed(uv_handle_t *h) {
  sp_conn *c = h->data;
  sp_server *s = c->srv;
  free(c);
  s->open_handles--;
  server_free_if_done(s);
}

static void conn_close(sp_conn *c) {
  if (c->fd < 0) return;
  sp_server *s = c->srv;
  for (sp_conn **p = &s->conns; *p != NULL; p = &(*p)->next) {
    if (*p == c) {
      *p = c->next;
      break;
    }
  }
  uv_close((uv_handle_t *)&c->poll, on_conn_closed); /* drops the fd from epoll now */
  close(c->fd);
  c->fd = -1;
}

static void close_fds(const int *fds, int n) {
  for (int i = 0; i < n; i++) close(fds[i]);
}

/* Collect SCM_RIGHTS fds from a received message. */
static int collect_fds(struct msghdr *msg, int *fds) {
  int n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k && n < AMBIT_MAX_FDS; i++) memcpy(&fds[n++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  return n;
}

/* cb(connId, data|null, fds|null, error|null); exceptions go to process 'uncaughtException'. */
static void deliver(sp_server *s, uint32_t conn_id, const unsigned char *data, size_t len,
                    const int *fds, int nfds, int err, const char *syscall, const char *option) {
  napi_env env = s->env;
  napi_handle_scope hs;
  napi_open_handle_scope(env, &hs);
  napi_value argv[4], cb, global, result;
  argv[0] = ambit_int(env, conn_id);
  napi_get_null(env, &argv[1]);
  napi_get_null(env, &argv[2]);
  napi_get_null(env, &argv[3]);
  if (err != 0) {
    argv[3] = ambit_errno_error(env, err, syscall, option);
  } else {
    napi_create_buffer_copy(env, len, data, NULL, &argv[1]);
    napi_create_array_with_length(env, (size_t)nfds, &argv[2]);
    for (int i = 0; i < nfds; i++) napi_set_element(env, argv[2], (uint32_t)i, ambit_int(env, fds[i]));
  }
  napi_get_reference_value(env, s->cb, &cb);
  napi_get_global(env, &global);
  if (cb != NULL && napi_make_callback(env, s->actx, global, cb, 4, argv, &result) == napi_pending_exception) {
    napi_value ex;
    napi_get_and_clear_last_exception(env, &ex);
    napi_fatal_exception(env, ex);
  }
  napi_close_handle_scope(env, hs);
}

static void on_conn_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  sp_conn *c = h->data;
  sp_server *s = c->srv;
  if (status < 0) {
    conn_close(c);
    return;
  }
  for (int i = 0; i < BATCH && c->fd >= 0 && !s->closed; i++) {
    fd_control ctl;
    struct iovec iov = {.iov_base = s->buf, .iov_len = sizeof s->buf};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      int e = errno;
      if (e != ECONNRESET) deliver(s, c->id, NULL, 0, NULL, 0, e, "recvmsg", NULL);
      conn_close(c);
      return;
    }
    int fds[AMBIT_MAX_FDS];
    int nfds = collect_fds(&msg, fds);
    if (n == 0) { /* peer hung up */
      close_fds(fds, nfds);
      conn_close(c);
      return;
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
      close_fds(fds, nfds);
      deliver(s, c->id, NULL, 0, NULL, 0, EMSGSIZE, "recvmsg",
              (msg.msg_flags & MSG_TRUNC) ? "message larger than 65536 bytes" : "more than 16 fds");
      conn_close(c);
      return;
    }
    deliver(s, c->id, s->buf, (size_t)n, fds, nfds, 0, NULL, NULL);
  }
}

static void on_accept(uv_poll_t *h, int status, int events);

static void on_pause_done(uv_timer_t *t) {
  sp_server *s = t->data;
  if (!s->closed) uv_poll_start(&s->poll, UV_READABLE, on_accept);
}

static void on_accept(uv_poll_t *h, int status, int events) {
  (void)events;
  sp_server *s = h->data;
  uv_loop_t *loop;
  napi_get_uv_event_loop(s->env, &loop);
  for (int i = 0; i < BATCH && !s->closed; i++) {
    int fd = status < 0 ? -1 : accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int e = status < 0 ? -status : errno;
      if (e == EAGAIN || e == EWOULDBLOCK) return;
      if (e == EINTR || e == ECONNABORTED) continue;
      deliver(s, 0, NULL, 0, NULL, 0, e, "accept4", NULL);
      if (!s->closed) { /* e.g. EMFILE: the level-triggered poll would spin */
        uv_poll_stop(&s->poll);
        uv_timer_start(&s->pause, on_pause_done, ACCEPT_PAUSE_MS, 0);
      }
      return;
    }
    sp_conn *c = calloc(1, sizeof *c);
    if (c == NULL || uv_poll_init(loop, &c->poll, fd) != 0) {
      free(c);
      close(fd);
      continue;
    }
    c->srv = s;
    c->fd = fd;
    c->id = ++s->next_conn ? s->next_conn : ++s->next_conn; /* never 0 (0 = server-level) */
    c->poll.data = c;
    c->next = s->conns;
    s->conns = c;
    s->open_handles++;
    uv_poll_start(&c->poll, UV_READABLE, on_conn_readable);
  }
}

static void server_close(sp_server *s, bool unlink_path) {
  if (s->closed) return;
  s->closed = true;
  while (s->conns != NULL) conn_close(s->conns);
  uv_close((uv_handle_t *)&s->poll, on_server_handle_closed);
  uv_close((uv_handle_t *)&s->pause, on_server_handle_closed);
  close(s->fd);
  struct stat st;
  /* Only remove the path if it is still ours (a newer agent may have replaced it). */
  if (unlink_path && lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino) unlink(s->path);
}

static void cleanup_env(void *arg) {
  sp_registry *reg = arg;
  for (sp_server *s = reg->servers; s != NULL; s = s->next) server_close(s, true);
}

static void free_registry(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static bool path_arg(napi_env env, napi_value v, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (!ambit_arg_string(env, v, "path", sa->sun_path, sizeof sa->sun_path)) return false;
  if (sa->sun_path[0] == '\0') return ambit_type_error(env, "'path' must not be empty") != NULL;
  return true;
}

/* seqpacketListen(path, cb) -> serverId */
napi_value ambit_seqpacket_listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct sockaddr_un sa;
  if (argc < 2) return ambit_type_error(env, "seqpacketListen(path, callback): 2 arguments required");
  if (!path_arg(env, argv[0], &sa)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) return ambit_type_error(env, "'onMessage' must be a function");

  struct stat st;
  if (lstat(sa.sun_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return ambit_throw_errno(env, EEXIST, "bind", "path exists and is not a socket");
    if (unlink(sa.sun_path) != 0) return ambit_throw_errno(env, errno, "unlink", "stale socket");
  }
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ambit_throw_errno(env, errno, "socket", NULL);
  const char *failed = NULL;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) failed = "bind";
  else if (chmod(sa.sun_path, 0600) != 0) failed = "chmod"; /* before listen: nobody can connect yet */
  else if (lstat(sa.sun_path, &st) != 0) failed = "stat";
  else if (listen(fd, 128) != 0) failed = "listen";
  if (failed != NULL) {
    int e = errno;
    close(fd);
    if (strcmp(failed, "bind") != 0) unlink(sa.sun_path);
    return ambit_throw_errno(env, e, failed, NULL);
  }

  sp_registry *reg = registry(env);
  if (reg == NULL) {
    reg = calloc(1, sizeof *reg);
    if (reg == NULL) {
      close(fd);
      return ambit_throw_errno(env, ENOMEM, "calloc", NULL);
    }
    napi_set_instance_data(env, reg, free_registry, NULL);
    napi_add_env_cleanup_hook(env, cleanup_env, reg);
  }
  sp_server *s = calloc(1, sizeof *s);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  if (s == NULL || uv_poll_init(loop, &s->poll, fd) != 0) {
    free(s);
    close(fd);
    unlink(sa.sun_path);
    return ambit_throw_errno(env, ENOMEM, "uv_poll_init", NULL);
  }
  uv_timer_init(loop, &s->pause);
  s->env = env;
  s->fd = fd;
  s->id = ++reg->next_id;
  s->dev = st.st_dev;
  s->ino = st.st_ino;
  memcpy(s->path, sa.sun_path, sizeof s->path);
  s->poll.data = s;
  s->pause.data = s;
  s->open_handles = 2;
  napi_create_reference(env, argv[1], 1, &s->cb);
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "ambit.seqpacket", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &s->actx);
  s->next = reg->servers;
  reg->servers = s;
  uv_poll_start(&s->poll, UV_READABLE, on_accept);
  return ambit_int(env, s->id);
}

static bool buffer_arg(napi_env env, napi_value v, const char *name, void **data, size_t *len) {
  bool is = false;
  napi_is_buffer(env, v, &is);
  if (!is) return ambit_type_error(env, "'%s' must be a Buffer", name) != NULL;
  napi_get_buffer_info(env, v, data, len);
  if (*len > AMBIT_MAX_MESSAGE) {
    ambit_throw_errno(env, EMSGSIZE, "sendmsg", "message larger than 65536 bytes");
    return false;
  }
  return true;
}

/* seqpacketReply(serverId, connId, data) -> true if sent, false if the client is gone. */
napi_value ambit_seqpacket_reply(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) return ambit_type_error(env, "seqpacketReply(server, conn, data): 3 arguments required");
  int64_t sid, cid;
  void *data;
  size_t len;
  if (!ambit_arg_int(env, argv[0], "server", 0, UINT32_MAX, &sid)) return NULL;
  if (!ambit_arg_int(env, argv[1], "conn", 0, UINT32_MAX, &cid)) return NULL;
  if (!buffer_arg(env, argv[2], "data", &data, &len)) return NULL;
  napi_value result;
  napi_get_boolean(env, false, &result);
  sp_server *s = find_server(env, sid);
  sp_conn *c = NULL;
  for (c = (s != NULL && !s->closed) ? s->conns : NULL; c != NULL && c->id != cid; c = c->next) {
  }
  if (c == NULL) return result;
  ssize_t n;
  do n = send(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) return result;
    return ambit_throw_errno(env, errno, "send", NULL);
  }
  napi_get_boolean(env, true, &result);
  return result;
}

/* seqpacketClose(serverId): idempotent. */
napi_value ambit_seqpacket_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t sid;
  if (argc < 1) return ambit_type_error(env, "'server' is required");
  if (!ambit_arg_int(env, argv[0], "server", 0, UINT32_MAX, &sid)) return NULL;
  sp_server *s = find_server(env, sid);
  if (s != NULL) server_close(s, true);
  return ambit_undefined(env);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* seqpacketRequest(path, data, fds, timeoutMs) -> Buffer. Synchronous, for short-lived clients. */
napi_value ambit_seqpacket_request(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return ambit_type_error(env, "seqpacketRequest(path, data, fds, timeoutMs): 4 arguments required");
  struct sockaddr_un sa;
  void *data;
  size_t len;
  int64_t timeout, v;
  if (!path_arg(env, argv[0], &sa)) return NULL;
  if (!buffer_arg(env, argv[1], "data", &data, &len)) return NULL;
  if (len == 0) return ambit_type_error(env, "'data' must not be empty (an empty message reads as hang-up)");
  bool is_array = false;
  uint32_t nfds = 0;
  napi_is_array(env, argv[2], &is_array);
  if (!is_array) return ambit_type_error(env, "'fds' must be an array of fd numbers");
  napi_get_array_length(env, argv[2], &nfds);
  if (nfds > AMBIT_MAX_FDS) return ambit_type_error(env, "'fds' has %u entries, max %d", nfds, AMBIT_MAX_FDS);
  int fds[AMBIT_MAX_FDS];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value e;
    napi_get_element(env, argv[2], i, &e);
    if (!ambit_arg_int(env, e, "fds[]", 0, INT32_MAX, &v)) return NULL;
    fds[i] = (int)v;
  }
  if (!ambit_arg_int(env, argv[3], "timeoutMs", 1, 86400000, &timeout)) return NULL;
  int64_t deadline = now_ms() + timeout;

  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return ambit_throw_errno(env, errno, "socket", NULL);
  /* connect/send block at most this long (connect waits when the listen backlog is full) */
  struct timeval tv = {.tv_sec = timeout / 1000, .tv_usec = (timeout % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int err = 0;
  const char *syscall = NULL;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    err = errno;
    syscall = "connect";
  }
  if (err == 0) {
    fd_control ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = data, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
      msg.msg_control = ctl.b;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      err = errno;
      syscall = "sendmsg";
    }
  }
  napi_value reply = NULL;
  while (err == 0) {
    int64_t left = deadline - now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = left > 0 ? poll(&p, 1, (int)left) : 0;
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      err = r == 0 ? ETIMEDOUT : errno;
      syscall = r == 0 ? "recvmsg" : "poll";
      break;
    }
    unsigned char *buf = malloc(AMBIT_MAX_MESSAGE);
    if (buf == NULL) {
      err = ENOMEM;
      syscall = "malloc";
      break;
    }
    fd_control ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = AMBIT_MAX_MESSAGE};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    int got[AMBIT_MAX_FDS];
    if (n >= 0) close_fds(got, collect_fds(&msg, got)); /* replies carry no fds; never leak any */
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      free(buf);
      continue;
    }
    if (n < 0) {
      err = errno;
      syscall = "recvmsg";
    } else if (n == 0) {
      err = ECONNRESET; /* the server closed without replying (e.g. it rejected the message) */
      syscall = "recvmsg";
    } else if (msg.msg_flags & MSG_TRUNC) {
      err = EMSGSIZE;
      syscall = "recvmsg";
    } else {
      napi_create_buffer_copy(env, (size_t)n, buf, NULL, &reply);
    }
    free(buf);
    break;
  }
  close(fd);
  if (err != 0) {
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINPROGRESS) err = ETIMEDOUT; /* SO_SNDTIMEO expired */
    return ambit_throw_errno(env, err, syscall, NULL);
  }
  return reply;
}
