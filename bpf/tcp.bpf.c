// SPDX-License-Identifier: GPL-2.0
/*
 * tcp: connection lifecycle, traffic and latency, from stable tracepoints.
 *
 * - inet_sock_set_state: connect latency (SYN_SENT -> ESTABLISHED), passive
 *   handshake time, failed connects and their reason, connection lifetime,
 *   open connections, and the final traffic of a connection at close.
 * - tcp_probe (every segment received in ESTABLISHED, data or ACK): once a
 *   connection is past its first YOUNG_SEGS segments, at most one report per
 *   REPORT_US of its clock (an RTT sample and the traffic since its last
 *   report), or sooner once it owes REPORT_OWED_BYTES. A short connection
 *   reports everything at close, and its RTT sample at ESTABLISHED.
 * - tcp_send_reset / tcp_receive_reset: resets.
 * - tcp_retransmit_synack: SYN-ACK retransmits (SYN retransmits are read
 *   from the socket's own counter when its handshake ends).
 * - iter/tcp (run by userspace at poll time, in kerntap's network
 *   namespace): listening sockets, live connections when asked for, and the
 *   traffic of quiet connections that tcp_probe has not reported yet.
 *
 * Traffic comes from the kernel's own per-socket counters (bytes_acked,
 * bytes_received, total_retrans): each event adds what they grew by since
 * the socket's last report, kept in sock_table, a hash keyed by the
 * socket's address. This costs no hook on the send/receive path, works in
 * every network namespace, and loses nothing at close.
 *
 * Why a hash and not socket storage (BPF_MAP_TYPE_SK_STORAGE): storage is
 * allocated with kmalloc and a memory-cgroup charge, and freed with the
 * socket under two irq-disabled locks; on a new connection per request that
 * cost more than all the programs' own work (BENCHMARKS.md §1). The hash
 * allocates from the BPF allocator's per-CPU caches, its entry goes at
 * TCP_CLOSE, and it works the same on every kernel (tracing programs have
 * socket storage only from 5.11 on).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "kt_cgroup.h"
#include "kt_hist.h"
#include "kt_maps.h"
#include "kt_net.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load. */
const volatile __u32 ephemeral_lo = 32768;
const volatile __u32 ephemeral_hi = 60999;
const volatile __u32 per_connection = 0;

enum role { ROLE_UNKNOWN = 0, ROLE_CLIENT = 1, ROLE_SERVER = 2 };

enum failure { FAIL_REFUSED, FAIL_TIMEOUT, FAIL_RESET, FAIL_UNREACHABLE, FAIL_OTHER, FAIL_KINDS };

enum drop_slot { DROP_FLOWS = 0, DROP_HISTS = 1, DROP_SOCKS = 2 };

/*
 * A young connection (its first YOUNG_SEGS segments received, while it owes
 * less than REPORT_OWED_BYTES) is passed over by tcp_probe without even a
 * state lookup: its RTT sample was taken at ESTABLISHED and its traffic goes
 * in at close (or at the next poll's walk, or its first report), so a short
 * connection's segments cost no map operation at all. Older connections
 * report at most once per REPORT_US of the socket's clock: an RTT sample
 * (so the histogram is RTT weighted by active time, not by segment count)
 * and the traffic since the last report; or sooner, traffic only, once they
 * owe REPORT_OWED_BYTES.
 */
#define YOUNG_SEGS 8
#define REPORT_US 10000
#define REPORT_OWED_BYTES 32768

/*
 * Traffic is aggregated per cgroup x role x peer x service port: the peer's
 * port for a client, the local (listening) port for a server, so a host
 * serving several ports from one cgroup tells them apart. 0: ephemeral.
 */
struct flow_key {
	__u64 cgroup_id;
	__u8 peer[16];
	__u16 server_port;
	__u8 role;
	__u8 pad[5];
};

