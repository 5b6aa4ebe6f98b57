/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A hand-kept subset of the kernel's types, for CO-RE.
 *
 * Why not a full `bpftool btf dump` header: that ties the source to one
 * kernel build and weighs ~3 MB. With preserve_access_index, libbpf relocates
 * every field access against the running kernel's BTF by name, so these
 * structs only need the fields kerntap reads, with compatible types; their
 * layout here is irrelevant. The build is therefore the same on any host.
 */
#ifndef __KERNTAP_VMLINUX_H__
#define __KERNTAP_VMLINUX_H__

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
typedef int pid_t;
typedef unsigned int uid_t;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_STACK_TRACE = 7,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LRU_PERCPU_HASH = 10,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_SK_STORAGE = 24,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
	BPF_F_LOCK = 4,
};

enum {
	BPF_F_NO_PREALLOC = 1,
	BPF_F_CLONE = 512,
};

enum {
	BPF_SK_STORAGE_GET_F_CREATE = 1,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct kernfs_node {
	u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

struct sched_entity {
	u64 sum_exec_runtime;
	u64 prev_sum_exec_runtime;
};

struct task_struct {
	struct sched_entity se;
	unsigned int policy;
	pid_t pid;
	pid_t tgid;
	char comm[16];
	struct css_set *cgroups;
	struct files_struct *files;
};

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	unsigned long skc_flags; /* sk->sk_flags: SOCK_DONE etc. */
};

struct sock_cgroup_data {
	struct cgroup *cgroup;
};

struct sock {
	struct sock_common __sk_common;
	struct sock_cgroup_data sk_cgrp_data;
	int sk_err;
	u16 sk_protocol;
	u16 sk_type;
	u8 sk_shutdown;
};

struct inet_connection_sock_ack {
	u32 lrcvtime; /* jiffies of the last data received */
};

struct inet_connection_sock {
	struct inet_connection_sock_ack icsk_ack;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	u32 rcv_tstamp; /* jiffies of the last ACK received */
	u32 lsndtime;   /* jiffies of the last data sent, retransmits too */
	u32 srtt_us;
	u64 tcp_mstamp; /* most recent packet received or sent, µs (4.13+) */
	u64 bytes_acked;
	u64 bytes_received;
	u32 total_retrans;
	u32 segs_in;    /* segments received, the handshake's included (4.6+) */
	u32 snd_una;
	u32 write_seq;
	u32 rcv_nxt;
	u32 copied_seq;
};

struct sk_buff {
	unsigned int len;
};

/* A connection in SYN_RECV before it has a full socket. */
struct request_sock {
	struct sock_common __req_common;
};

/* Only looked up by name: it exists where iter/tcp takes the socket lock (5.15+). */
struct bpf_tcp_iter_state {
	unsigned int cur_sk;
};

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	u64 session_id;
	u64 seq_num;
};

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	uid_t uid;
};

/* Classic tracepoint contexts of the syscall events (sys_enter_* / sys_exit_*). */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

/* The fd table, walked with probe reads from bpf_get_current_task() (any 5.x). */
struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
};

struct file {
	struct inode *f_inode;
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct socket {
	short type;
	struct sock *sk;
};

#pragma clang attribute pop

#endif /* __KERNTAP_VMLINUX_H__ */
