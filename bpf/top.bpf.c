// SPDX-License-Identifier: GPL-2.0
/*
 * top: the programs of `kerntap top`, loaded only while a view is open
 * (src/top/). Nothing here is part of the exporter.
 *
 * - inet_sock_set_state: who opened a socket (the task in context when it
 *   goes CLOSE -> SYN_SENT, i.e. connect()), and the connect, close and
 *   failed-connect events, sent to userspace through a ring buffer.
 * - sys_exit_accept4 / sys_exit_accept: who accepted a socket. A passive
 *   socket is established in softirq context, where the current task is
 *   whoever the interrupt hit; the accepting task is known only when
 *   accept() returns the new fd.
 * - iter/tcp (run by userspace every refresh): the live sockets, with the
 *   kernel's own counters and the owner recorded above.
 *
 * Owners live in an LRU hash keyed by the socket's address: socket storage
 * is not callable from tracing programs before 5.11. The first owner
 * recorded wins (a socket shared after fork shows its creator); entries go
 * at close, and the LRU bounds what a missed close can leave.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "kt_cgroup.h"
#include "kt_net.h"
#include "kt_maps.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load: the ephemeral port range, to guess the role of sockets older than top. */
const volatile __u32 ephemeral_lo = 32768;
const volatile __u32 ephemeral_hi = 60999;

/*
 * Fields only top reads, as flavors (libbpf drops the ___top suffix when
 * it matches kernel types): declared here, not in vmlinux.h, so that the
 * exporter's objects stay byte for byte what they were.
 */
struct socket___top {
	struct file *file;
} __attribute__((preserve_access_index));

struct sock___top {
	struct socket___top *sk_socket;
} __attribute__((preserve_access_index));

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define SOCK_STREAM 1

enum top_role { TOP_ROLE_UNKNOWN = 0, TOP_ROLE_CLIENT = 1, TOP_ROLE_SERVER = 2 };

enum top_event { TOP_EV_CONNECT = 1, TOP_EV_ACCEPT = 2, TOP_EV_CLOSE = 3, TOP_EV_FAILED = 4 };

enum top_reason {
	TOP_REASON_NONE = 0,
	TOP_REASON_REFUSED = 1,
	TOP_REASON_TIMEOUT = 2,
	TOP_REASON_RESET = 3,
	TOP_REASON_UNREACHABLE = 4,
	TOP_REASON_OTHER = 5,
};

/* Slots of kt_drops (kt_maps.h): events the ring buffer had no room for, owners the LRU could not insert. */
enum top_drop { TOP_DROP_EVENTS = 0, TOP_DROP_OWNERS = 1 };

struct owner {
	__u64 cgroup_id;
	__u64 syn_ns;  /* connect(): SYN sent */
	__u64 est_ns;  /* established */
	__u32 pid;     /* tgid; 0 until known (a passive socket before accept returns) */
	__u16 local_port; /* from ESTABLISHED: at CLOSE the port is already released (0) */
	__u8 role;
	__u8 fin_sent; /* our FIN went out: bytes_acked counts it once acked */
	char comm[16];
};

struct event {
	__u64 ts_ns;
	__u64 duration_ns;  /* connect: SYN -> established; close: established -> close; failed: SYN -> close */
	__u64 bytes_sent;   /* data only (no SYN, no FIN) */
	__u64 bytes_received;
	__u64 cgroup_id;
	__u8 local[16];
	__u8 peer[16];
	__u32 pid;
	__u16 local_port;
	__u16 peer_port;
	__u8 type;
	__u8 reason;
	__u8 role;
	__u8 pad[5];
	char comm[16];
};

struct conn_record {
	__u64 sock;         /* identity of the socket for rates between refreshes (never shown) */
	__u64 bytes_sent;   /* data only, as in events */
	__u64 bytes_received;
	__u64 bytes_acked;  /* the kernel's counters as they are (ss -i) */
	__u64 bytes_received_raw;
	__u64 est_ns;       /* 0: established before top started */
	__u64 now_ns;
	__u64 cgroup_id;
	__u64 ino;          /* the socket's inode: userspace finds owners older than top in /proc/<pid>/fd */
	__u8 local[16];
	__u8 peer[16];
	__u32 pid;
	__u32 srtt_us;
	__u16 local_port;
	__u16 peer_port;
	__u8 state;
	__u8 role;
	__u8 pad[2];
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* sized by userspace */
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18); /* sized by userspace */
} events SEC(".maps");

/* Never read: names the types userspace decodes (src/top/source.ts checks them against this BTF). */
const volatile struct {
	struct event event;
	struct conn_record conn_record;
	enum top_role role;
	enum top_event ev;
	enum top_reason reason;
	enum top_drop drop;
} kt_layouts;

static __always_inline __u8 guess_role(const struct sock_common *skc)
{
	__u16 local = kt_local_port(skc);
	__u16 peer = kt_peer_port(skc);
	bool local_eph = local >= ephemeral_lo && local <= ephemeral_hi;
	bool peer_eph = peer >= ephemeral_lo && peer <= ephemeral_hi;

	return local_eph && !peer_eph ? TOP_ROLE_CLIENT : TOP_ROLE_SERVER;
}