struct flow_val {
	__u64 sent;
	__u64 received;
	__u64 retrans;
	__u64 active; /* open connections (established, until CLOSE); two's complement: +1 and -1 from different events sum right */
	__u64 resets_sent;
	__u64 resets_received;
	__u64 syn_retrans; /* SYN and SYN-ACK retransmits, as TCPSynRetrans counts them */
	__u64 failed[FAIL_KINDS];
};

/* The latency histograms of one cgroup and role: one lookup per event adds to any of them. */
struct hist_key {
	__u64 cgroup_id;
	__u8 role;
	__u8 pad[7];
};

struct conn_hists {
	struct kt_hist rtt;
	struct kt_hist open;     /* client: connect (SYN sent -> established); server: handshake */
	struct kt_hist lifetime; /* established -> close */
};

/* What kerntap remembers per socket, from its first state to TCP_CLOSE. */
struct sock_state {
	__u64 syn_ns;        /* SYN_SENT time, active opens */
	__u64 est_ns;        /* ESTABLISHED time */
	__u64 acked;         /* counters already reported, see claim() */
	__u64 received;
	__u64 retrans;
	__u64 report_us;     /* tp->tcp_mstamp from which tcp_probe reports again (RTT sample, traffic) */
	__u8 role;
	__u8 established;    /* counted in flow_val.active (reached ESTABLISHED, not yet closed) */
	__u8 key_ok;
	__u8 resets_received; /* a received reset is always followed by CLOSE: added to the flow there */
	__u8 pad[4];
	char comm[16];       /* who called connect() or listen() (a server's connections: userspace finds its listener's) */
	struct flow_key key;
};

/*
 * Keyed by the socket's address; allocated as used, the entry goes at
 * TCP_CLOSE, which every full socket passes before it is freed. A socket
 * address the kernel reuses gets a fresh entry at its SYN_SENT, LISTEN or
 * ESTABLISHED (from SYN_RECV), so an entry whose close was missed (a
 * recursion miss) is written over, not read.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072); /* sized by userspace (max_sockets) */
	__type(key, __u64);
	__type(value, struct sock_state);
} sock_table SEC(".maps");

/*
 * Entries in sock_table, for its entries gauge (userspace never reads the
 * table itself): +1 per insert of a new key, -1 per delete, summed over the
 * CPUs by userspace (a CPU's own count goes negative when it deletes entries
 * others inserted). Per-CPU: two adds per socket on a line no other CPU
 * writes; atomic all the same, as tcp_probe in a softirq may interrupt
 * tcp_state's add on the same CPU.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} kt_sock_count SEC(".maps");

/* Allocated as used: these programs run in process or softirq context, never under scheduler locks. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, struct hist_key);
	__type(value, struct conn_hists);
} hists SEC(".maps");

/* Reserved keys for full maps (see kt_maps.h), which userspace inserts; the histograms' (one per role) are in hists_of. */
static const struct flow_key flow_overflow = { .cgroup_id = ~0ULL };
static const struct flow_val flow_zero;
static const struct conn_hists hists_zero;

static __always_inline bool is_ephemeral(__u16 port)
{
	return port >= ephemeral_lo && port <= ephemeral_hi;
}

/* The flow of a connection: `owner` gives the cgroup and local port, `conn` the peer. */
static __always_inline void flow_key_fill(struct flow_key *k, const struct sock *owner,
					  const struct sock_common *conn, __u8 role)
{
	__u16 port = role == ROLE_SERVER ? kt_local_port(&owner->__sk_common) : kt_peer_port(conn);

	__builtin_memset(k, 0, sizeof(*k));
	k->cgroup_id = kt_sock_cgroup_id(owner);
	kt_peer_addr(conn, k->peer);
	k->server_port = is_ephemeral(port) ? 0 : port;
	k->role = role;
}

static __always_inline void flow_key_init(struct flow_key *k, const struct sock *sk, __u8 role)
{
	flow_key_fill(k, sk, &sk->__sk_common, role);
}

