// SPDX-License-Identifier: GPL-2.0
/*
 * http: HTTP/1.x request durations from the socket syscalls, without
 * kprobes (classic syscall tracepoints, 4.7+; nothing here needs more than
 * Linux 5.5's bpf_probe_read_user).
 *
 * A connection is tracked by {tgid, fd} in `conns`. It is learned when
 * accept()/connect() returns a TCP socket (its sock is found in the task's
 * fd table with probe reads from bpf_get_current_task(), which works on
 * every kernel kerntap supports), or inserted by userspace at start for
 * sockets opened before kerntap. Every other fd costs one hash lookup and
 * an exit; close() deletes the entry.
 *
 * Only the first KT_PEEK bytes of each read/write on a tracked socket are
 * looked at (bpf_probe_read_user, bounded):
 *  - a request line ("GET /", …) in the request direction (read by a
 *    server, written by a client) queues a request with its time;
 *  - a status line ("HTTP/1.1 200") in the response direction completes the
 *    oldest queued request: server duration = first request byte read ->
 *    first response byte written; client = request written -> first
 *    response byte read. 1xx interim responses (100 Continue) are skipped;
 *    101 ends tracking (the protocol changed).
 *  - Body bytes never count as a status line: a status line counts only
 *    with a request queued, or right after another status line when the
 *    last request-direction data was a request (pipelined requests that
 *    arrived in one read), with that request's start (approximate).
 * A connection whose first data is not HTTP is forgotten at once (one that
 * predates kerntap after a few tries), so non-HTTP traffic on accepted
 * sockets costs one lookup again.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "kt_hist.h"
#include "kt_maps.h"
#include "kt_net.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 ephemeral_lo = 32768;
const volatile __u32 ephemeral_hi = 60999;

#define KT_PEEK 16
#define QUEUE 4         /* requests queued per connection (pipelining) */
#define TRIES_NEW 1     /* data events before a new connection that shows no HTTP is forgotten */
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define SOCK_STREAM 1
#define EINPROGRESS 115

enum role { ROLE_UNKNOWN = 0, ROLE_CLIENT = 1, ROLE_SERVER = 2 };
enum method { M_OTHER, M_GET, M_POST, M_PUT, M_DELETE, M_HEAD, M_OPTIONS, M_PATCH, M_CONNECT, M_TRACE };
enum io_kind { IO_PLAIN = 0, IO_IOV = 1, IO_MSG = 2, IO_CONNECT = 3 };
enum drop_slot { DROP_REQS = 0, DROP_CONNS = 1, DROP_PENDING = 2 };

struct conn_key {
	__u32 tgid;
	__u32 fd;
};

/* Written by userspace for sockets found at start: keep the layout in http.ts. */
struct conn {
	__u8 peer[16];
	__u64 ino;          /* socket inode, so userspace can tell a reused fd */
	__u64 start[QUEUE]; /* queued requests: start time */
	__u64 last_start;   /* the last request's start, for pipelined responses */
	__u16 local_port;
	__u16 peer_port;
	__u8 method[QUEUE];
	__u8 last_method;
	__u8 role;
	__u8 http;          /* HTTP seen on it */
	__u8 tries;         /* data events left to see HTTP before it is forgotten */
	__u8 head;          /* oldest queued request */
	__u8 queued;
	__u8 burst;         /* the last request-direction data began with a request */
	__u8 streak;        /* the last response-direction data began with a status line */
	__u8 pad[2];
};

struct req_key {
	__u64 cgroup_id;
	__u8 peer[16];      /* client side: the server's address; zero on the server side */
	__u16 server_port;  /* 0: ephemeral */
	__u16 status;
	__u8 method;
	__u8 role;
	__u8 pad[2];
};

/* A read or connect in flight on a tracked socket, by thread. */
struct pending {
	__u64 buf;
	__u32 fd;
	__u32 kind;
};

/* Never read: puts the enums userspace decodes in the object's BTF (see src/bpf/layout.ts). */
const volatile struct {
	enum role role;
	enum method method;
	enum drop_slot drop_slot;
} kt_layouts;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn);
} conns SEC(".maps");

/* Preallocated: it is written on every read of a tracked socket. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct req_key);
	__type(value, struct kt_hist);
} reqs SEC(".maps");

static const struct req_key req_overflow = { .cgroup_id = ~0ULL };
static const struct kt_hist hist_zero;

/* ABI structs of the syscalls' user memory (fixed layout, not relocated). */
struct kt_iovec {
	__u64 base;
	__u64 len;
};