static __always_inline __u8 reason_of(int err)
{
	switch (err) {
	case 111: return TOP_REASON_REFUSED;     /* ECONNREFUSED: RST in SYN_SENT */
	case 110: return TOP_REASON_TIMEOUT;     /* ETIMEDOUT: SYN retries exhausted */
	case 104: return TOP_REASON_RESET;       /* ECONNRESET */
	case 113:                                /* EHOSTUNREACH */
	case 101: return TOP_REASON_UNREACHABLE; /* ENETUNREACH */
	default: return TOP_REASON_OTHER;
	}
}

/* The current task as a socket's owner. */
static __always_inline void own(struct owner *o)
{
	o->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(o->comm, sizeof(o->comm));
	o->cgroup_id = bpf_get_current_cgroup_id(); /* the task's cgroup v2 id, any 5.x */
}

static __always_inline void fill_addrs(struct event *e, const struct sock_common *skc)
{
	kt_local_addr(skc, e->local);
	kt_peer_addr(skc, e->peer);
	e->local_port = kt_local_port(skc);
	e->peer_port = kt_peer_port(skc);
}

static __always_inline struct event *event_new(__u8 type)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		kt_count_drop(TOP_DROP_EVENTS);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->ts_ns = bpf_ktime_get_ns();
	return e;
}

static __always_inline void event_owner(struct event *e, const struct owner *o, const struct sock *sk)
{
	if (o) {
		e->pid = o->pid;
		e->role = o->role;
		e->cgroup_id = o->cgroup_id;
		__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	}
	if (!e->cgroup_id)
		e->cgroup_id = kt_sock_cgroup_id(sk);
	if (!e->role)
		e->role = guess_role(&sk->__sk_common);
}

/*
 * Data bytes from the kernel's counters: bytes_acked counts an active
 * open's SYN (acked by the SYN-ACK) and our FIN once acked; bytes_received
 * counts the peer's FIN (SOCK_DONE set).
 */
static __always_inline __u64 data_sent(const struct sock *sk, struct tcp_sock *tp, __u8 role, bool fin_sent)
{
	__u64 acked = tp->bytes_acked;

	if (role == TOP_ROLE_CLIENT && acked > 0)
		acked--;
	if (fin_sent && acked > 0 && tp->snd_una == tp->write_seq)
		acked--;
	return acked;
}

static __always_inline __u64 data_received(const struct sock *sk, struct tcp_sock *tp)
{
	__u64 received = tp->bytes_received;

	if (received > 0 && (sk->__sk_common.skc_flags & (1UL << KT_SOCK_DONE)))
		received--;
	return received;
}

static __always_inline bool fin_state(int state)
{
	return state == KT_TCP_FIN_WAIT1 || state == KT_TCP_FIN_WAIT2 || state == KT_TCP_CLOSING ||
	       state == KT_TCP_LAST_ACK || state == KT_TCP_TIME_WAIT;
}

/* connect(): the task in context is the one connecting. A reused socket starts over. */
static __always_inline void on_syn_sent(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct owner o;

	__builtin_memset(&o, 0, sizeof(o));
	own(&o);
	o.role = TOP_ROLE_CLIENT;
	o.syn_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&owners, &key, &o, BPF_ANY))
		kt_count_drop(TOP_DROP_OWNERS);
}

/* A passive socket is established (softirq): its owner is known at accept(). */
static __always_inline void on_passive_established(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct owner o;

	__builtin_memset(&o, 0, sizeof(o));
	o.role = TOP_ROLE_SERVER;
	o.est_ns = bpf_ktime_get_ns();
	o.local_port = kt_local_port(&sk->__sk_common);
	/* A new socket: whatever its address held before is stale. */
	if (bpf_map_update_elem(&owners, &key, &o, BPF_ANY))
		kt_count_drop(TOP_DROP_OWNERS);
}

