/* SPDX-License-Identifier: GPL-2.0 */
/* Cgroup v2 ids: the kernfs id, which is the inode of the cgroup's directory. */
#ifndef __KT_CGROUP_H__
#define __KT_CGROUP_H__

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * Both read through BTF pointers (tp_btf, iterators): direct loads, relocated
 * by CO-RE, with no helper call; a NULL on the way reads as 0.
 */
static __always_inline __u64 kt_task_cgroup_id(struct task_struct *task)
{
	return task->cgroups->dfl_cgrp->kn->id;
}

/* The cgroup that owns a socket (the creator's cgroup v2), 0 if none. */
static __always_inline __u64 kt_sock_cgroup_id(const struct sock *sk)
{
	return sk->sk_cgrp_data.cgroup->kn->id;
}

#endif /* __KT_CGROUP_H__ */
