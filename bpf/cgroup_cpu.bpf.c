// SPDX-License-Identifier: GPL-2.0
/*
 * cgroup_cpu: CPU time per cgroup v2, from sched_switch.
 *
 * At every switch the slice that just ended is added to prev's cgroup, and
 * the next slice starts. The slice is measured with the scheduler's own
 * clock (task->se.sum_exec_runtime, which is what cpu.stat adds up), not the
 * wall clock: on a VM, wall time includes steal time that cpu.stat leaves
 * out. The task running on each CPU, and its run time when it switched
 * in, are published in `running`, so userspace can add what it has run
 * since (from /proc/<tid>/schedstat, the same clock) at read time: a lone
 * busy task may not switch for seconds. No clock is read here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "kt_maps.h"
#include "kt_cgroup.h"

char LICENSE[] SEC("license") = "GPL";

/* Reserved key that collects time once cpu_ns is full (see kt_maps.h). */
#define CGROUP_OVERFLOW_KEY (~0ULL)
enum drop_slot { DROP_CPU_NS = 0 };

struct running_slice {
	__u64 pid;       /* kernel task id (0: idle or unknown), so userspace can find it */
	__u64 exec_ns;   /* the task's se.sum_exec_runtime at switch-in */
};

/* Never read: puts the enums userspace decodes in the object's BTF (see src/bpf/layout.ts). */
const volatile struct {
	enum drop_slot drop_slot;
} kt_layouts;

/* One slot per possible CPU; userspace sets max_entries before load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct running_slice);
} running SEC(".maps");

/*
 * Nanoseconds of CPU per cgroup id, shared by all CPUs (see kt_maps.h).
 * Userspace sets max_entries, and clears BPF_F_NO_PREALLOC on kernels before
 * 6.1: allocating here, under the scheduler's run-queue lock, is safe only
 * with the BPF memory allocator that 6.1 brought.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} cpu_ns SEC(".maps");

static const __u64 zero;
static const __u64 overflow_key = CGROUP_OVERFLOW_KEY;

/* SCHED_NORMAL, SCHED_BATCH, SCHED_IDLE: the fair class. */
static __always_inline bool is_fair_policy(unsigned int policy)
{
	return policy == 0 || policy == 3 || policy == 5;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(cgroup_cpu_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct running_slice *slot = bpf_map_lookup_elem(&running, &cpu);
	__u64 *total;
	__u64 cgid, ran, seen_start, fair_start;
	pid_t prev_pid;

	if (!slot)
		return 0;

	/* Idle (pid 0) is no cgroup's time. prev's cgroup is read now, not at
	 * switch-in, so a task moved between cgroups while running is charged
	 * to the cgroup it is in now; cpu.stat splits that one slice at the
	 * move (no switch happens there), so the slice's part before the move
	 * lands in the new cgroup here. Fields are read directly
	 * through the BTF pointers (no probe-read helper calls): it's the
	 * hottest hook there is. */
	prev_pid = prev->pid;
	if (prev_pid == 0)
		goto next;
	/* A switch-in we did not see (the first one after attach): the fair
	 * class keeps its own start of the slice; the real-time and deadline
	 * classes do not, so theirs is not counted. Both starts are loaded:
	 * one load through either pointer is refused by the verifier. */
	seen_start = slot->exec_ns;
	fair_start = prev->se.prev_sum_exec_runtime;
	if (slot->pid != prev_pid && !is_fair_policy(prev->policy))
		goto next;
	ran = prev->se.sum_exec_runtime - (slot->pid == prev_pid ? seen_start : fair_start);
	cgid = kt_task_cgroup_id(prev);
	total = kt_lookup_or_init(&cpu_ns, &cgid, &zero, &overflow_key, DROP_CPU_NS);
	if (total)
		__sync_fetch_and_add(total, ran);
next:
	slot->pid = next->pid;
	slot->exec_ns = next->se.sum_exec_runtime;
	return 0;
}