/* Sockets that existed before kerntap: the side with an ephemeral local port is the client. */
static __always_inline __u8 guess_role(const struct sock *sk)
{
	const struct sock_common *skc = &sk->__sk_common;

	if (is_ephemeral(kt_local_port(skc)) && !is_ephemeral(kt_peer_port(skc)))
		return ROLE_CLIENT;
	return ROLE_SERVER;
}

static __always_inline struct flow_val *flow_of(const struct flow_key *k)
{
	return kt_lookup_or_init(&flows, k, &flow_zero, &flow_overflow, DROP_FLOWS);
}

/* The histograms of a flow's cgroup and role. */
static __always_inline struct conn_hists *hists_of(const struct flow_key *fk)
{
	struct hist_key k = { .cgroup_id = fk->cgroup_id, .role = fk->role };
	struct hist_key overflow = { .cgroup_id = ~0ULL, .role = fk->role };

	return kt_lookup_or_init(&hists, &k, &hists_zero, &overflow, DROP_HISTS);
}

static __always_inline void rtt_add(struct conn_hists *h, __u32 srtt_us)
{
	if (srtt_us)
		kt_hist_add_ns(&h->rtt, (__u64)srtt_us * 1000);
}

static __always_inline struct sock_state *state_of(const struct sock *sk)
{
	__u64 addr = (__u64)sk;

	return bpf_map_lookup_elem(&sock_table, &addr);
}

static __always_inline void count_sockets(__s64 delta)
{
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&kt_sock_count, &zero);

	if (n)
		__sync_fetch_and_add(n, delta);
}

/*
 * Stores a socket's new state, written over whatever its address held (see
 * sock_table: a stale entry, whose close was missed); false, counted in
 * kt_drops, when the table is full.
 */
static __always_inline bool state_put(const struct sock *sk, const struct sock_state *st)
{
	__u64 addr = (__u64)sk;
	long err = bpf_map_update_elem(&sock_table, &addr, st, BPF_NOEXIST);

	if (err == 0) {
		count_sockets(1);
		return true;
	}
	if (err == -EEXIST && bpf_map_update_elem(&sock_table, &addr, st, BPF_EXIST) == 0)
		return true;
	kt_count_drop(DROP_SOCKS);
	return false;
}

static __always_inline void state_free(const struct sock *sk)
{
	__u64 addr = (__u64)sk;

	if (bpf_map_delete_elem(&sock_table, &addr) == 0)
		count_sockets(-1);
}

static __always_inline const struct flow_key *key_of(struct sock_state *st, const struct sock *sk)
{
	if (!st->key_ok) {
		flow_key_init(&st->key, sk, st->role);
		st->key_ok = 1;
	}
	return &st->key;
}

/*
 * Adds what a socket counter grew by since it was last reported. Every
 * caller holds the socket lock (tcp_probe, state changes, and iter/tcp from
 * 5.15 on: older iterators don't report, see tcp_sockets), so *reported is
 * not raced; the add is atomic because the flow value is shared.
 */
static __always_inline void claim(__u64 *reported, __u64 now, __u64 *total)
{
	if (now > *reported) {
		__sync_fetch_and_add(total, now - *reported);
		*reported = now;
	}
}

/* Adds what the socket's counters grew by since its last report to v. */
static __always_inline void add_traffic(struct sock_state *st, struct flow_val *v,
					__u64 acked, __u64 received, __u64 retrans)
{
	claim(&st->acked, acked, &v->sent);
	claim(&st->received, received, &v->received);
	claim(&st->retrans, retrans, &v->retrans);
}

/* The same for a live socket: the flow is looked up only when a counter moved. */
static __always_inline void report_traffic(struct sock_state *st, const struct sock *sk,
					   struct tcp_sock *tp)
{
	__u64 acked = tp->bytes_acked;
	__u64 received = tp->bytes_received;
	__u64 retrans = tp->total_retrans;
	struct flow_val *v;

	if (acked <= st->acked && received <= st->received && retrans <= st->retrans)
		return;
	v = flow_of(key_of(st, sk));
	if (v)
		add_traffic(st, v, acked, received, retrans);
}