struct kt_user_msghdr {
	__u64 name;
	__s32 namelen;
	__u64 iov;
	__u64 iovlen;
};

static __always_inline struct conn_key key_of(__u32 fd)
{
	struct conn_key k = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };
	return k;
}

/* The first buffer of an I/O call: plain, an iovec array, or a msghdr's. */
static __always_inline __u64 first_buffer(__u64 ptr, __u32 kind, __u64 *len)
{
	struct kt_user_msghdr msg;
	struct kt_iovec iov;

	if (kind == IO_PLAIN)
		return ptr;
	if (kind == IO_MSG) {
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)ptr) || !msg.iovlen)
			return 0;
		ptr = msg.iov;
	}
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)ptr))
		return 0;
	if (iov.len < *len)
		*len = iov.len;
	return iov.base;
}

static __always_inline bool is_upper(__u8 c)
{
	return c >= 'A' && c <= 'Z';
}

static __always_inline bool starts(const __u8 *b, const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (b[i] != (__u8)s[i])
			return false;
	return true;
}

/* A request target begins with '/', '*', or "http" (absolute form) or is CONNECT's host. */
static __always_inline bool target_ok(__u8 c)
{
	return c == '/' || c == '*' || c == 'h' || c == 'H';
}

/*
 * The method of a request line at the start of b, -1 if there is none.
 * A method not in the standard list counts as _OTHER if it is 1-12
 * upper-case letters (or '-', '_') followed by a space and a target.
 */
static __always_inline int request_method(const __u8 *b)
{
	int sp = -1;

	if (starts(b, "GET ", 4)) return target_ok(b[4]) ? M_GET : -1;
	if (starts(b, "POST ", 5)) return target_ok(b[5]) ? M_POST : -1;
	if (starts(b, "PUT ", 4)) return target_ok(b[4]) ? M_PUT : -1;
	if (starts(b, "HEAD ", 5)) return target_ok(b[5]) ? M_HEAD : -1;
	if (starts(b, "DELETE ", 7)) return target_ok(b[7]) ? M_DELETE : -1;
	if (starts(b, "OPTIONS ", 8)) return target_ok(b[8]) ? M_OPTIONS : -1;
	if (starts(b, "PATCH ", 6)) return target_ok(b[6]) ? M_PATCH : -1;
	if (starts(b, "TRACE ", 6)) return target_ok(b[6]) ? M_TRACE : -1;
	if (starts(b, "CONNECT ", 8)) return b[8] > ' ' && b[8] < 0x7f ? M_CONNECT : -1;
	if (starts(b, "PRI * HTTP/2", 12)) return -1; /* HTTP/2 prior knowledge: out of scope */
	for (int i = 0; i < 13; i++) {
		if (b[i] == ' ') {
			sp = i;
			break;
		}
		if (!is_upper(b[i]) && b[i] != '-' && b[i] != '_')
			return -1;
	}
	if (sp < 1 || sp > 12)
		return -1;
	return (b[sp + 1] == '/' || b[sp + 1] == '*') ? M_OTHER : -1;
}

static __always_inline bool is_digit(__u8 c)
{
	return c >= '0' && c <= '9';
}

