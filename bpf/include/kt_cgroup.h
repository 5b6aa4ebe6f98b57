/* SPDX-License-Identifier: GPL-2.0 */
/* Cgroup v2 ids: the kernfs id, which is the inode of the cgroup's directory. */
#ifndef __KT_CGROUP_H__
#define __KT_CGROUP_H__

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/* cgroup v2 root: kernfs id 1. */
#define KT_ROOT_CGROUP_ID 1

/*
 * Read through BTF pointers (tp_btf, iterators): direct loads, relocated
 * by CO-RE, with no helper call; a NULL on the way reads as 0.
 */
static __always_inline __u64 kt_task_cgroup_id(struct task_struct *task)
{
	return task->cgroups->dfl_cgrp->kn->id;
}

/*
 * Before 5.15, sock_cgroup_data was a u64 that holds the cgroup pointer, or
 * net_cls/net_prio data with the low bit set (the socket then counts as the
 * root's, as sock_cgroup_ptr() says).
 */
struct sock_cgroup_data___pre515 {
	union {
		__u64 val;
	};
} __attribute__((preserve_access_index));

/* The cgroup that owns a socket (the creator's cgroup v2), 0 if none. */
static __always_inline __u64 kt_sock_cgroup_id(const struct sock *sk)
{
	struct sock_cgroup_data___pre515 *old;
	struct cgroup *cgrp;
	__u64 val;

	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return sk->sk_cgrp_data.cgroup->kn->id;
	old = (void *)&sk->sk_cgrp_data;
	val = old->val;
	if (!val || (val & 1))
		return KT_ROOT_CGROUP_ID;
	cgrp = (struct cgroup *)val; /* a plain number to the verifier: read with a helper */
	return BPF_CORE_READ(cgrp, kn, id);
}

#endif /* __KT_CGROUP_H__ */