/*
 * ns from `from` to `to`, never negative. Times come from two readings of
 * CLOCK_MONOTONIC: bpf_ktime_get_ns(), and tcp_mstamp (the µs stamp TCP took
 * of the segment being processed, tcp_clock_ns() = ktime_get_ns() since 4.20),
 * which costs no clock read where a segment was just stamped.
 */
static __always_inline __u64 elapsed_ns(__u64 from, __u64 to)
{
	return to > from ? to - from : 0;
}

static __always_inline __u32 failure_of(int err)
{
	switch (err) {
	case 111: return FAIL_REFUSED;     /* ECONNREFUSED */
	case 110: return FAIL_TIMEOUT;     /* ETIMEDOUT */
	case 104: return FAIL_RESET;       /* ECONNRESET */
	case 113:                          /* EHOSTUNREACH */
	case 101: return FAIL_UNREACHABLE; /* ENETUNREACH */
	default: return FAIL_OTHER;
	}
}

/* connect(): the SYN goes out. */
static __always_inline void on_syn_sent(const struct sock *sk)
{
	struct sock_state st = {};

	st.syn_ns = bpf_ktime_get_ns();
	st.role = ROLE_CLIENT;
	/* The owner of a client connection shows only in per-connection mode. */
	if (per_connection)
		bpf_get_current_comm(st.comm, sizeof(st.comm));
	state_put(sk, &st);
}

static __always_inline void on_listen(const struct sock *sk)
{
	struct sock_state st = {};

	st.role = ROLE_SERVER;
	bpf_get_current_comm(st.comm, sizeof(st.comm));
	state_put(sk, &st);
}

/*
 * The state of a connection first seen established: counted open, its
 * counters reported from now on. Returns false if the table is full. The
 * gauge goes up only once the state is stored, so that its close takes it
 * down again.
 */
static __always_inline bool put_established(const struct sock *sk, struct sock_state *st)
{
	struct flow_val *v;

	st->key_ok = 1;
	st->established = 1;
	if (!state_put(sk, st))
		return false;
	v = flow_of(&st->key);
	if (v)
		__sync_fetch_and_add(&v->active, 1);
	return true;
}

/*
 * A passive open: the child was created in SYN_RECV while the final ACK
 * was processed and reaches ESTABLISHED in the same softirq, so its state is
 * made only now. Just before, tcp_rcv_state_process() timed SYN-ACK -> ACK
 * (tcp_synack_rtt_meas), which is both its handshake time and its first RTT
 * sample; there is no sample (srtt 0) when the SYN-ACK was retransmitted.
 */
static __always_inline void on_accepted(const struct sock *sk, struct tcp_sock *tp)
{
	__u32 srtt = tp->srtt_us >> 3;
	struct sock_state st = {};
	struct conn_hists *h;

	st.role = ROLE_SERVER;
	st.est_ns = tp->tcp_mstamp * 1000; /* stamped as the final ACK came in */
	/* Traffic counts from here; retransmits from zero, the SYN-ACK's too. */
	st.acked = tp->bytes_acked;
	st.received = tp->bytes_received;
	st.report_us = tp->tcp_mstamp + REPORT_US;
	flow_key_init(&st.key, sk, ROLE_SERVER);
	if (srtt) {
		h = hists_of(&st.key);
		if (h) {
			kt_hist_add_ns(&h->open, (__u64)srtt * 1000);
			kt_hist_add_ns(&h->rtt, (__u64)srtt * 1000);
		}
	}
	put_established(sk, &st);
}

