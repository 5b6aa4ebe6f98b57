// SPDX-License-Identifier: GPL-2.0
/*
 * cgroup_cpu: CPU time per cgroup v2, from sched_switch.
 *
 * At every switch the slice that just ended is added to prev's cgroup, and
 * the next slice starts. The slice is measured with the scheduler's own
 * clock (task->se.sum_exec_runtime, which is what cpu.stat adds up), not the
 * wall clock: on a VM, wall time includes steal time that cpu.stat leaves
 * out. The slice still running on each CPU is published in `running`, so
 * userspace can add `now - start` at read time: a lone busy task may not
 * switch for seconds.
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
#define DROP_CPU_NS 0

struct running_slice {
	__u64 start_ns;  /* 0: unknown start, not accounted */
	__u64 pid;       /* kernel task id (0: idle), so userspace can find its cgroup */
	__u64 exec_ns;   /* the task's se.sum_exec_runtime at switch-in */
};

/* One slot per possible CPU; userspace sets max_entries before load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct running_slice);
} running SEC(".maps");

/* Nanoseconds of CPU per cgroup id. Userspace sets max_entries. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} cpu_ns SEC(".maps");

static const __u64 zero;
static const __u64 overflow_key = CGROUP_OVERFLOW_KEY;

SEC("tp_btf/sched_switch")
int BPF_PROG(cgroup_cpu_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct running_slice *slot = bpf_map_lookup_elem(&running, &cpu);
	__u64 now = bpf_ktime_get_ns();
	__u64 *total;
	__u64 cgid, ran;
	pid_t prev_pid;

	if (!slot)
		return 0;

	/* Idle (pid 0) is no cgroup's time. prev's cgroup is read now, not at
	 * switch-in, so a task moved between cgroups while running is charged
	 * where the kernel's own cpu.stat charges it. Fields are read directly
	 * through the BTF pointers (no probe-read helper calls): it's the
	 * hottest hook there is. */
	prev_pid = prev->pid;
	if (slot->start_ns && prev_pid != 0) {
		ran = now - slot->start_ns;
		if (slot->pid == prev_pid)
			ran = prev->se.sum_exec_runtime - slot->exec_ns;
		cgid = kt_task_cgroup_id(prev);
		total = kt_lookup_or_init(&cpu_ns, &cgid, &zero, &overflow_key,
					  DROP_CPU_NS);
		if (total)
			*total += ran;
	}

	slot->start_ns = now;
	slot->pid = next->pid;
	slot->exec_ns = next->se.sum_exec_runtime;
	return 0;
}