/* The status of a status line at the start of b ("HTTP/1.x NNN "), 0 if there is none. */
static __always_inline int status_code(const __u8 *b)
{
	if (!starts(b, "HTTP/1.", 7) || (b[7] != '0' && b[7] != '1') || b[8] != ' ')
		return 0;
	if (b[9] < '1' || b[9] > '5' || !is_digit(b[10]) || !is_digit(b[11]))
		return 0;
	if (b[12] != ' ' && b[12] != '\r')
		return 0;
	return (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
}

static __always_inline __u16 service_port(__u16 port)
{
	return port >= ephemeral_lo && port <= ephemeral_hi ? 0 : port;
}

static __always_inline void record(const struct conn *c, __u64 start, __u8 method, int status, __u64 now)
{
	struct req_key k;
	struct kt_hist *h;

	__builtin_memset(&k, 0, sizeof(k));
	k.cgroup_id = bpf_get_current_cgroup_id();
	k.role = c->role;
	k.method = method;
	k.status = status;
	if (c->role == ROLE_CLIENT) {
		__builtin_memcpy(k.peer, c->peer, 16);
		k.server_port = service_port(c->peer_port);
	} else {
		k.server_port = service_port(c->local_port);
	}
	h = kt_lookup_or_init(&reqs, &k, &hist_zero, &req_overflow, DROP_REQS);
	if (h)
		kt_hist_add_ns(h, now > start ? now - start : 0);
}

/* A request line in the request direction. */
static __always_inline void on_request(struct conn *c, int method, __u64 now)
{
	__u8 tail;

	c->http = 1;
	c->burst = 1;
	c->streak = 0;
	c->last_start = now;
	c->last_method = method;
	if (c->queued >= QUEUE)
		return; /* deeper pipelining: the response still pairs with last_start */
	tail = (c->head + c->queued) & (QUEUE - 1);
	c->start[tail] = now;
	c->method[tail] = method;
	c->queued++;
}

/* A status line in the response direction. Returns true when the connection is to be forgotten. */
static __always_inline bool on_response(struct conn *c, int status, __u64 now)
{
	__u8 head = c->head & (QUEUE - 1);

	if (status < 200 && status != 101)
		return false; /* interim (100 Continue, 103 Early Hints): the final status follows */
	if (c->queued) {
		record(c, c->start[head], c->method[head], status, now);
		c->head = (head + 1) & (QUEUE - 1);
		c->queued--;
	} else if (c->streak && c->burst) {
		record(c, c->last_start, c->last_method, status, now);
	} else {
		return false;
	}
	c->streak = 1;
	return status == 101;
}

/*
 * Data at the start of a read (outbound = false) or write on a tracked
 * connection. Returns true when the connection is to be forgotten.
 */
static __always_inline bool on_data(struct conn *c, const __u8 *b, bool outbound)
{
	__u64 now = bpf_ktime_get_ns();
	int method = request_method(b);
	int status = method < 0 ? status_code(b) : 0;
	bool request_dir;

	if (c->role == ROLE_UNKNOWN) {
		if (method >= 0)
			c->role = outbound ? ROLE_CLIENT : ROLE_SERVER;
		else if (status)
			c->role = outbound ? ROLE_SERVER : ROLE_CLIENT;
	}
	request_dir = (c->role == ROLE_CLIENT) == outbound;
	if (method >= 0 && request_dir) {
		on_request(c, method, now);
		return false;
	}
	if (status && !request_dir && c->role != ROLE_UNKNOWN) {
		c->http = 1;
		return on_response(c, status, now);
	}
	if (!c->http) {
		if (c->tries <= 1)
			return true;
		c->tries--;
		return false;
	}
	if (request_dir)
		c->burst = 0;
	else
		c->streak = 0;
	return false;
}

/* Reads up to KT_PEEK bytes at ptr into b (zero-filled); false if there are none. */
static __always_inline bool peek(__u8 *b, __u64 ptr, __u64 len)
{
	__u32 n = len < KT_PEEK ? len : KT_PEEK;

	__builtin_memset(b, 0, KT_PEEK + 1);
	if (!ptr || n == 0)
		return false;
	/* Bounded for the verifier: n is 1..KT_PEEK. */
	return bpf_probe_read_user(b, n & (2 * KT_PEEK - 1), (void *)ptr) == 0;
}

/* "HTTP/1.1 100 Continue\r\n\r\n": the final response may follow in the same read. */
#define CONTINUE_LEN 25

static __always_inline void on_buffer(struct conn_key *k, struct conn *c, __u64 ptr, __u64 len, bool outbound)
{
	__u8 b[KT_PEEK + 1];

	if (!peek(b, ptr, len))
		return;
	if (on_data(c, b, outbound)) {
		bpf_map_delete_elem(&conns, k);
		return;
	}
	if (len > CONTINUE_LEN && starts(b, "HTTP/1.1 100 Con", KT_PEEK) && peek(b, ptr + CONTINUE_LEN, len - CONTINUE_LEN) &&
	    status_code(b) && on_data(c, b, outbound))
		bpf_map_delete_elem(&conns, k);
}

/* ---- writes: handled at entry (the data is there, and the time is the first byte's) ---- */

static __always_inline int on_write(__u32 fd, __u64 ptr, __u64 len, __u32 kind)
{
	struct conn_key k = key_of(fd);
	struct conn *c = bpf_map_lookup_elem(&conns, &k);

	if (!c)
		return 0;
	ptr = first_buffer(ptr, kind, &len);
	on_buffer(&k, c, ptr, len, true);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int http_write(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], ctx->args[1], ctx->args[2], IO_PLAIN);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int http_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], ctx->args[1], ctx->args[2], IO_PLAIN);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int http_writev(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], ctx->args[1], KT_PEEK, IO_IOV);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int http_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return on_write(ctx->args[0], ctx->args[1], KT_PEEK, IO_MSG);
}