/* An active open: connect latency, its first RTT sample, and SYN retransmits. */
static __always_inline void on_connected(struct sock_state *st, const struct sock *sk, struct tcp_sock *tp)
{
	__u64 now = tp->tcp_mstamp * 1000; /* stamped as the SYN-ACK came in */
	const struct flow_key *k = key_of(st, sk);
	struct conn_hists *h = hists_of(k);
	struct flow_val *v = flow_of(k);

	if (h) {
		if (st->syn_ns)
			kt_hist_add_ns(&h->open, elapsed_ns(st->syn_ns, now));
		rtt_add(h, tp->srtt_us >> 3);
	}
	if (v) {
		/* Every retransmit so far was of the SYN. */
		if (tp->total_retrans)
			__sync_fetch_and_add(&v->syn_retrans, tp->total_retrans);
		if (!st->established)
			__sync_fetch_and_add(&v->active, 1);
		st->established = 1;
	}
	/* Traffic counts from here: bytes_acked already holds 1 for the SYN. */
	st->acked = tp->bytes_acked;
	st->received = tp->bytes_received;
	st->est_ns = now;
	st->report_us = tp->tcp_mstamp + REPORT_US;
}

/*
 * Our FIN went out iff the socket passed FIN_WAIT1 or LAST_ACK, and every
 * state after those is one of these: read from the state left at close, so
 * the closing steps between them need no socket state at all.
 */
static __always_inline bool fin_sent_before(int oldstate)
{
	return oldstate == KT_TCP_FIN_WAIT1 || oldstate == KT_TCP_FIN_WAIT2 || oldstate == KT_TCP_CLOSING ||
	       oldstate == KT_TCP_TIME_WAIT || oldstate == KT_TCP_LAST_ACK;
}

/*
 * Everything the connection still owes its flow (the active gauge, the rest
 * of its traffic, a failed connect, a received reset) goes in with one
 * lookup, its lifetime with one more. At close the counters include the
 * FIN's sequence number when our FIN was acked (bytes_acked) or the peer's
 * FIN arrived (bytes_received); data excludes them, so they are taken off.
 */
static __always_inline void on_close(struct sock_state *st, const struct sock *sk,
				     struct tcp_sock *tp, int oldstate)
{
	const struct flow_key *k;
	struct conn_hists *h;
	struct flow_val *v;

	if (oldstate == KT_TCP_LISTEN)
		return; /* a listener owes no flow anything */
	k = key_of(st, sk);
	v = flow_of(k);
	if (v) {
		__u64 acked = tp->bytes_acked;
		__u64 received = tp->bytes_received;

		if (fin_sent_before(oldstate) && acked > 0 && tp->snd_una == tp->write_seq)
			acked--;
		if (received > 0 && (sk->__sk_common.skc_flags & (1UL << KT_SOCK_DONE)))
			received--;
		if (oldstate == KT_TCP_SYN_SENT) {
			__sync_fetch_and_add(&v->failed[failure_of(sk->sk_err) % FAIL_KINDS], 1);
			if (tp->total_retrans)
				__sync_fetch_and_add(&v->syn_retrans, tp->total_retrans);
		}
		add_traffic(st, v, acked, received, tp->total_retrans);
		if (st->established)
			__sync_fetch_and_add(&v->active, (__u64)-1);
		if (st->resets_received)
			__sync_fetch_and_add(&v->resets_received, st->resets_received);
	}
	/* A clock read, not tcp_mstamp: a close() that aborts (unread data,
	 * SO_LINGER 0) reaches CLOSE with the stamp of the last segment. */
	if (oldstate != KT_TCP_SYN_SENT && st->est_ns) {
		h = hists_of(k);
		if (h)
			kt_hist_add_ns(&h->lifetime, elapsed_ns(st->est_ns, bpf_ktime_get_ns()));
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct sock_state *st;
	struct tcp_sock *tp;

	if (sk->sk_protocol != KT_IPPROTO_TCP)
		return 0;

	switch (newstate) {
	case KT_TCP_SYN_SENT:
		on_syn_sent(sk);
		return 0;
	case KT_TCP_LISTEN:
		on_listen(sk);
		return 0;
	case KT_TCP_ESTABLISHED:
	case KT_TCP_CLOSE:
		break;
	default:
		/* SYN_RECV: a passive open's state is made at ESTABLISHED. The
		 * closing steps (ESTABLISHED -> FIN_WAIT1 or CLOSE_WAIT, FIN_WAIT1
		 * -> FIN_WAIT2, ...) owe nothing: a connection counts as open until
		 * CLOSE. So 3 of a connection's 5 state changes return here. */
		return 0;
	}
	tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return 0;
	if (newstate == KT_TCP_ESTABLISHED && oldstate == KT_TCP_SYN_RECV) {
		on_accepted(sk, tp);
		return 0;
	}
	st = state_of(sk);
	if (!st)
		return 0; /* a socket from before kerntap that never sent or received since, or a full table */
	if (newstate == KT_TCP_ESTABLISHED) {
		on_connected(st, sk, tp);
		return 0;
	}
	on_close(st, sk, tp, oldstate);
	state_free(sk);
	return 0;
}

/* First sight of a connection opened before kerntap (or whose state found the table full): counted from now. */
static __always_inline void on_first_sight(const struct sock *sk, struct tcp_sock *tp)
{
	struct sock_state st = {};
	struct conn_hists *h;

	st.role = guess_role(sk);
	st.acked = tp->bytes_acked;
	st.received = tp->bytes_received;
	st.retrans = tp->total_retrans;
	st.report_us = tp->tcp_mstamp + REPORT_US;
	flow_key_init(&st.key, sk, st.role);
	if (!put_established(sk, &st))
		return;
	h = hists_of(&st.key);
	if (h)
		rtt_add(h, tp->srtt_us >> 3);
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcp_probe, struct sock *sk, struct sk_buff *skb)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct sock_state *st;
	struct conn_hists *h;
	__u64 stamp;