static __always_inline void on_connected(const struct sock *sk, struct owner *o)
{
	struct event *e;

	o->est_ns = bpf_ktime_get_ns();
	o->local_port = kt_local_port(&sk->__sk_common);
	e = event_new(TOP_EV_CONNECT);
	if (!e)
		return;
	fill_addrs(e, &sk->__sk_common);
	event_owner(e, o, sk);
	if (o->syn_ns)
		e->duration_ns = o->est_ns - o->syn_ns;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void on_close(const struct sock *sk, struct owner *o, int oldstate)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	struct event *e;
	__u64 now;

	if (oldstate == KT_TCP_LISTEN || oldstate == KT_TCP_SYN_RECV)
		return; /* a listener, or a handshake that never completed: no connection to report */
	e = event_new(oldstate == KT_TCP_SYN_SENT ? TOP_EV_FAILED : TOP_EV_CLOSE);
	if (!e)
		return;
	now = e->ts_ns;
	fill_addrs(e, &sk->__sk_common);
	event_owner(e, o, sk);
	if (!e->local_port && o)
		e->local_port = o->local_port; /* released before this tracepoint (inet_put_port) */
	if (oldstate == KT_TCP_SYN_SENT) {
		e->reason = reason_of(sk->sk_err);
		if (o && o->syn_ns)
			e->duration_ns = now - o->syn_ns;
	} else {
		if (o && o->est_ns)
			e->duration_ns = now - o->est_ns;
		if (tp) {
			e->bytes_sent = data_sent(sk, tp, e->role, o && o->fin_sent);
			e->bytes_received = data_received(sk, tp);
		}
	}
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(top_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 key = (__u64)sk;
	struct owner *o;

	if (sk->sk_protocol != KT_IPPROTO_TCP)
		return 0;
	if (newstate == KT_TCP_SYN_SENT) {
		on_syn_sent(sk);
		return 0;
	}
	if (newstate == KT_TCP_ESTABLISHED && oldstate == KT_TCP_SYN_RECV) {
		on_passive_established(sk);
		return 0;
	}
	o = bpf_map_lookup_elem(&owners, &key);
	if (newstate == KT_TCP_ESTABLISHED) {
		if (o && oldstate == KT_TCP_SYN_SENT)
			on_connected(sk, o);
		return 0;
	}
	if (newstate == KT_TCP_FIN_WAIT1 || newstate == KT_TCP_LAST_ACK) {
		if (o)
			o->fin_sent = 1;
		return 0;
	}
	if (newstate != KT_TCP_CLOSE)
		return 0;
	on_close(sk, o, oldstate);
	if (o)
		bpf_map_delete_elem(&owners, &key);
	return 0;
}

/* The TCP sock behind a new fd of the current task, NULL if it is not one. */
static __always_inline struct sock *tcp_sock_of_fd(long fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;
	struct socket *sock;
	struct sock *sk;

	if (fd < 0 || !fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	if (BPF_CORE_READ(sock, type) != SOCK_STREAM)
		return NULL;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != KT_IPPROTO_TCP)
		return NULL;
	return sk;
}

/* accept() returned fd: its socket's owner is the current task, unless one was recorded already. */
static __always_inline int on_accept(long fd)
{
	struct sock *sk = tcp_sock_of_fd(fd);
	struct owner *o, fresh;
	struct event *e;
	__u64 key;
	__u16 family;

	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != KT_AF_INET && family != KT_AF_INET6)
		return 0;
	key = (__u64)sk;
	o = bpf_map_lookup_elem(&owners, &key);
	if (!o) {
		/* Established before top started, or the LRU dropped it. */
		__builtin_memset(&fresh, 0, sizeof(fresh));
		fresh.role = TOP_ROLE_SERVER;
		if (bpf_map_update_elem(&owners, &key, &fresh, BPF_NOEXIST))
			kt_count_drop(TOP_DROP_OWNERS);
		o = bpf_map_lookup_elem(&owners, &key);
		if (!o)
			return 0;
	}
	if (o->pid)
		return 0; /* accepted already (first owner wins) */
	own(o);
	e = event_new(TOP_EV_ACCEPT);
	if (!e)
		return 0;
	e->pid = o->pid;
	e->role = TOP_ROLE_SERVER;
	e->cgroup_id = o->cgroup_id;
	__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	BPF_CORE_READ_INTO(&e->local_port, sk, __sk_common.skc_num);
	e->peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == KT_AF_INET6) {
		BPF_CORE_READ_INTO(&e->local, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->peer, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		kt_v4_mapped(e->local, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		kt_v4_mapped(e->peer, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int top_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int top_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

SEC("iter/tcp")
int top_sockets(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct conn_record rec;
	struct tcp_sock *tp;
	struct owner *o;
	__u64 key;
	__u8 state;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* request and time-wait sockets */
	state = skc->skc_state;
	if (state == KT_TCP_LISTEN || state == KT_TCP_CLOSE)
		return 0;
	key = (__u64)tp;
	o = bpf_map_lookup_elem(&owners, &key);

	__builtin_memset(&rec, 0, sizeof(rec));
	rec.sock = key;
	rec.now_ns = bpf_ktime_get_ns();
	rec.state = state;
	rec.local_port = kt_local_port(skc);
	rec.peer_port = kt_peer_port(skc);
	kt_local_addr(skc, rec.local);
	kt_peer_addr(skc, rec.peer);
	rec.srtt_us = tp->srtt_us >> 3;
	rec.bytes_acked = tp->bytes_acked;
	rec.bytes_received_raw = tp->bytes_received;
	rec.ino = BPF_CORE_READ((struct sock___top *)tp, sk_socket, file, f_inode, i_ino);
	if (o) {
		rec.pid = o->pid;
		rec.role = o->role;
		rec.est_ns = o->est_ns;
		rec.cgroup_id = o->cgroup_id;
		__builtin_memcpy(rec.comm, o->comm, sizeof(rec.comm));
	}
	if (!rec.cgroup_id)
		rec.cgroup_id = kt_sock_cgroup_id((struct sock *)tp);
	if (!rec.role)
		rec.role = guess_role(skc);
	rec.bytes_sent = data_sent((struct sock *)tp, tp, rec.role, fin_state(state));
	rec.bytes_received = data_received((struct sock *)tp, tp);
	bpf_seq_write(seq, &rec, sizeof(rec));
	return 0;
}