/* ---- reads: the buffer is remembered at entry and looked at on return ---- */

static __always_inline int read_enter(__u32 fd, __u64 buf, __u32 kind)
{
	struct conn_key k = key_of(fd);
	struct pending p = { .buf = buf, .fd = fd, .kind = kind };
	__u64 id;

	if (!bpf_map_lookup_elem(&conns, &k))
		return 0;
	id = bpf_get_current_pid_tgid();
	if (bpf_map_update_elem(&pending, &id, &p, BPF_ANY))
		kt_count_drop(DROP_PENDING);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int http_read_enter(struct trace_event_raw_sys_enter *ctx)
{
	return read_enter(ctx->args[0], ctx->args[1], IO_PLAIN);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int http_recvfrom_enter(struct trace_event_raw_sys_enter *ctx)
{
	return read_enter(ctx->args[0], ctx->args[1], IO_PLAIN);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int http_readv_enter(struct trace_event_raw_sys_enter *ctx)
{
	return read_enter(ctx->args[0], ctx->args[1], IO_IOV);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int http_recvmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	return read_enter(ctx->args[0], ctx->args[1], IO_MSG);
}

static __always_inline int read_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &id);
	struct conn_key k;
	struct conn *c;
	__u64 ptr, len = ret;
	__u32 kind;

	if (!p)
		return 0;
	k = key_of(p->fd);
	ptr = p->buf;
	kind = p->kind;
	bpf_map_delete_elem(&pending, &id);
	if (ret <= 0 || kind == IO_CONNECT)
		return 0;
	ptr = first_buffer(ptr, kind, &len);
	c = bpf_map_lookup_elem(&conns, &k);
	if (c)
		on_buffer(&k, c, ptr, len, false);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_read")
int http_read_exit(struct trace_event_raw_sys_exit *ctx)
{
	return read_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int http_recvfrom_exit(struct trace_event_raw_sys_exit *ctx)
{
	return read_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_readv")
int http_readv_exit(struct trace_event_raw_sys_exit *ctx)
{
	return read_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int http_recvmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	return read_exit(ctx->ret);
}

/* ---- learning connections: accept and connect ---- */

/* The TCP sock behind an fd of the current task, NULL if it is not one. */
static __always_inline struct sock *tcp_sock_of_fd(__u32 fd, __u64 *ino)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;
	struct inode *inode;
	struct socket *sock;
	struct sock *sk;
	__u16 family;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	inode = BPF_CORE_READ(f, f_inode);
	if ((BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	if (BPF_CORE_READ(sock, type) != SOCK_STREAM)
		return NULL;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != KT_IPPROTO_TCP)
		return NULL;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != KT_AF_INET && family != KT_AF_INET6)
		return NULL;
	*ino = BPF_CORE_READ(inode, i_ino);
	return sk;
}

static __always_inline void learn(__u32 fd, __u8 role)
{
	struct conn_key k = key_of(fd);
	struct conn c;
	struct sock *sk;
	__u64 ino = 0;

	sk = tcp_sock_of_fd(fd, &ino);
	if (!sk)
		return;
	__builtin_memset(&c, 0, sizeof(c));
	c.ino = ino;
	c.role = role;
	c.tries = TRIES_NEW;
	c.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	c.peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == KT_AF_INET6)
		BPF_CORE_READ_INTO(&c.peer, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	else
		kt_v4_mapped(c.peer, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	if (bpf_map_update_elem(&conns, &k, &c, BPF_ANY))
		kt_count_drop(DROP_CONNS);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int http_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		learn(ctx->ret, ROLE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int http_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		learn(ctx->ret, ROLE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int http_connect_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending p = { .fd = ctx->args[0], .kind = IO_CONNECT };

	if (bpf_map_update_elem(&pending, &id, &p, BPF_ANY))
		kt_count_drop(DROP_PENDING);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int http_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &id);
	__u32 fd, kind;

	if (!p)
		return 0;
	fd = p->fd;
	kind = p->kind;
	bpf_map_delete_elem(&pending, &id);
	if (kind == IO_CONNECT && (ctx->ret == 0 || ctx->ret == -EINPROGRESS))
		learn(fd, ROLE_CLIENT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int http_close(struct trace_event_raw_sys_enter *ctx)
{
	struct conn_key k = key_of(ctx->args[0]);

	bpf_map_delete_elem(&conns, &k);
	return 0;
}