	if (!tp)
		return 0;
	/* Young: no state lookup at all (see YOUNG_SEGS). */
	if (tp->segs_in <= YOUNG_SEGS && tp->bytes_acked + tp->bytes_received < REPORT_OWED_BYTES)
		return 0;
	st = state_of(sk);
	if (!st) {
		on_first_sight(sk, tp);
		return 0;
	}
	/* tcp_mstamp is the socket's own µs clock (refreshed at every segment
	 * sent or received), so the cadence needs no clock call. */
	stamp = tp->tcp_mstamp;
	if (stamp >= st->report_us) {
		st->report_us = stamp + REPORT_US;
		h = hists_of(key_of(st, sk));
		if (h)
			rtt_add(h, tp->srtt_us >> 3);
	} else if (tp->bytes_acked - st->acked + tp->bytes_received - st->received < REPORT_OWED_BYTES) {
		return 0;
	}
	report_traffic(st, sk, tp);
	return 0;
}

static __always_inline void count_reset(const struct sock *sk, bool sent)
{
	struct flow_key k;
	struct sock_state *st;
	struct flow_val *v;

	/* No socket, or a request or time-wait socket (smaller structs with no
	 * owner cgroup): counted under cgroup "~none". */
	if (!sk || !bpf_skc_to_tcp_sock((void *)sk)) {
		__builtin_memset(&k, 0, sizeof(k));
		v = flow_of(&k);
	} else {
		st = state_of(sk);
		if (st && !sent && sk->__sk_common.skc_state != KT_TCP_LISTEN) {
			/* tcp_reset() closes the socket next: counted with the close. */
			if (st->resets_received < 255)
				st->resets_received++;
			return;
		}
		if (st) {
			v = flow_of(key_of(st, sk));
		} else {
			flow_key_init(&k, sk, guess_role(sk));
			v = flow_of(&k);
		}
	}
	if (!v)
		return;
	/* A reset can be sent from process context (close with unread data). */
	__sync_fetch_and_add(sent ? &v->resets_sent : &v->resets_received, 1);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	count_reset(sk, true);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, struct sock *sk)
{
	count_reset(sk, false);
	return 0;
}

/* A listener retransmits a SYN-ACK for a connection not yet accepted (cold path). */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tcp_retransmit_synack, const struct sock *sk, const struct request_sock *req)
{
	struct flow_key k;
	struct flow_val *v;

	flow_key_fill(&k, sk, &req->__req_common, ROLE_SERVER);
	v = flow_of(&k);
	if (v)
		__sync_fetch_and_add(&v->syn_retrans, 1);
	return 0;
}

/* One record per listening socket (and per connection in per-connection mode). */
struct socket_record {
	__u64 cgroup_id;
	__u64 bytes_acked;
	__u64 bytes_received;
	__u8 local[16];
	__u8 peer[16];
	__u16 local_port;
	__u16 peer_port;
	__u8 state;
	__u8 role;
	__u8 pad[2];
	char comm[16];
};

/*
 * Never read: it names the types userspace decodes that no map names (the
 * iterator's records, the enums), so that they are in the object's BTF,
 * which src/bpf/layout.ts checks the collector against at load.
 */
const volatile struct {
	struct socket_record socket_record;
	enum role role;
	enum failure failure;
	enum drop_slot drop_slot;
} kt_layouts;

/*
 * Jiffies at the start of the iterator's walk in progress, and of the last
 * walk that ran to its end: a connection that has sent and received nothing
 * since then owes nothing that walk did not report, so it is passed over
 * without a state lookup (most of what a walk of many idle
 * connections cost). 0: no walk has ended yet, look at every socket. Their
 * own section (map): only the walk writes them, and kerntap runs one at a time.
 */
__u64 walk_started SEC(".data.walk");
__u64 walked_since SEC(".data.walk");

/*
 * The connection's last segment sent (data or retransmit) or received (ACK or
 * data), in jiffies: every change to the counters report_traffic reads moves
 * one of these in the same locked section.
 */
static __always_inline bool quiet_since(const struct tcp_sock *tp, __u32 since)
{
	return (__s32)(tp->rcv_tstamp - since) < 0 && (__s32)(tp->lsndtime - since) < 0 &&
	       (__s32)(tp->inet_conn.icsk_ack.lrcvtime - since) < 0;
}

SEC("iter/tcp")
int tcp_sockets(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct socket_record rec;
	struct sock_state *st;
	struct tcp_sock *tp;
	__u8 state;

	if (!skc) {
		walked_since = walk_started; /* called without a socket once, when the walk has ended */
		return 0;
	}
	if (ctx->meta->seq_num == 0)
		walk_started = bpf_jiffies64();
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* request and time-wait sockets */
	state = skc->skc_state;
	if (state == KT_TCP_ESTABLISHED && !per_connection && walked_since &&
	    quiet_since(tp, (__u32)walked_since))
		return 0;
	st = state_of((struct sock *)tp);
	/* tcp_probe fires before the segment is processed, so the last segment
	 * of a connection that went quiet is not counted yet: count it now.
	 * From 5.15 on the iterator holds the socket lock, as tcp_probe and
	 * state changes do; before, it would race them, so it leaves the
	 * counting to them (exact at the next segment or at close). */
	if (st && st->role && state == KT_TCP_ESTABLISHED && bpf_core_type_exists(struct bpf_tcp_iter_state))
		report_traffic(st, (struct sock *)tp, tp);
	if (state != KT_TCP_LISTEN && !(per_connection && state == KT_TCP_ESTABLISHED))
		return 0;

	__builtin_memset(&rec, 0, sizeof(rec));
	rec.cgroup_id = kt_sock_cgroup_id((struct sock *)tp);
	rec.state = state;
	rec.local_port = kt_local_port(skc);
	kt_local_addr(skc, rec.local);
	if (state == KT_TCP_ESTABLISHED) {
		rec.bytes_acked = tp->bytes_acked;
		rec.bytes_received = tp->bytes_received;
		rec.peer_port = kt_peer_port(skc);
		kt_peer_addr(skc, rec.peer);
	}
	if (st) {
		rec.role = st->role;
		__builtin_memcpy(rec.comm, st->comm, sizeof(rec.comm));
	}
	bpf_seq_write(seq, &rec, sizeof(rec));
	return 0;
}
